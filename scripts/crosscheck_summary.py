#!/usr/bin/env python3
"""Run MMAD's own scorer on answer files, to cross-check Echo Workbench's scoring.

Our Rust scorer (src/score.rs) reimplements MMAD's
`evaluation/examples/helper/summary.py::caculate_accuracy_mmad`. This script loads
that function from YOUR checkout of MMAD (it is not copied here), neutralises its
plotting, and runs it, so that the CSV it writes can be compared with ours.

Usage:
    # score existing answer files with MMAD's code (writes <name>_accuracy.csv
    # beside each file, as summary.py itself does)
    python3 scripts/crosscheck_summary.py MMAD_DIR answers.json [more.json ...]

    # (re)generate the deterministic conformance fixtures used by the Rust tests
    python3 scripts/crosscheck_summary.py MMAD_DIR --generate tests/fixtures/score

    # check that the fixtures still match what MMAD's code writes
    python3 scripts/crosscheck_summary.py MMAD_DIR --verify tests/fixtures/score

Needs pandas: install it into a virtual environment, never the system
interpreter (`python3 -m venv target/crosscheck-venv && target/crosscheck-venv/bin/pip
install pandas`); matplotlib and seaborn are NOT needed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import random
import shutil
import sys
import tempfile
import types
from pathlib import Path

# Bump when the generator changes, so regenerated fixtures are clearly different.
SEED = 20250403

DATASETS = {
    "DS-MVTec": [
        ("bottle", "image", ["good", "broken_large", "contamination"], "png"),
        ("screw", "image", ["good", "scratch_head"], "png"),
    ],
    "MVTec-LOCO": [
        ("breakfast_box", "test", ["good", "logical_anomalies", "structural_anomalies"], "png"),
    ],
    "VisA": [("candle", "test", ["good", "bad"], "JPG"), ("pcb1", "test", ["good", "bad"], "JPG")],
    "GoodsAD": [("cigarette_box", "test", ["good", "open"], "jpg"), ("food_bottle", "test", ["good", "deformed"], "jpg")],
}

TYPES = [
    "Anomaly Detection",
    "Defect Classification",
    "Defect Localization",
    "Defect Description",
    "Defect Analysis",
    "Object Classification",
    "Object Structure",
    "Object Details",
]

LETTERS = ["A", "B", "C", "D", "E"]

# Things a model (or a broken pipeline) may leave in `gpt_answer`.
RAW_ANSWERS = [
    "a", "b", "e", "F", "", " A", "A.", "A ", "B)", "(C)", "Answer: B",
    "The image is unclear", "Yes", "No", "AB", "\u0410",
]
NON_STRING = [None, 0, 1, 2.5, True, False, ["A"], {"answer": "A"}]


def load_mmad_summary(mmad_dir: Path):
    """Import caculate_accuracy_mmad from a checkout of MMAD, without plotting."""
    candidates = [
        mmad_dir / "evaluation" / "examples" / "helper" / "summary.py",
        mmad_dir / "helper" / "summary.py",
        mmad_dir / "summary.py",
    ]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        sys.exit(f"summary.py not found under {mmad_dir} (looked in: {', '.join(map(str, candidates))})")

    # summary.py imports matplotlib.pyplot and seaborn at module level and calls them
    # after computing the table; neither affects the numbers, so stub them out.
    noop = lambda *a, **k: None  # noqa: E731
    plt = types.ModuleType("matplotlib.pyplot")
    for name in ("figure", "title", "xticks", "tight_layout", "show", "savefig", "close"):
        setattr(plt, name, noop)
    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = plt
    sns = types.ModuleType("seaborn")
    sns.heatmap = noop
    sys.modules["matplotlib"] = mpl
    sys.modules["matplotlib.pyplot"] = plt
    sys.modules["seaborn"] = sns

    spec = importlib.util.spec_from_file_location("mmad_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.caculate_accuracy_mmad


def run_mmad(fn, answers_path: Path, quiet: bool = True) -> Path:
    """Score one answers file with MMAD's code; return the CSV it wrote."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out if quiet else sys.stdout):
        fn(str(answers_path), show_overkill_miss=True)
    return Path(str(answers_path).replace(".json", "_accuracy.csv"))


