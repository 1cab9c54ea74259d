#!/usr/bin/env python3
"""Print transformers' CLIP vision hidden states for a fixed image, the reference
the Rust patch-token backbone (`src/anomaly/clip_patches.rs`, through
`ClipEmbedder::hidden_states`) is checked against.

Loads a CLIP checkpoint folder (default: the tiny random fixture
`tests/fixtures/tiny_clip/full_p8_s40_f16`), feeds it the `pixel_values`
stored in that folder's `reference.json` for one image (transformers' own PIL
preprocessing, so only the model is compared), and writes JSON with
`output_hidden_states=True`: for every layer (0 = embeddings after
`pre_layrnorm`, l = block l), the tokens as float32 base64 (little-endian,
`tokens x hidden`, class token first).

Usage: python3 scripts/clip_hidden_states.py [MODEL_DIR [IMAGE_NAME]] > OUT.json
Run it with the references' interpreter (torch, transformers, safetensors, numpy):
`"$(python3 scripts/ref_venv.py)" scripts/clip_hidden_states.py ...`.
"""

import base64
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPVisionModel

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "tests/fixtures/tiny_clip/full_p8_s40_f16"
DEFAULT_IMAGE = "landscape_80x60.png"


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    image_name = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_IMAGE
    reference = json.loads((model_dir / "reference.json").read_text())
    entry = next(e for e in reference["images"] if e["image"] == image_name)
    raw = base64.b64decode(entry["pixel_values_f32le_base64"])
    pixels = np.frombuffer(raw, dtype="<f4")

    model = CLIPVisionModel.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()
    size = model.config.image_size
    pixel_values = torch.from_numpy(pixels.copy()).reshape(1, 3, size, size)
    with torch.no_grad():
        out = model(pixel_values=pixel_values, output_hidden_states=True)
    layers = []
    for index, state in enumerate(out.hidden_states):
        tokens = state[0].to(torch.float32).numpy()
        layers.append(
            {
                "layer": index,
                "tokens": int(tokens.shape[0]),
                "hidden": int(tokens.shape[1]),
                "values_f32le_base64": base64.b64encode(
                    tokens.astype("<f4").tobytes()
                ).decode(),
            }
        )
    json.dump(
        {
            "model": model_dir.name,
            "image": image_name,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "hidden_states": layers,
        },
        sys.stdout,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
