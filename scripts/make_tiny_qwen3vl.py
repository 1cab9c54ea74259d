#!/usr/bin/env python3
"""Build the tiny random Qwen3-VL fixture that `tests/local.rs` checks the local
backend's inputs against: prompt text, token ids, pixel values and grids.

Writes `tests/fixtures/tiny_qwen3vl/` (relative to the repository root):

* the model folder as `save_pretrained` leaves it: `config.json`,
  `model.safetensors` (random weights, fixed seed), `tokenizer.json`,
  `tokenizer_config.json`, `processor_config.json` (image processor settings
  nested under `image_processor`, transformers 5's layout) and
  `chat_template.jinja`;
* `images/*.png`: synthetic RGB images (fixed seed) of several sizes and aspect
  ratios, small enough to be scaled up to `min_pixels`, large enough to be
  scaled down to `max_pixels`, very wide and very tall;
* `reference.json`: for each case (text only, one image, two images, ...) the
  rendered prompt, the processor's `input_ids`, `image_grid_thw` and
  `pixel_values` (base64 of little-endian float32, row-major, with the shape),
  and transformers' own `smart_resize` on Qwen3-VL's released settings for a
  list of sizes.

The tokenizer is trained here with `tokenizers` (byte-level BPE with Qwen2's
pre-tokenizer regex) on text this script writes, plus Qwen's special tokens; the
chat template is this script's own wording, so that a Rust port that hard-codes
Qwen's template or vocabulary cannot pass.

Usage (from anywhere; needs Python 3.10+ and the package index):

    python3 scripts/make_tiny_qwen3vl.py [--inputs-only] [OUTPUT_DIR]

`--inputs-only` skips torch and torchvision (and so the weights and the video
processor): everything `tests/local.rs` compares is still written, and
`config.json` still comes from `Qwen3VLConfig`. PyPI's Linux torch brings
several GB of CUDA libraries; point pip at a CPU-only wheel index
(`PIP_EXTRA_INDEX_URL`) where one is reachable.
The checked-in fixture is a full build; an inputs-only build writes the same
`reference.json` (checked when the fixture was made).

The script re-runs itself in the references' virtual environment
(`scripts/ref_venv.py`: `target/ref-venv` or `$ECHO_REF_VENV`, with transformers
>= 5, torch, torchvision (transformers' Qwen3-VL processor needs it even for
images), pillow, tokenizers, jinja2 and safetensors); `--inputs-only` uses a
torch-free one of its own (`target/tiny-qwen3vl-venv` or `$TINY_QWEN3VL_VENV`).
The system interpreter is never modified.
"""

import base64
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["transformers>=5", "pillow", "tokenizers", "jinja2", "safetensors", "numpy"]
# Only for the weights: PyPI's Linux torch pulls in several GB of CUDA libraries,
# so `--inputs-only` builds the input-side fixture without them.
MODEL_PACKAGES = ["torch", "torchvision"]
INPUTS_ONLY = "--inputs-only" in sys.argv[1:]


