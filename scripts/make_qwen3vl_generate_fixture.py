#!/usr/bin/env python3
"""Record what transformers generates with the tiny Qwen3-VL fixture, so that
`tests/it/local.rs` can check the Rust forward pass and greedy decoding
without Python.

Reads the model folder `make_tiny_qwen3vl.py` wrote (default
`tests/fixtures/tiny_qwen3vl/`) and the cases of its `reference.json` (text
only, one image, two images, three images, tiny, large, very wide and very
tall images), and writes `generate_reference.json` beside them: per case the
prompt's token ids, the ids `generate(do_sample=False, max_new_tokens=N)`
returns after the prompt (end-of-turn token included when reached), and the
float32 logits of the first generated position (base64 of little-endian
float32; the vocabulary is small enough to store whole).

With `--variant-tied`, it first builds a second tiny model beside the first,
`tests/fixtures/tiny_qwen3vl_tied/`: the same tokenizer, template and image
settings, but tied input and output embeddings, no grouped key/value heads,
head_dim 16 with M-RoPE sections [4, 2, 2] (so the interleave runs out of
height and width frequencies before the end), three language layers and one
deepstack block; its cases name the first fixture's images.

Usage (needs what `make_tiny_qwen3vl.py` installs, torch included; it uses the
same virtual environment, `scripts/ref_venv.py`'s `target/ref-venv` or `$ECHO_REF_VENV`):

    python3 scripts/make_qwen3vl_generate_fixture.py [MODEL_DIR] [--max-new-tokens N]
    python3 scripts/make_qwen3vl_generate_fixture.py --variant-tied
    python3 scripts/make_qwen3vl_generate_fixture.py --bf16 [MODEL_DIR]

`--bf16` loads the weights as bfloat16 (as `LocalModel::load(.., Some(BF16), ..)`
does) and writes `generate_reference_bf16.json` instead: the same fields, the
logits cast to float32 after the bfloat16 lm_head. It does not check the logits
of `generate` against a plain forward (bfloat16 rounding differs between the
two code paths).
"""

import base64
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_qwen3vl  # noqa: E402  (its venv bootstrap, shared on purpose)

MAX_NEW_TOKENS = 24
VARIANT_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "processor_config.json",
]


def build_tied_variant(base, out):
    """A second tiny model whose shape differs where a port could go wrong."""
    import shutil

    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig.from_pretrained(base)
    text = config.text_config
    text.num_hidden_layers = 3
    text.num_attention_heads = 4
    text.num_key_value_heads = 4
    text.head_dim = 16
    text.rope_parameters = dict(text.rope_parameters, mrope_section=[4, 2, 2], rope_theta=5000.0)
    text.tie_word_embeddings = True
    config.tie_word_embeddings = True
    config.vision_config.deepstack_visual_indexes = [1]
    torch.manual_seed(make_tiny_qwen3vl.SEED + 1)
    model = Qwen3VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in VARIANT_FILES:
        shutil.copy(base / name, out / name)


def main():
    make_tiny_qwen3vl.ensure_venv()
    import numpy as np
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    args = sys.argv[1:]
    max_new = MAX_NEW_TOKENS
    if "--max-new-tokens" in args:
        i = args.index("--max-new-tokens")
        max_new = int(args[i + 1])
        del args[i : i + 2]
    bf16 = "--bf16" in args
    if bf16:
        args.remove("--bf16")
    fixtures = make_tiny_qwen3vl.REPO / "tests" / "fixtures"
    base = fixtures / "tiny_qwen3vl"
    images_from = base
    if "--variant-tied" in args:
        args.remove("--variant-tied")
        folder = fixtures / "tiny_qwen3vl_tied"
        build_tied_variant(base, folder)
    else:
        folder = Path(args[0]) if args else base
        images_from = folder
    reference = json.loads((images_from / "reference.json").read_text())

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(folder)
    # AutoProcessor picks the torchvision image processor, whose resize differs
    # from Pillow's by up to 0.03 in pixel values; the checked-in inputs (and
    # the Rust port) are the Pillow one's, so use that here too.
    try:
        from transformers import Qwen2VLImageProcessorPil as PilImageProcessor
    except ImportError:
        from transformers import Qwen2VLImageProcessor as PilImageProcessor
    processor = Qwen3VLProcessor(
        image_processor=PilImageProcessor.from_pretrained(folder),
        tokenizer=processor.tokenizer,
        video_processor=processor.video_processor,
        chat_template=processor.chat_template,
    )
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()

    records = []
    for case in reference["cases"]:
        images = [Image.open(images_from / p).convert("RGB") for p in case["images"]]
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": case["text"]}]
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        kwargs = {"images": images} if images else {}
        batch = processor(text=[prompt], return_tensors="pt", **kwargs)
        with torch.no_grad():
            out = model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=max_new,
                output_logits=True,
                return_dict_in_generate=True,
            )
        prompt_ids = batch["input_ids"][0].tolist()
        assert prompt_ids == case["input_ids"], case["name"]
        if images:
            stored = base64.b64decode(case["pixel_values"]["f32le_base64"])
            stored = np.frombuffer(stored, dtype="<f4")
            assert np.abs(batch["pixel_values"].numpy().ravel() - stored).max() <= 1e-6, case["name"]
        generated = out.sequences[0, len(prompt_ids) :].tolist()
        # The stored logits come from a plain forward of the prompt; generate's
        # own (another code path) must agree with them to rounding.
        with torch.no_grad():
            first = model(**batch).logits[0, -1].to(torch.float32).numpy()
        from_generate = out.logits[0][0].to(torch.float32).numpy()
        if not bf16:
            assert np.abs(first - from_generate).max() < 1e-5, case["name"]
        records.append(
            {
                "name": case["name"],
                "images": case["images"],
                "text": case["text"],
                "prompt_tokens": prompt_ids,
                "tokens": generated,
                "text_out": processor.decode(generated, skip_special_tokens=True),
                "first_logits": {
                    "len": int(first.shape[0]),
                    "f32le_base64": base64.b64encode(first.astype("<f4").tobytes()).decode(),
                },
            }
        )
        print(f"{case['name']}: {len(prompt_ids)} prompt tokens, generated {generated}")

    result = {
        "generated_by": "scripts/make_qwen3vl_generate_fixture.py",
        "images_from": images_from.name,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "max_new_tokens": max_new,
        "dtype": "bfloat16" if bf16 else "float32",
        "cases": records,
    }
    name = "generate_reference_bf16.json" if bf16 else "generate_reference.json"
    (folder / name).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