# ---------------------------------------------------------------------------
# Fixture generation


def image_path(rng: random.Random, dataset: str, normal: bool | None = None) -> str:
    # Unknown dataset names (odd fixtures) borrow VisA's layout.
    cat, split, folders, ext = rng.choice(DATASETS.get(dataset, DATASETS["VisA"]))
    if normal is None:
        folder = rng.choice(folders)
    elif normal:
        folder = "good"
    else:
        folder = rng.choice([f for f in folders if f != "good"])
    return f"{dataset}/{cat}/{split}/{folder}/{rng.randrange(0, 40):03d}.{ext}"


def entry(image: str, qtype: str, correct, given, extra: bool = False) -> dict:
    e = {"image": image}
    if extra:
        # The real answer files carry the question too; the scorer must ignore it.
        e["question"] = {"type": "text", "text": "Is there any defect?", "options": {"A": "Yes", "B": "No"}}
    e["question_type"] = qtype
    e["correct_answer"] = correct
    e["gpt_answer"] = given
    return e


def random_answer(rng: random.Random, correct: str, p_correct: float, p_invalid: float):
    r = rng.random()
    if r < p_invalid:
        return rng.choice(RAW_ANSWERS + NON_STRING)
    if r < p_invalid + p_correct:
        return correct
    return rng.choice([x for x in LETTERS if x != correct])


def random_entries(rng, n, datasets, qtypes, p_correct=0.6, p_invalid=0.0, extra=False):
    out = []
    for _ in range(n):
        ds = rng.choice(datasets)
        qt = rng.choice(qtypes)
        correct = rng.choice(LETTERS[: rng.randint(2, 5)])
        out.append(entry(image_path(rng, ds), qt, correct, random_answer(rng, correct, p_correct, p_invalid), extra))
    return out


def facts_fixture():
    rows = [
        ("DS-MVTec/bottle/image/good/000.png", "Anomaly Detection", "B", "B"),
        ("DS-MVTec/bottle/image/good/001.png", "Anomaly Detection", "B", "A"),
        ("DS-MVTec/bottle/image/broken_large/000.png", "Anomaly Detection", "A", "A"),
        ("DS-MVTec/bottle/image/broken_large/000.png", "Defect Classification", "C", "C"),
        ("DS-MVTec/bottle/image/broken_large/000.png", "Defect Localization", "D", "A"),
        ("DS-MVTec/bottle/image/broken_large/001.png", "Anomaly Detection", "A", "The image is unclear"),
        ("DS-MVTec/bottle/image/broken_large/001.png", "Defect Classification", "D", "A"),
        ("DS-MVTec/bottle/image/good/000.png", "Object Structure", "A", "A"),
        ("DS-MVTec/bottle/image/good/000.png", "Object Details", "B", "C"),
        ("VisA/candle/test/good/0000.JPG", "Anomaly Detection", "B", "B"),
        ("VisA/candle/test/bad/000.JPG", "Anomaly Detection", "A", "B"),
        ("VisA/candle/test/bad/000.JPG", "Defect Classification", "B", "B"),
        ("VisA/candle/test/bad/000.JPG", "Object Classification", "A", "A"),
        ("VisA/candle/test/bad/000.JPG", "Object Details", "C", "C"),
    ]
    return [entry(*r) for r in rows]


