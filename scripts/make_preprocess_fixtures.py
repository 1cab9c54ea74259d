#!/usr/bin/env python3
"""Generate the CLIP preprocessing fixtures for src/vision/preprocess.rs.

The Rust port of OpenAI CLIP's image preprocessing must agree with what Python
computes, byte for byte, so this script records Python's answer for a handful
of small synthetic images:

* ``<name>.png``: the input, generated with numpy from a fixed seed (smooth
  gradients, hard-edged shapes that drive the bicubic overshoot into clipping,
  and a patch of noise), saved losslessly.
* ``<name>_crop224.png``: the uint8 result of resizing the shortest edge to 224
  with ``PIL.Image.resize(..., Image.BICUBIC)`` as Pillow 13 does it, and
  centre-cropping 224 x 224, exactly as Hugging Face's CLIPImageProcessor does
  before it rescales.
* ``<name>_crop224_pillow12.png``: only where it differs, the same as Pillow 12
  and earlier compute it. Pillow resamples in two passes, rounding to 8 bits in
  between; up to 12.x it always ran the horizontal pass first, while 13.0 runs
  the vertical pass first when the height shrinks by more than twice as many
  pixels as the width (here: the tall image). Each order is reproduced with
  two single-axis ``resize`` calls (a single-axis resize is exactly one pass),
  and whichever order the installed Pillow uses is asserted to equal its own
  two-axis ``resize``, so the files are the same whichever Pillow runs this.
* ``cases.json``: for every image its input size, the resized size, the crop
  box within the resized image, the pass order, and a few normalised values
  (per-channel means and samples) of the Pillow 13 crop, computed with numpy
  in float32 as transformers does.

Only Pillow and numpy are needed (no torch). If ``transformers`` is importable,
the script also checks that its PIL-backed CLIP image processor (OpenAI
defaults) yields the same ``pixel_values`` as this reference to 1e-6, and says
whether that check ran. Note that in transformers 5 the plain
``CLIPImageProcessor`` is backed by torchvision when that is installed, whose
resize is not Pillow's and need not agree bit for bit; ``CLIPImageProcessorPil``
is the Pillow-backed one, so it is preferred here.

Run from anywhere (output goes next to this script's repository by default):

    python3 scripts/make_preprocess_fixtures.py [--out DIR]

The pixels are deterministic (fixed seed); cases.json has sorted keys and
records the Pillow and numpy versions used.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

SIZE = 224  # shortest edge
CROP = 224
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
RESCALE = 1 / 255
PILLOW_13 = int(PIL.__version__.split(".")[0]) >= 13

# (name, width, height): landscape, portrait, already the right size, an
# upscale from below the crop size, a very wide image, and a tall one that
# Pillow 13 resamples vertically first.
CASES = [
    ("gradient_640x480", 640, 480),
    ("portrait_300x500", 300, 500),
    ("exact_224x224", 224, 224),
    ("small_97x61", 97, 61),
    ("wide_1000x333", 1000, 333),
    ("tall_260x700", 260, 700),
]


def make_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A deterministic RGB test pattern that still compresses well as PNG."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    img = np.stack(
        [
            255 * u,
            255 * v,
            127.5 + 127.5 * np.sin(2 * math.pi * (u * 3 + v * 2)),
        ],
        axis=-1,
    )
    # Hard black/white stripes: the bicubic kernel's negative lobes overshoot
    # next to them, which exercises clipping to 0 and 255.
    stripe_w = max(width // 40, 1)
    band = (y > height * 0.15) & (y < height * 0.35)
    img[band & ((x // stripe_w) % 2 == 0)] = 255
    img[band & ((x // stripe_w) % 2 == 1)] = 0
    # A one-pixel checkerboard block (the highest frequency there is).
    cb = (y > height * 0.6) & (y < height * 0.8) & (x > width * 0.1) & (x < width * 0.3)
    img[cb & ((x + y) % 2 == 0)] = [250, 10, 40]
    img[cb & ((x + y) % 2 == 1)] = [5, 240, 200]
    # A filled disc with a saturated colour.
    cx, cy, r = width * 0.7, height * 0.65, min(width, height) * 0.15
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = [255, 255, 0]
    # A patch of uniform noise (small, so the PNGs stay small).
    ph, pw = max(height // 4, 1), max(width // 4, 1)
    py, px = height // 2 - ph // 2, width // 2 - pw // 2
    img[py : py + ph, px : px + pw] = rng.integers(0, 256, size=(ph, pw, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def shortest_edge_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) as transformers' get_resize_output_image_size computes it
    with default_to_square=False: the short side becomes `size`, the long side
    int(size * long / short)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def center_crop_box(width: int, height: int, crop_w: int, crop_h: int) -> list[int]:
    """[left, top, right, bottom] as transformers' center_crop picks them (floor
    division; negative offsets mean zero padding)."""
    top = (height - crop_h) // 2
    left = (width - crop_w) // 2
    return [left, top, left + crop_w, top + crop_h]


def pillow13_horizontal_first(width: int, height: int, out_w: int, out_h: int) -> bool:
    """Pillow 13's choice of pass order (Resample.c, ImagingResampleInner)."""
    dh, dw = height - out_h, width - out_w
    return not (dh > 0 and dh > 2 * dw)


