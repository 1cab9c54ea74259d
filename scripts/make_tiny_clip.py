#!/usr/bin/env python3
"""Generate the tiny random-weight CLIP fixtures used by the `src/vision/clip/` tests.

Writes, under `tests/fixtures/tiny_clip/` (relative to the repository root):

* `images/*.png` - small synthetic RGB test images (numpy, fixed seed), with
  landscape, portrait, square and smaller-than-the-model sizes so that the
  shorter-side resize (down and up) and the centre crop are all exercised;
* one folder per model configuration with `config.json`, `model.safetensors`
  (`save_pretrained(safe_serialization=True)`), `preprocessor_config.json`, and
  `reference.json` holding, for every image, the `pixel_values` produced by
  transformers' PIL `CLIPImageProcessor` and the L2-normalised image embedding.

Weights are random (fixed seed) but deliberately *larger* than transformers'
initialisation (std 0.02), so that every block (attention, MLP, layer norms,
position embeddings) visibly changes the output and a wrong implementation
cannot hide behind layer norms.

`pixel_values` are stored as base64 of little-endian float32 in CHW order to
keep the fixtures small and bit-exact; embeddings are plain JSON floats.

Usage: python3 scripts/make_tiny_clip.py [OUTPUT_DIR]
Needs: torch, transformers (>= 4.40; tested with 5.x), numpy, pillow, safetensors.
"""

import base64
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

try:  # transformers >= 5: the PIL backend has its own name.
    from transformers import CLIPImageProcessorPil as PilProcessor
except ImportError:  # transformers 4.x: the default processor is the PIL one.
    from transformers import CLIPImageProcessor as PilProcessor

SEED = 20240611
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

# Tiny text tower for the full CLIPModel fixtures: the embedder ignores it, but
# the default one (49408-token vocabulary) would make the files megabytes large.
TINY_TEXT = dict(
    vocab_size=99,
    hidden_size=16,
    intermediate_size=20,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=8,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
)

CONFIGS = {
    # (a) Full CLIPModel, patch 16. `projection_dim` is only given at top level, so
    # `vision_config.projection_dim` keeps transformers' stale default (512): the
    # loader must take the top-level value.
    "full_p16_s32": dict(
        kind="full",
        vision=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        ),
        projection_dim=16,
        size=32,
        crop=32,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        dtype=torch.float32,
    ),
    # (b) CLIPVisionModelWithProjection, patch 32, image 64.
    "vision_p32_s64": dict(
        kind="vision",
        vision=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=32,
            projection_dim=8,
        ),
        size=64,
        crop=64,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
        dtype=torch.float32,
    ),
    # (c) Full CLIPModel, 3 layers, 3 heads, patch 8 on a 40 px image (5x5
    # patches), a resize to 44 before a 40 px centre crop, non-OpenAI mean/std,
    # a non-default layer-norm epsilon, and weights stored as float16 (the
    # reference is computed in float32 from the same float16-rounded weights).
    "full_p8_s40_f16": dict(
        kind="full",
        vision=dict(
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=3,
            image_size=40,
            patch_size=8,
            layer_norm_eps=1e-6,
        ),
        projection_dim=12,
        size=44,
        crop=40,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        dtype=torch.float16,
    ),
}

IMAGES = {
    "landscape_80x60": (80, 60),
    "portrait_45x70": (45, 70),
    "square_64x64": (64, 64),
    "small_30x20": (30, 20),
}


def make_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
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


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Replaces every parameter by seeded values larger than the default init."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            is_norm = any(n in name for n in ("layer_norm", "layrnorm", "layernorm"))
            if is_norm and name.endswith(".weight"):
                value = 1.0 + 0.2 * noise
            elif name.endswith("bias"):
                value = 0.1 * noise
            elif p.dim() >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                value = noise / np.sqrt(fan_in)
            else:
                value = 0.5 * noise
            p.copy_(value.to(p.dtype))


def b64_f32(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def build(name: str, spec: dict, images: dict, out: Path) -> None:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
    if spec["kind"] == "full":
        config = CLIPConfig(
            text_config=dict(TINY_TEXT, projection_dim=spec["projection_dim"]),
            vision_config=spec["vision"],
            projection_dim=spec["projection_dim"],
        )
        model = CLIPModel(config)
    else:
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**spec["vision"]))
    model.eval()
    randomise(model, gen)
    # Round to the storage dtype, save, then compute the reference in float32 from
    # exactly the stored values.
    model = model.to(spec["dtype"])
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    model = model.to(torch.float32)

    processor = PilProcessor(
        size={"shortest_edge": spec["size"]},
        crop_size={"height": spec["crop"], "width": spec["crop"]},
        image_mean=spec["mean"],
        image_std=spec["std"],
    )
    processor.save_pretrained(folder)

    entries = []
    with torch.inference_mode():
        for image_name, array in images.items():
            pixel_values = processor(images=Image.fromarray(array), return_tensors="pt")[
                "pixel_values"
            ].to(torch.float32)
            if spec["kind"] == "full":
                feats = model.get_image_features(pixel_values=pixel_values)
                if not torch.is_tensor(feats):  # transformers >= 5 returns an output object
                    feats = feats.pooler_output
            else:
                feats = model(pixel_values=pixel_values).image_embeds
            feats = torch.nn.functional.normalize(feats, dim=-1)[0]
            entries.append(
                dict(
                    image=f"{image_name}.png",
                    pixel_values_shape=list(pixel_values.shape[1:]),
                    pixel_values_f32le_base64=b64_f32(pixel_values[0].numpy()),
                    embedding=[float(v) for v in feats.numpy().astype(np.float32)],
                )
            )
    reference = dict(
        generator="scripts/make_tiny_clip.py",
        transformers_version=__import__("transformers").__version__,
        torch_version=torch.__version__,
        images=entries,
    )
    (folder / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests" / "fixtures" / "tiny_clip"
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    images = {}
    for image_name, (w, h) in IMAGES.items():
        images[image_name] = make_image(rng, w, h)
        Image.fromarray(images[image_name]).save(out / "images" / f"{image_name}.png")
    for name, spec in CONFIGS.items():
        build(name, spec, images, out)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
