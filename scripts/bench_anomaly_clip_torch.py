#!/usr/bin/env python3
"""PyTorch side of the anomaly-map benchmark with CLIP patch tokens.

Does per query image what `echo-workbench bench anomaly --backbone clip:PATH`
(src/perf/anomaly.rs) does, with the same steps as src/anomaly/clip_patches.rs
and src/anomaly/map.rs:

1. preprocessing: the whole image squeezed to the model's input size (PIL
   bicubic, no centre crop), rescaled by 1/255 and normalised with the folder's
   `preprocessor_config.json` mean and std;
2. the CLIP vision tower run only as deep as the deepest layer asked for
   (default: half and three quarters of the depth, 6 and 9 of ViT-B/16's 12),
   with hidden states; each layer's patch tokens (class token dropped)
   L2-normalised, the layers concatenated per patch;
3. the map: each reference shifted as a whole by at most `radius` grid steps to
   where it lines up best with the query (smallest mean squared patch distance
   over the overlap; ties keep the smaller shift), then every query patch's
   distance to the reference patch at its place, the nearest over references;
4. bilinear upsampling to 256 x 256 (`align_corners=False`), a Gaussian of sigma
   4 truncated at four sigma with edges reflected as scipy's default mode, and
   the image score: the mean of the 128 highest values.

As on our side, the k references' patch features are computed once, before
timing (a run reuses a category's references); each timed pass is one query:
preprocessing from the decoded image, the forward, the map and the score. Our
side also names regions after the score; its `images_per_s_to_score_median` is
the figure to compare with this one's `images_per_s` (both from the median
pass), and its `images_per_s_to_score` with `images_per_s_mean`.

The images are the ones our side writes with `--write-images DIR`
(query.png, reference_1.png, ...), so both read identical pixels; the printed
`score` can be compared with ours.

Usage: python3 scripts/bench_anomaly_clip_torch.py MODEL_DIR --images DIR
       [--layers 6,9] [--threads N] [--runs R] [--warmup W]
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_venv  # noqa: E402

# Constants of src/anomaly/map.rs and src/anomaly/features.rs.
WORK = 256
DESCRIPTOR_GRID = 32
DEFAULT_RADIUS = 3
SIGMA = 4.0
TOP_PIXELS = 128


def default_layers(depth: int) -> list:
    layers = [max(depth // 2, 1), max(-(-3 * depth // 4), 1)]
    out = []
    for layer in layers:
        if layer <= max(depth, 1) and layer not in out:
            out.append(layer)
    return out


def radius_for_grid(side: int) -> int:
    # Rust's f64::round rounds halves away from zero; Python's round() does not.
    return max(int(math.floor(DEFAULT_RADIUS * side / DESCRIPTOR_GRID + 0.5)), 1)


def reflect_index(i: int, n: int) -> int:
    while True:
        if i < 0:
            i = -i - 1
        elif i >= n:
            i = 2 * n - i - 1
        else:
            return i


class AnomalyMap:
    def __init__(self, torch, model_dir: Path, layers):
        from transformers import CLIPVisionModel

        self.torch = torch
        self.F = torch.nn.functional
        model = CLIPVisionModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        depth = model.config.num_hidden_layers
        self.layers = layers or default_layers(depth)
        if max(self.layers) > depth or min(self.layers) < 1:
            raise SystemExit(f"layers {self.layers} asked for, the model has {depth}")
        # transformers < 5 wraps the tower in `vision_model`; 5 has it at the top.
        tower = getattr(model, "vision_model", model)
        # Blocks past the deepest one asked for are never run (ours stops there too).
        tower.encoder.layers = tower.encoder.layers[: max(self.layers)]
        self.vision = tower
        self.size = model.config.image_size
        self.side = self.size // model.config.patch_size
        pre = json.loads((model_dir / "preprocessor_config.json").read_text())
        self.mean = torch.tensor(pre["image_mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(pre["image_std"], dtype=torch.float32).view(3, 1, 1)
        self.radius = radius_for_grid(self.side)
        self._prepare_shifts()
        self._prepare_blur()

    def _prepare_shifts(self):
        torch, side = self.torch, self.side
        r = min(self.radius, side - 1)
        order = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
        order.sort(key=lambda s: abs(s[0]) + abs(s[1]))  # stable, as Rust's sort_by_key
        self.overlaps = []  # per shift: query and reference patch indices of the overlap
        self.in_place = []  # per shift: the reference patch at each query patch's place
        for dy, dx in order:
            rows = range(max(-dy, 0), min(side - dy, side))
            cols = range(max(-dx, 0), min(side - dx, side))
            q = [row * side + col for row in rows for col in cols]
            ref = [(row + dy) * side + (col + dx) for row in rows for col in cols]
            self.overlaps.append((torch.tensor(q), torch.tensor(ref)))
            clamp = lambda i, d: min(max(i + d, 0), side - 1)  # noqa: E731
            self.in_place.append(
                torch.tensor(
                    [clamp(row, dy) * side + clamp(col, dx) for row in range(side) for col in range(side)]
                )
            )
        self.patch_ids = torch.arange(side * side)

    def _prepare_blur(self):
        torch = self.torch
        radius = int(4.0 * SIGMA + 0.5)
        kernel = torch.tensor(
            [math.exp(-(i * i) / (2 * SIGMA * SIGMA)) for i in range(-radius, radius + 1)],
            dtype=torch.float32,
        )
        kernel = kernel / kernel.sum()
        self.kernel_x = kernel.view(1, 1, 1, -1)
        self.kernel_y = kernel.view(1, 1, -1, 1)
        self.pad = torch.tensor([reflect_index(i, WORK) for i in range(-radius, WORK + radius)])

    def pixel_values(self, image):
        import numpy as np
        from PIL import Image

        resized = image.resize((self.size, self.size), Image.BICUBIC)
        hwc = np.asarray(resized, dtype=np.float64) * (1.0 / 255.0)
        chw = self.torch.from_numpy(hwc.astype(np.float32)).permute(2, 0, 1)
        return ((chw - self.mean) / self.std).unsqueeze(0)

    def features(self, image):
        """(patches, layers x hidden): normalised patch tokens of each layer."""
        out = self.vision(pixel_values=self.pixel_values(image), output_hidden_states=True)
        tokens = [self.F.normalize(out.hidden_states[l][0, 1:, :], dim=-1) for l in self.layers]
        return self.torch.cat(tokens, dim=-1)

    def score(self, query, references):
        torch = self.torch
        nearest = None
        for ref in references:
            d2 = torch.cdist(query, ref).square()
            means = torch.stack([d2[q, r].mean() for q, r in self.overlaps])
            best = int(torch.argmin(means))  # the first of equal minima, as ours
            at_place = d2[self.patch_ids, self.in_place[best]]
            nearest = at_place if nearest is None else torch.minimum(nearest, at_place)
        grid = nearest.sqrt().view(1, 1, self.side, self.side)
        up = self.F.interpolate(grid, size=(WORK, WORK), mode="bilinear", align_corners=False)
        blurred = self.F.conv2d(up.index_select(3, self.pad), self.kernel_x)
        blurred = self.F.conv2d(blurred.index_select(2, self.pad), self.kernel_y)
        return torch.topk(blurred.flatten(), TOP_PIXELS).values.mean()


def main() -> None:
    ref_venv.reexec()
    import torch
    import transformers
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="ours' --write-images folder")
    parser.add_argument("--layers", help="e.g. 6,9 (default: half and three quarters of the depth)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    query = Image.open(args.images / "query.png").convert("RGB")
    refs = sorted(args.images.glob("reference_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    if not refs:
        raise SystemExit(f"no reference_*.png in {args.images}")
    refs = [Image.open(p).convert("RGB") for p in refs]
    # The checkpoint is a CLIPVisionModelWithProjection: its projection is unused here.
    transformers.logging.set_verbosity_error()
    with torch.inference_mode():
        anomaly = AnomalyMap(torch, args.model_dir, layers)
        ref_features = [anomaly.features(r) for r in refs]
        times = []
        score = None
        for i in range(args.warmup + args.runs):
            start = time.perf_counter()
            score = float(anomaly.score(anomaly.features(query), ref_features))
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(
        json.dumps(
            dict(
                framework="pytorch",
                torch=torch.__version__,
                transformers=__import__("transformers").__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                threads=torch.get_num_threads(),
                layers=anomaly.layers,
                grid=anomaly.side,
                radius=anomaly.radius,
                size=query.width,
                k=len(refs),
                runs=args.runs,
                median_s=median,
                min_s=min(times),
                images_per_s=1.0 / median,
                # Our side's `images_per_s_to_score` is this one, from the mean.
                images_per_s_mean=len(times) / sum(times),
                ms_per_image=median * 1000.0,
                score=score,
            ),
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