def resize_in_order(src: Image.Image, size: tuple[int, int], horizontal_first: bool) -> Image.Image:
    """Pillow's bicubic resize with the pass order forced: each single-axis
    resize is one pass, and a pass that keeps an axis's size is skipped."""
    (w, h), (ow, oh) = src.size, size
    if horizontal_first:
        return src.resize((ow, h), Image.BICUBIC).resize((ow, oh), Image.BICUBIC)
    return src.resize((w, oh), Image.BICUBIC).resize((ow, oh), Image.BICUBIC)


def normalise(crop: np.ndarray) -> np.ndarray:
    """HWC uint8 -> CHW float32 exactly as transformers rescales (float64 multiply,
    cast to float32) and normalises (float32)."""
    chw = crop.transpose(2, 0, 1)
    rescaled = (chw.astype(np.float64) * RESCALE).astype(np.float32)
    return (rescaled - MEAN[:, None, None]) / STD[:, None, None]


def transformers_processor():
    """The Pillow-backed CLIP processor with OpenAI defaults and its name, or
    (None, reason) when transformers cannot provide one."""
    try:
        import transformers

        cls = getattr(transformers, "CLIPImageProcessorPil", None)
        if cls is None:  # transformers 4.x: CLIPImageProcessor is the PIL/numpy one
            cls = transformers.CLIPImageProcessor
        return cls(), f"transformers {transformers.__version__} {cls.__name__}"
    except Exception as err:  # not installed, or too old/new to construct
        return None, f"{type(err).__name__}: {err}"


def main() -> int:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=repo / "tests" / "fixtures" / "preprocess")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(20240611)
    processor, processor_name = transformers_processor()
    cases = []
    for name, width, height in CASES:
        pixels = make_image(rng, width, height)
        src = Image.fromarray(pixels, "RGB")
        src.save(out / f"{name}.png", optimize=True)

        rw, rh = shortest_edge_size(width, height, SIZE)
        h_first = pillow13_horizontal_first(width, height, rw, rh)
        current = np.asarray(resize_in_order(src, (rw, rh), h_first))
        legacy = np.asarray(resize_in_order(src, (rw, rh), True))
        native = np.asarray(src.resize((rw, rh), Image.BICUBIC))
        assert np.array_equal(native, current if PILLOW_13 else legacy), name

        left, top, right, bottom = center_crop_box(rw, rh, CROP, CROP)
        # All cases here have the resized image at least as large as the crop;
        # padding is covered by the Rust unit tests.
        assert left >= 0 and top >= 0 and right <= rw and bottom <= rh
        crop = current[top:bottom, left:right]
        Image.fromarray(crop, "RGB").save(out / f"{name}_crop224.png", optimize=True)
        legacy_crop = legacy[top:bottom, left:right]
        has_legacy = not np.array_equal(crop, legacy_crop)
        if has_legacy:
            Image.fromarray(legacy_crop, "RGB").save(
                out / f"{name}_crop224_pillow12.png", optimize=True
            )

        values = normalise(crop)
        if processor is not None:
            theirs = processor(src, return_tensors="np")["pixel_values"][0]
            ours = values if PILLOW_13 else normalise(legacy_crop)
            assert theirs.shape == ours.shape, (name, theirs.shape)
            diff = float(np.abs(theirs.astype(np.float64) - ours).max())
            assert diff <= 1e-6, f"{name}: transformers differs by {diff}"

        samples = [[c, y, x] for c, y, x in [(0, 0, 0), (1, 111, 112), (2, 223, 223), (0, 57, 190)]]
        cases.append(
            {
                "name": name,
                "input": [width, height],
                "resized": [rw, rh],
                "crop_box": [left, top, right, bottom],
                "pillow13_horizontal_first": h_first,
                "pillow12_differs": has_legacy,
                "channel_means": [float(values[c].astype(np.float64).mean()) for c in range(3)],
                "samples": [[c, y, x, float(values[c, y, x])] for c, y, x in samples],
            }
        )

    doc = {
        "about": "CLIP preprocessing reference; regenerate with scripts/make_preprocess_fixtures.py",
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "size": SIZE,
        "crop": CROP,
        "transformers_checked": processor_name if processor is not None else None,
        "cases": cases,
    }
    (out / "cases.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(cases)} cases to {out} ({total} bytes)")
    if processor is None:
        print(f"transformers unavailable ({processor_name}): pixel_values NOT cross-checked")
    else:
        print(f"pixel_values cross-checked against {processor_name} (max diff <= 1e-6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
