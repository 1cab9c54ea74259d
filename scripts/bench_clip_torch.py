#!/usr/bin/env python3
"""PyTorch side of the CLIP ViT-B/16 CPU throughput benchmark.

1. Builds a `CLIPVisionModelWithProjection` with the real ViT-B/16 shape
   (hidden 768, 12 layers, 12 heads, intermediate 3072, image 224, patch 16,
   projection 512) and RANDOM weights (fixed seed), and saves it with
   `save_pretrained(safe_serialization=True)` plus OpenAI's
   `preprocessor_config.json` into MODEL_DIR (about 350 MB: keep it out of the
   repository, e.g. in a temporary folder). An existing model there is reused.
2. Optionally (`--images DIR`) writes `bench_reference.json` next to it: PIL
   `CLIPImageProcessor` pixel values and L2-normalised embeddings for a few
   images, so the Rust side can check full-size conformance and the accuracy of
   reduced precision.
3. Times the forward pass (pixel values to image embeddings, no preprocessing)
   on CPU at each batch size under `torch.inference_mode()` with
   `torch.set_num_threads(N)` (default: all cores): warm-up, then the median of
   `--runs` runs. Prints one JSON object.

The Rust side is `echo_workbench::perf::clip::bench_clip` on the same
folder; compare images/s only between runs on the same machine and load.

Usage: python3 scripts/bench_clip_torch.py MODEL_DIR [--threads N] [--runs R]
       [--batch-sizes 1 8] [--images DIR]
"""

import argparse
import base64
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

try:  # transformers >= 5: the PIL backend has its own name.
    from transformers import CLIPImageProcessorPil as PilProcessor
except ImportError:
    from transformers import CLIPImageProcessor as PilProcessor

SEED = 16
VIT_B_16 = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=16,
    projection_dim=512,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)


def build_or_load(folder: Path) -> CLIPVisionModelWithProjection:
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return CLIPVisionModelWithProjection.from_pretrained(folder).eval()
    torch.manual_seed(SEED)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_B_16)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    PilProcessor().save_pretrained(folder)  # OpenAI's preprocessing
    return model


def write_reference(model, folder: Path, images: Path, limit: int) -> int:
    processor = PilProcessor()
    paths = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    paths = [p for p in paths if "mask" not in p.name][:limit]
    entries = []
    with torch.inference_mode():
        for path in paths:
            pixel_values = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")[
                "pixel_values"
            ].to(torch.float32)
            embedding = torch.nn.functional.normalize(
                model(pixel_values=pixel_values).image_embeds, dim=-1
            )[0]
            entries.append(
                dict(
                    image=path.name,
                    pixel_values_f32le_base64=base64.b64encode(
                        pixel_values[0].numpy().astype("<f4").tobytes()
                    ).decode("ascii"),
                    embedding=[float(v) for v in embedding.numpy()],
                )
            )
    (folder / "bench_reference.json").write_text(json.dumps(dict(images=entries)))
    return len(entries)


def time_forward(model, batch: int, runs: int, warmup: int) -> dict:
    gen = torch.Generator().manual_seed(batch)
    pixel_values = torch.randn((batch, 3, 224, 224), generator=gen)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(pixel_values=pixel_values).image_embeds
            if i >= warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return dict(
        batch=batch,
        runs=runs,
        median_s=median,
        min_s=min(times),
        images_per_s=batch / median,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--images", type=Path, help="write bench_reference.json from these")
    parser.add_argument("--reference-images", type=int, default=8)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = build_or_load(args.model_dir)
    out = dict(
        framework="pytorch",
        torch=torch.__version__,
        transformers=__import__("transformers").__version__,
        attention=getattr(model.config, "_attn_implementation", None),
        # The kernels PyTorch dispatches to on this CPU (e.g. AVX2, AVX512).
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(),
        model_dir=str(args.model_dir),
    )
    if args.images:
        out["reference_images"] = write_reference(
            model, args.model_dir, args.images, args.reference_images
        )
    out["results"] = [
        time_forward(model, b, args.runs, args.warmup) for b in args.batch_sizes
    ]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