def ensure_venv():
    """Re-executes this script inside the references' virtual environment
    (`scripts/ref_venv.py`), or a torch-free one of its own for `--inputs-only`."""
    if not INPUTS_ONLY:
        sys.path.insert(0, str(REPO / "scripts"))
        import ref_venv

        ref_venv.reexec()
        return
    target = Path(os.environ.get("TINY_QWEN3VL_VENV", REPO / "target" / "tiny-qwen3vl-venv"))
    python = target / "bin" / "python"
    if Path(sys.prefix).resolve() == target.resolve():
        return
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(target)
    packages = PACKAGES + ([] if INPUTS_ONLY else MODEL_PACKAGES)
    modules = "transformers, PIL, tokenizers, jinja2" + ("" if INPUTS_ONLY else ", torch, torchvision")
    probe = subprocess.run([str(python), "-c", f"import {modules}"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


SEED = 20261206
PATCH = 8
MERGE = 2
TEMPORAL = 2
FACTOR = PATCH * MERGE
# Small limits so that both ends are hit by a handful of small images and the
# pixel values of every case can be stored whole.
MIN_PIXELS = FACTOR * FACTOR * 4
MAX_PIXELS = FACTOR * FACTOR * 16
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation runs,
# newlines, spaces): the Rust side must run it through fancy-regex.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Not Qwen's wording, but the constructs Qwen3 templates rely on: a macro whose
# output is trimmed, a namespace counter, `is iterable and is not mapping`,
# `~`, a reversed slice, Python string methods (`startswith`, `endswith`), loop
# controls and trim_blocks / lstrip_blocks whitespace.
CHAT_TEMPLATE = """{%- set pictures = namespace(count=0) -%}
{%- macro render_parts(content, count_pictures) -%}
{%- if content is string -%}
{{ content }}
{%- elif content is iterable and content is not mapping -%}
{%- for part in content -%}
{%- if part['type'] == 'image' or 'image' in part -%}
{%- if count_pictures -%}{%- set pictures.count = pictures.count + 1 -%}{%- endif -%}
{{ 'Picture ' ~ pictures.count ~ ': ' }}<|vision_start|><|image_pad|><|vision_end|>
{% elif part['type'] == 'text' -%}
{%- if part['text'] | trim == '' -%}{%- continue -%}{%- endif -%}
{{ part['text'] | trim }}
{%- endif -%}
{%- endfor -%}
{%- elif content is none or content is undefined -%}
{%- else -%}
{{ raise_exception('Unexpected content.') }}
{%- endif -%}
{%- endmacro -%}
{%- set state = namespace(last_user=-1) -%}
{%- for message in messages[::-1] -%}
{%- if state.last_user < 0 and message.role == 'user' -%}
{%- set text = render_parts(message.content, false) | trim -%}
{%- if not (text.startswith('<note>') and text.endswith('</note>')) -%}
{%- set state.last_user = (messages | length - 1) - loop.index0 -%}
{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- for message in messages %}
<|im_start|>{{ message['role'] }}
{{ render_parts(message['content'], true) | trim }}
{%- if loop.index0 == state.last_user %} [query]{% endif %}<|im_end|>
{%- endfor %}
{% if add_generation_prompt -%}
<|im_start|>assistant
Inspector's answer:
{%- endif -%}
"""

CORPUS_LINES = [
    "Is there any defect in the object? Answer with the letter of the option.",
    "A: Yes, there is a scratch near the top edge. B: No, the part looks good.",
    "The metal nut shows a crack; the screw thread is bent and the cable is cut.",
    "Picture 1 and Picture 2 show the same bottle from above, 2 times, 13 mm apart.",
    "Inspector's answer: the hazelnut has a hole, the pill is contaminated.",
    "Transistor, capsule, carpet, grid, leather, tile, wood, zipper, toothbrush.",
    "What's the anomaly? It's a missing component; we'll check again, don't worry.",
    "Ein Kratzer an der Kante; une rayure sur le bord; 表面に傷があります。",
]


def write_corpus(path):
    lines = []
    for i in range(40):
        for line in CORPUS_LINES:
            lines.append(f"{line} {i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def train_tokenizer(out_dir):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = out_dir / "corpus.txt"
    write_corpus(corpus)
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(corpus)], trainer)
    corpus.unlink()
    return tok


def make_images(img_dir):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(SEED)
    # (name, width, height): inside the limits, tiny (scaled up to MIN_PIXELS),
    # large (scaled down to MAX_PIXELS), very wide, very tall, odd sizes.
    sizes = [
        ("plain_48x40", 48, 40),
        ("tiny_7x5", 7, 5),
        ("large_200x150", 200, 150),
        ("wide_300x12", 300, 12),
        ("tall_18x90", 18, 90),
        ("odd_37x23", 37, 23),
        ("square_64", 64, 64),
    ]
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, w, h in sizes:
        # Smooth gradients plus noise: resampling errors show on both.
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack(
            [
                255 * x / max(w - 1, 1),
                255 * y / max(h - 1, 1),
                127 + 127 * np.sin((x + y) / 3.0),
            ],
            axis=-1,
        )
        noise = rng.integers(-40, 41, size=(h, w, 3))
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = img_dir / f"{name}.png"
        Image.fromarray(arr, "RGB").save(path)
        paths[name] = path
    return paths


def f32_b64(arr):
    import numpy as np

    return base64.b64encode(np.ascontiguousarray(arr, dtype="<f4").tobytes()).decode()


def build_config(tok_vocab, special_ids):
    from transformers import Qwen3VLConfig

    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=tok_vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=512,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 1, 1],
                "mrope_interleaved": True,
            },
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            in_channels=3,
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=TEMPORAL,
            out_hidden_size=32,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, 1],
        ),
        image_token_id=special_ids["<|image_pad|>"],
        video_token_id=special_ids["<|video_pad|>"],
        vision_start_token_id=special_ids["<|vision_start|>"],
        vision_end_token_id=special_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.text_config.bos_token_id = None
    config.text_config.eos_token_id = special_ids["<|im_end|>"]
    config.text_config.pad_token_id = special_ids["<|endoftext|>"]
    return config


def build_model(config):
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(SEED)
    model = Qwen3VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            # Larger than the 0.02 default so every block visibly moves the logits.
            p.normal_(0.0, 0.2)
    return model


