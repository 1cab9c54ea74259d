#!/usr/bin/env python3
"""Generate the tiny random-weight DINOv2 fixture used by `src/vision/dinov2/` and
`src/anomaly/dinov2_patches.rs` tests.

Writes `tests/fixtures/tiny_dinov2/` (relative to the repository root, or the
folder given as the only argument):

* `config.json`, `model.safetensors` (`Dinov2Model.save_pretrained`) and
  `preprocessor_config.json` (transformers' PIL `BitImageProcessor`): 32 wide,
  3 layers, 2 heads, patch 14, pre-training size 56 (4 x 4 position
  embeddings), a shortest-edge resize to 48 and a 42-pixel centre crop, so the
  model always interpolates its position embeddings (4 x 4 -> 3 x 3, as
  dinov2-small's 37 x 37 -> 16 x 16 at 224 pixels); a layer-norm epsilon of
  1e-2, not DINOv2's 1e-6, so one that is not read from the config shows;
* `images/*.png`: generated images of different sizes and aspect ratios;
* `reference.json`: for each image, the processor's `pixel_values` and every
  `hidden_states` entry (embeddings and each layer, before the final layer
  norm) of the model run on them; the same for the image squeezed to 42 x 42
  without a crop (the anomaly map's input); and for one non-square random
  input (28 x 84 pixels: 2 x 6 patches), so the interpolation is checked in
  both directions. Floats are base64 of little-endian float32, bit exact.

Weights are random (fixed seed) and larger than transformers' initialisation,
layer scales included, so every part of a layer visibly moves the output.

Runs in the project's reference environment (`scripts/ref_venv.py`).
Usage: python3 scripts/make_tiny_dinov2.py [OUTPUT_DIR]
"""

import base64
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = 20261206
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    mlp_ratio=4,
    image_size=56,
    patch_size=14,
    # Not DINOv2's 1e-6: a loader that ignored the config's epsilon would fail.
    layer_norm_eps=1e-2,
    hidden_act="gelu",
)
RESIZE, CROP = 48, 42
IMAGES = {
    "landscape_80x60": (80, 60),
    "portrait_45x70": (45, 70),
    "small_30x20": (30, 20),
}
RAW_SIZE = (28, 84)  # height, width


def make_image(np, rng, width, height):
    """Gradients, a few flat rectangles (sharp edges) and pixel noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [
            255.0 * x / max(width - 1, 1),
            255.0 * y / max(height - 1, 1),
            127.5 + 127.5 * np.sin((x + 2.0 * y) / 6.0),
        ],
        axis=-1,
    )
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 4), rng.integers(0, height - 4)
        w, h = rng.integers(3, max(width // 3, 4)), rng.integers(3, max(height // 3, 4))
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
    img += rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def randomise(torch, np, model, generator):
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            if "norm" in name and name.endswith(".weight"):
                value = 1.0 + 0.2 * noise
            elif name.endswith("bias"):
                value = 0.1 * noise
            elif "lambda1" in name:
                value = 1.0 + 0.3 * noise
            elif p.dim() >= 2:
                value = noise / np.sqrt(int(np.prod(p.shape[1:])))
            else:
                value = 0.5 * noise
            p.copy_(value)


def b64_f32(np, a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def main():
    sys.path.insert(0, str(REPO / "scripts"))
    import ref_venv

    ref_venv.reexec()

    import numpy as np
    import torch
    from PIL import Image
    from transformers import Dinov2Config, Dinov2Model

    try:  # transformers >= 5: the PIL backend has its own name.
        from transformers import BitImageProcessorPil as PilProcessor
    except ImportError:
        from transformers import BitImageProcessor as PilProcessor

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "fixtures" / "tiny_dinov2"
    (out / "images").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model = Dinov2Model(Dinov2Config(**CONFIG)).eval()
    randomise(torch, np, model, torch.Generator().manual_seed(SEED))
    model.save_pretrained(out, safe_serialization=True)
    processor = PilProcessor(
        size={"shortest_edge": RESIZE},
        crop_size={"height": CROP, "width": CROP},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    processor.save_pretrained(out)

    def run(pixels):
        with torch.no_grad():
            states = model(pixel_values=pixels, output_hidden_states=True).hidden_states
        return [b64_f32(np, s[0].numpy()) for s in states]

    mean = np.array(IMAGENET_MEAN, dtype=np.float32)
    std = np.array(IMAGENET_STD, dtype=np.float32)
    rng = np.random.default_rng(SEED)
    cases = []
    for name, (w, h) in IMAGES.items():
        image = Image.fromarray(make_image(np, rng, w, h), "RGB")
        file = f"{name}.png"
        image.save(out / "images" / file)
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        cases.append(
            dict(kind="processor", image=file, height=CROP, width=CROP,
                 pixel_values=b64_f32(np, pixels[0].numpy()), hidden_states=run(pixels))
        )
        # The map's input: the whole image squeezed, rescaled and normalised with
        # transformers' arithmetic (x * (1/255) in float64, then float32).
        squeezed = np.asarray(image.resize((CROP, CROP), Image.BICUBIC))
        scaled = (squeezed.astype(np.float64) * (1 / 255)).astype(np.float32)
        chw = ((scaled - mean) / std).transpose(2, 0, 1)
        pixels = torch.from_numpy(np.ascontiguousarray(chw))[None]
        cases.append(
            dict(kind="stretched", image=file, height=CROP, width=CROP,
                 pixel_values=b64_f32(np, chw), hidden_states=run(pixels))
        )
    h, w = RAW_SIZE
    raw = torch.randn((1, 3, h, w), generator=torch.Generator().manual_seed(SEED + 1))
    cases.append(
        dict(kind="raw", image=None, height=h, width=w,
             pixel_values=b64_f32(np, raw[0].numpy()), hidden_states=run(raw))
    )
    reference = dict(
        made_by="scripts/make_tiny_dinov2.py",
        transformers=__import__("transformers").__version__,
        torch=torch.__version__,
        layers=list(range(CONFIG["num_hidden_layers"] + 1)),
        cases=cases,
    )
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
