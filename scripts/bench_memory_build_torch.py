#!/usr/bin/env python3
"""Python side of the memory-build benchmark: Echo's pipeline end to end.

Echo builds its reference memory in Python: every normal training image is
opened with PIL, preprocessed by transformers' CLIPImageProcessor, embedded by
the CLIP vision model with projection (512-d), L2-normalised, and indexed in a
faiss `IndexHNSWFlat` with inner product (M=64, efConstruction 40,
efSearch 16). This script times exactly that over the first `--images` files
under IMAGES_DIR, found and ordered as `echo-workbench memory build` finds
them (`<dataset>/<category>/train/good/*`, else `<category>/train/good/*`,
sorted by relative path), so that `echo-workbench bench memory-build
--embedder clip:MODEL_DIR --images-dir IMAGES_DIR` (or the run that wrote them
with `--write-images`) builds from the same files.

Batching: `--batch` images per processor call and forward (default 1: one image
at a time, as a straightforward per-file loop does it; ours embeds 8 per forward).
The clock runs from the first file read to the index holding every vector;
loading the model is outside it, as on our side.

Usage: python3 scripts/bench_memory_build_torch.py IMAGES_DIR MODEL_DIR
       [--images N] [--batch B] [--threads T] [--m 64] [--ef-construction 40]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_venv  # noqa: E402

# src/memory/build.rs: MMAD's layout first, then a single MVTec-style dataset.
PATTERNS = ["*/*/train/good/*", "*/train/good/*"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def collect(root: Path) -> list:
    for pattern in PATTERNS:
        found = [p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if found:
            return sorted(found, key=lambda p: p.relative_to(root).as_posix())
    raise SystemExit(f"no images under {root} (looked for {' and '.join(PATTERNS)})")


def main() -> None:
    ref_venv.reexec()
    import faiss
    import numpy as np
    import torch
    import transformers
    from PIL import Image
    from transformers import CLIPVisionModelWithProjection

    try:  # transformers >= 5: the PIL backend has its own name.
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--images", type=int, default=12_288)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", type=int, default=16)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    paths = collect(args.images_dir)
    if len(paths) < args.images:
        raise SystemExit(f"{len(paths)} images under {args.images_dir}, {args.images} asked for")
    paths = paths[: args.images]
    processor = Processor.from_pretrained(args.model_dir)
    model = CLIPVisionModelWithProjection.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    dim = model.config.projection_dim

    spent = dict(decode_s=0.0, preprocess_s=0.0, embed_s=0.0, index_s=0.0)
    vectors = np.empty((len(paths), dim), dtype=np.float32)
    start = time.perf_counter()
    with torch.inference_mode():
        for at in range(0, len(paths), max(args.batch, 1)):
            chunk = paths[at : at + max(args.batch, 1)]
            t0 = time.perf_counter()
            images = [Image.open(p).convert("RGB") for p in chunk]
            t1 = time.perf_counter()
            pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
            t2 = time.perf_counter()
            embeds = model(pixel_values=pixel_values).image_embeds
            vectors[at : at + len(chunk)] = torch.nn.functional.normalize(embeds, dim=-1).numpy()
            t3 = time.perf_counter()
            spent["decode_s"] += t1 - t0
            spent["preprocess_s"] += t2 - t1
            spent["embed_s"] += t3 - t2
    t3 = time.perf_counter()
    index = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    index.hnsw.efSearch = args.ef_search
    index.add(vectors)
    spent["index_s"] = time.perf_counter() - t3
    seconds = time.perf_counter() - start

    print(
        json.dumps(
            dict(
                framework="pytorch+faiss",
                torch=torch.__version__,
                transformers=transformers.__version__,
                faiss=faiss.__version__,
                processor=type(processor).__name__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                threads=torch.get_num_threads(),
                batch=max(args.batch, 1),
                images=len(paths),
                index_vectors=int(index.ntotal),
                dim=dim,
                hnsw=dict(m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search),
                seconds=seconds,
                images_per_s=len(paths) / seconds,
                **spent,
            ),
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