def generate_cases(rng: random.Random) -> list[tuple[str, list[dict]]]:
    all_ds = list(DATASETS)
    cases: list[tuple[str, list[dict]]] = []

    # 01: the worked example of the facts file.
    cases.append(("facts section 4 fixture", facts_fixture()))

    # 02: clean answers, all four datasets, all eight types, extra fields present.
    cases.append(("clean, all datasets and types", random_entries(rng, 60, all_ds, TYPES, extra=True)))

    # 03: scattered invalid answers, runs of consecutive invalids, invalid last entry.
    e = random_entries(rng, 120, all_ds, TYPES, p_invalid=0.15)
    for start, length in ((10, 2), (30, 3), (50, 4), (70, 5)):
        for i in range(start, start + length):
            e[i]["gpt_answer"] = rng.choice(RAW_ANSWERS)
    e[-1]["gpt_answer"] = "The image is unclear"
    cases.append(("invalid runs, invalid last", e))

    # 04: invalid first entry, invalid second-to-last and last entries.
    e = random_entries(rng, 60, all_ds, TYPES[:5])
    e[0]["gpt_answer"] = None
    e[-2]["correct_answer"] = "F"
    e[-1]["gpt_answer"] = "a"
    cases.append(("invalid first and last two", e))

    # 05: duplicated entries, including duplicated invalid ones (list.remove by equality).
    base = random_entries(rng, 30, all_ds, TYPES, p_invalid=0.3)
    e = []
    for x in base:
        e.append(x)
        for _ in range(rng.choice([0, 0, 1, 2])):
            e.append(json.loads(json.dumps(x)))
    cases.append(("duplicates", e))

    # 06: types missing per dataset; one dataset without Anomaly Detection at all.
    e = []
    e += random_entries(rng, 25, ["DS-MVTec"], ["Anomaly Detection", "Defect Classification"])
    e += random_entries(rng, 25, ["VisA"], ["Defect Localization", "Object Details"])
    e += random_entries(rng, 25, ["GoodsAD"], ["Object Classification", "Anomaly Detection"])
    e += random_entries(rng, 25, ["MVTec-LOCO"], ["Defect Description", "Defect Analysis", "Object Structure"])
    rng.shuffle(e)
    cases.append(("types missing per dataset", e))

    # 07: non-string answers (null, numbers, booleans, lists, objects) on both sides.
    e = random_entries(rng, 80, all_ds, TYPES)
    for i in rng.sample(range(80), 20):
        e[i]["gpt_answer"] = rng.choice(NON_STRING)
    for i in rng.sample(range(80), 5):
        e[i]["correct_answer"] = rng.choice(NON_STRING + ["a"])
    cases.append(("non-string answers", e))

    # 08: lower-case letters and raw text replies.
    e = random_entries(rng, 90, all_ds, TYPES)
    for i in rng.sample(range(90), 25):
        e[i]["gpt_answer"] = rng.choice(RAW_ANSWERS)
    cases.append(("lower-case and raw text", e))

    # 09: unknown question types, including case variants of real ones.
    e = random_entries(rng, 80, all_ds, TYPES + ["Counting", "anomaly detection", "Object Analysis"], p_invalid=0.1)
    cases.append(("unknown question types", e))

    # 10: a single dataset (pandas dtype corner: one-row frame), a type never answered validly.
    e = random_entries(rng, 30, ["VisA"], ["Anomaly Detection", "Defect Classification", "Object Structure"])
    e.append(entry(image_path(rng, "VisA"), "Defect Analysis", "A", "nonsense"))
    e += random_entries(rng, 5, ["VisA"], ["Anomaly Detection"])
    cases.append(("single dataset", e))

    # 11: Object Details first, Structure/Details interleaved, AD only normal in one dataset
    # and only abnormal in another.
    e = [entry(image_path(rng, "GoodsAD"), "Object Details", "A", "A")]
    e += [entry(image_path(rng, "GoodsAD", normal=True), "Anomaly Detection", "A", rng.choice("AB")) for _ in range(7)]
    e += [entry(image_path(rng, "VisA", normal=False), "Anomaly Detection", "B", rng.choice("AB")) for _ in range(9)]
    e += random_entries(rng, 40, ["GoodsAD", "VisA"], ["Object Structure", "Object Details", "Defect Analysis"])
    cases.append(("object analysis merge, one-sided AD", e))

    # 12: a dataset whose every answer is invalid; the others mixed.
    e = random_entries(rng, 60, all_ds[:3], TYPES, p_invalid=0.2)
    bad = random_entries(rng, 12, ["GoodsAD"], TYPES)
    for x in bad:
        x["gpt_answer"] = rng.choice(RAW_ANSWERS + NON_STRING)
    e = e[:30] + bad + e[30:]
    cases.append(("dataset with only invalid answers", e))

    # 13: no Anomaly Detection question at all (Overkill and Miss become 100).
    cases.append(("no anomaly detection", random_entries(rng, 70, all_ds, TYPES[1:], p_invalid=0.1)))

    # 14: large mixed case close to a real run's shape.
    cases.append(("large mix", random_entries(rng, 220, all_ds, TYPES, p_correct=0.7, p_invalid=0.05)))

    # 15: names needing CSV quoting, and images without a '/'.
    e = random_entries(rng, 20, ["VisA"], ["Anomaly Detection", 'Defect "Type", named'])
    e += [entry("lonely.png", "Anomaly Detection", "A", rng.choice("AB")) for _ in range(4)]
    e += [entry('Data,set "X"/cat/test/good/001.png', t, "B", rng.choice("AB")) for t in ("Anomaly Detection", "Odd,type")]
    cases.append(("csv quoting and odd names", e))

    # 16: every answer invalid, consecutive.
    e = random_entries(rng, 9, all_ds, TYPES)
    for x in e:
        x["gpt_answer"] = rng.choice(RAW_ANSWERS)
    cases.append(("all invalid", e))

    # 17: names that collide with the columns and row the scorer adds itself; pandas
    # overwrites those in place instead of appending a second one.
    e = random_entries(rng, 16, ["VisA", "Average"], ["Anomaly Detection", "Average", "Overkill", "Miss"])
    cases.append(("names colliding with Average/Overkill/Miss", e))

    # 18: many datasets and columns. pandas sums a column of 8+ values pairwise (numpy's
    # add.reduce) but a row in order; this draw (own generator, seed picked by trying a
    # few) is one where the two orders differ in the last digit of several means.
    many = [f"Custom{i}" for i in range(11)]
    own = random.Random(12)
    e = random_entries(own, 200, many, TYPES[:6] + ["Counting", "Defect Count"], p_invalid=0.05)
    cases.append(("eleven datasets, nine columns", e))

    # 19: no answers at all.
    cases.append(("empty", []))

    return cases