def main():
    ensure_venv()
    import numpy as np
    from PIL import Image
    from transformers import PreTrainedTokenizerFast, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    try:
        from transformers import Qwen2VLImageProcessorPil as PilImageProcessor
    except ImportError:
        from transformers import Qwen2VLImageProcessor as PilImageProcessor
    args = [a for a in sys.argv[1:] if a != "--inputs-only"]
    out = Path(args[0]) if args else REPO / "tests" / "fixtures" / "tiny_qwen3vl"
    out.mkdir(parents=True, exist_ok=True)

    raw = train_tokenizer(out)
    special_ids = {t: raw.token_to_id(t) for t in SPECIAL}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL[1:],
        model_max_length=4096,
    )
    image_processor = PilImageProcessor(
        patch_size=PATCH,
        merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
        image_mean=MEAN,
        image_std=STD,
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
    )
    video_processor = None
    if INPUTS_ONLY:
        # Without torch the video processor's class cannot even be looked up;
        # skip the type check for it alone. Text and images take the same path.
        from transformers.processing_utils import ProcessorMixin

        check = ProcessorMixin.check_argument_for_proper_class
        ProcessorMixin.check_argument_for_proper_class = lambda self, name, arg: (
            None if arg is None else check(self, name, arg)
        )
    else:
        # Needs torchvision even though no video is processed here.
        from transformers import Qwen3VLVideoProcessor

        video_processor = Qwen3VLVideoProcessor(
            patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL
        )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )

    config = build_config(raw.get_vocab_size(), special_ids)
    if INPUTS_ONLY:
        config.save_pretrained(out)
        # The processor cannot save itself without its video processor: write
        # what its save_pretrained writes for the other two parts.
        tokenizer.save_pretrained(out)
        (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
        nested = {"image_processor": image_processor.to_dict(), "processor_class": "Qwen3VLProcessor"}
        (out / "processor_config.json").write_text(json.dumps(nested, indent=2) + "\n")
    else:
        build_model(config).save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)

    paths = make_images(out / "images")
    cases = [
        ("text_only", [], "What is shown?  Answer briefly. "),
        ("one_image", ["plain_48x40"], "Is there any defect in the object?\nA: Yes\nB: No"),
        ("two_images", ["plain_48x40", "odd_37x23"], "Compare Picture 1 with Picture 2."),
        ("tiny_min_pixels", ["tiny_7x5"], "Tiny."),
        ("large_max_pixels", ["large_200x150"], "Large: is the part good?"),
        ("very_wide", ["wide_300x12"], "Wide strip, 300 px; any cut?"),
        ("very_tall", ["tall_18x90"], "Tall — any crack? 表面"),
        ("three_mixed", ["square_64", "wide_300x12", "tiny_7x5"], "Which one is odd?"),
    ]
    records = []
    for name, images, text in cases:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        prompt = processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        pil = [Image.open(paths[i]).convert("RGB") for i in images]
        kwargs = {"images": pil} if pil else {}
        batch = processor(text=[prompt], return_tensors="np", **kwargs)
        record = {
            "name": name,
            "images": [f"images/{i}.png" for i in images],
            "text": text,
            "prompt": prompt,
            "input_ids": [int(t) for t in batch["input_ids"][0]],
        }
        if pil:
            pv = np.asarray(batch["pixel_values"], dtype=np.float32)
            record["image_grid_thw"] = [[int(v) for v in row] for row in batch["image_grid_thw"]]
            record["pixel_values"] = {"shape": list(pv.shape), "f32le_base64": f32_b64(pv)}
        records.append(record)
        print(f"{name}: {len(record['input_ids'])} tokens, grids {record.get('image_grid_thw')}")

    # transformers' own smart_resize on Qwen3-VL's released settings (patch 16,
    # merge 2, 65,536 to 16,777,216 pixels) and on this fixture's.
    resize_cases = []
    sizes = [
        (1, 1), (5, 7), (32, 32), (33, 31), (48, 48), (49, 47), (224, 224), (255, 257),
        (480, 640), (720, 1280), (1080, 1920), (1024, 1024), (2000, 3000), (4096, 4096),
        (8000, 6000), (300, 12), (12, 300), (100, 16), (16, 100), (5000, 30), (31, 5000),
        (81, 113), (47, 16), (80, 48), (112, 80), (144, 16), (3000, 12), (1, 250), (1, 200),
    ]
    for factor, lo, hi in [(32, 65536, 16777216), (FACTOR, MIN_PIXELS, MAX_PIXELS), (28, 3136, 12845056)]:
        for h, w in sizes:
            try:
                rh, rw = smart_resize(h, w, factor=factor, min_pixels=lo, max_pixels=hi)
                resize_cases.append({"height": h, "width": w, "factor": factor, "min_pixels": lo,
                                     "max_pixels": hi, "resized": [int(rh), int(rw)]})
            except ValueError as e:
                resize_cases.append({"height": h, "width": w, "factor": factor, "min_pixels": lo,
                                     "max_pixels": hi, "error": str(e)})

    import PIL
    import transformers

    reference = {
        "generated_by": "scripts/make_tiny_qwen3vl.py",
        "versions": {"transformers": transformers.__version__, "pillow": PIL.__version__},
        "cases": records,
        "smart_resize": resize_cases,
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
