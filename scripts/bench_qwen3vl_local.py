#!/usr/bin/env python3
"""Speed of the local Qwen3-VL forward pass against PyTorch on the same CPU
threads, on a random-weight model of realistic width.

Builds (once) a random Qwen3-VL in MODEL_DIR: text hidden 1,024 with
Qwen3-VL-2B's vocabulary (151,936, tied embeddings), vision hidden 768 with
patch 16 and merge 2, Qwen's released image limits; the tokenizer, template
and image settings' other fields come from the tiny fixture. Then times, for a
two-image MMAD-style prompt (two 448 x 448 images, 196 tokens each),
transformers' prefill (one forward of the prompt) and greedy decoding of
`--tokens` tokens, and the same through `echo-workbench generate`, and prints
both with the ratios and each side's peak RSS.

Usage (the virtual environment of make_tiny_qwen3vl.py, torch included; build
the binary first, `cargo build --release` for figures worth quoting):

    python3 scripts/bench_qwen3vl_local.py MODEL_DIR [--threads N] [--tokens N]
        [--layers N] [--binary PATH]
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_qwen3vl  # noqa: E402  (its venv bootstrap, shared on purpose)

PROMPT = (
    "Image 1 shows a defect-free washer that serves as the reference for image 2, "
    "the one to inspect. Is there any defect in the object?\nA: Yes\nB: No\n"
    "Reply with only the letter of the correct option."
)


def option(args, name, default):
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i : i + 2]
        return type(default)(value)
    return default


def build(folder, layers):
    import numpy as np
    import torch
    from PIL import Image
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    fixture = make_tiny_qwen3vl.REPO / "tests" / "fixtures" / "tiny_qwen3vl"
    tiny = json.loads((fixture / "config.json").read_text())
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936,
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=layers,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=64,
            max_position_embeddings=32768,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [12, 10, 10],
                "mrope_interleaved": True,
            },
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=layers,
            hidden_size=768,
            intermediate_size=3072,
            num_heads=12,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=1024,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[1, 2, 3][: max(1, layers - 1)],
        ),
        image_token_id=tiny["image_token_id"],
        video_token_id=tiny["video_token_id"],
        vision_start_token_id=tiny["vision_start_token_id"],
        vision_end_token_id=tiny["vision_end_token_id"],
        tie_word_embeddings=True,
    )
    config.text_config.eos_token_id = tiny["text_config"]["eos_token_id"]
    config.text_config.pad_token_id = tiny["text_config"]["pad_token_id"]
    torch.manual_seed(make_tiny_qwen3vl.SEED)
    model = Qwen3VLForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(fixture / name, folder / name)
    processor = json.loads((fixture / "processor_config.json").read_text())
    image = processor["image_processor"]
    image.update(patch_size=16, merge_size=2, size={"shortest_edge": 65536, "longest_edge": 16777216})
    image["image_mean"] = image["image_std"] = [0.5, 0.5, 0.5]
    processor.pop("video_processor", None)
    (folder / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    rng = np.random.default_rng(0)
    for name in ["reference", "query"]:
        y, x = np.mgrid[0:448, 0:448]
        base = np.stack([x / 447 * 255, y / 447 * 255, 127 + 127 * np.sin((x + y) / 9)], -1)
        arr = np.clip(base + rng.integers(-30, 31, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr, "RGB").save(folder / f"{name}.png")


def main():
    make_tiny_qwen3vl.ensure_venv()
    args = sys.argv[1:]
    threads = option(args, "--threads", os.cpu_count() or 1)
    tokens = option(args, "--tokens", 32)
    layers = option(args, "--layers", 4)
    binary = option(args, "--binary", str(make_tiny_qwen3vl.REPO / "target" / "release" / "echo-workbench"))
    if len(args) != 1:
        sys.exit(__doc__)
    folder = Path(args[0])
    import torch
    from PIL import Image
    from transformers import (
        AutoTokenizer,
        Qwen2VLImageProcessorPil,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    if not (folder / "model.safetensors").is_file():
        build(folder, layers)
    torch.set_num_threads(threads)
    images = [Image.open(folder / f"{n}.png").convert("RGB") for n in ["reference", "query"]]
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(folder),
        tokenizer=AutoTokenizer.from_pretrained(folder),
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        chat_template=(folder / "chat_template.jinja").read_text(),
    )
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": PROMPT}]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    batch = processor(text=[prompt], images=images, return_tensors="pt")
    started = time.perf_counter()
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    load_ms = (time.perf_counter() - started) * 1e3
    with torch.no_grad():
        model(**batch)  # warm-up
        started = time.perf_counter()
        model(**batch)
        prefill_ms = (time.perf_counter() - started) * 1e3
        # One generated token is the prefill alone; the difference to
        # `tokens` of them is `tokens - 1` decoding steps.
        timed = {}
        for n in (1, tokens):
            started = time.perf_counter()
            model.generate(**batch, do_sample=False, max_new_tokens=n, min_new_tokens=n)
            timed[n] = (time.perf_counter() - started) * 1e3
    prompt_tokens = batch["input_ids"].shape[1]
    torch_decode = (tokens - 1) / max(timed[tokens] - timed[1], 1e-9) * 1e3
    torch_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    run = subprocess.run(
        # GNU time reports the binary's own peak RSS (this process's children
        # inherit its RSS at fork, so getrusage would report Python's).
        ["/usr/bin/time", "-f", "peak_rss_kb=%M", binary, "generate", "--model", f"local:{folder}",
         "--image", str(folder / "reference.png"), "--image", str(folder / "query.png"),
         "--prompt", PROMPT, "--max-tokens", str(tokens), "--format", "json"],
        capture_output=True, text=True, check=True,
    )
    ours = json.loads(run.stdout)
    ours_rss = int(run.stderr.rsplit("peak_rss_kb=", 1)[1].split()[0]) / 1024
    assert ours["prompt_tokens"] == batch["input_ids"][0].tolist()
    ours_prefill = len(ours["prompt_tokens"]) / ours["ms"]["prefill"] * 1e3
    ours_decode = (len(ours["tokens"]) - 1) / max(ours["ms"]["decode"], 1e-9) * 1e3
    torch_prefill = prompt_tokens / prefill_ms * 1e3
    weights_mb = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20
    print(json.dumps({
        "threads": threads,
        "weights_mb": round(weights_mb),
        "prompt_tokens": prompt_tokens,
        "torch": {"load_ms": round(load_ms), "prefill_tok_s": round(torch_prefill, 1),
                  "decode_tok_s": round(torch_decode, 2), "peak_rss_mb": round(torch_rss)},
        "ours": {"load_ms": round(ours["ms"]["load"]), "prefill_tok_s": round(ours_prefill, 1),
                 "decode_tok_s": round(ours_decode, 2), "peak_rss_mb": round(ours_rss)},
        "ratio": {"prefill": round(ours_prefill / torch_prefill, 2),
                  "decode": round(ours_decode / torch_decode, 2)},
    }, indent=1))


if __name__ == "__main__":
    main()