def generate(fn, out_dir: Path) -> None:
    rng = random.Random(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = generate_cases(rng)
    for n, (title, answers) in enumerate(cases, start=1):
        path = out_dir / f"case_{n:02d}.json"
        # One answer per line: readable in a diff, and much smaller than indented JSON.
        body = ",\n".join(json.dumps(a, ensure_ascii=False) for a in answers)
        path.write_text(f"[\n{body}\n]\n" if answers else "[]\n", encoding="utf-8")
        csv = run_mmad(fn, path)
        print(f"{path.name}: {len(answers):4d} answers, {title} -> {csv.name}")


def verify(fn, fixture_dir: Path) -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(fixture_dir.glob("case_*.json")):
            if src.name.endswith("_accuracy.json"):
                continue
            copy = Path(tmp) / src.name
            shutil.copy(src, copy)
            got = run_mmad(fn, copy).read_text(encoding="utf-8")
            want = (fixture_dir / src.name.replace(".json", "_accuracy.csv")).read_text(encoding="utf-8")
            status = "ok" if got == want else "DIFFERS"
            failures += got != want
            print(f"{src.name}: {status}")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mmad_dir", type=Path, help="path of a checkout of jam-cc/MMAD")
    ap.add_argument("answers", nargs="*", type=Path, help="answer files to score with MMAD's code")
    ap.add_argument("--generate", type=Path, metavar="DIR", help="write the conformance fixtures into DIR")
    ap.add_argument("--verify", type=Path, metavar="DIR", help="re-run MMAD's code on the fixtures in DIR")
    args = ap.parse_args()

    fn = load_mmad_summary(args.mmad_dir)
    if args.generate:
        generate(fn, args.generate)
    if args.verify:
        return 1 if verify(fn, args.verify) else 0
    if not (args.generate or args.verify or args.answers):
        ap.print_usage()
        return 2
    for path in args.answers:
        csv = run_mmad(fn, path, quiet=False)
        print(f"wrote {csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
