#!/usr/bin/env python3
"""Generate the difflib conformance fixture for src/echo/difflib.rs.

Records what CPython's difflib computes for a deterministic set of string
pairs, so the Rust port can be checked for exact agreement:

* "pairs": SequenceMatcher(None, a, b) -> ratio (also as IEEE-754 bits),
  quick_ratio, real_quick_ratio, find_longest_match over the full ranges and
  get_matching_blocks.
* "close": get_close_matches(word, possibilities, n, cutoff).
* "mmad": MMAD's parse_answer (re.findall(r'\\b([A-E])\\b') and the
  get_close_matches fallback), for the MMAD modes of src/echo/extract.rs.

Run from the repository root with CPython 3.11 (difflib and re behaviour,
including the Unicode tables behind \\w, are version dependent):

    python3 scripts/gen_difflib_cases.py

The output is deterministic: a fixed seed, no set/dict iteration order
dependence, and sorted JSON keys.
"""

import json
import random
import re
import struct
import sys
from difflib import SequenceMatcher, get_close_matches
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "difflib_cases.json"

SEED = 20240611

MMAD_LETTER = re.compile(r"\b([A-E])\b")


def bits(x):
    """The IEEE-754 bit pattern of a float, so Rust can compare exactly."""
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def pair_case(a, b):
    s = SequenceMatcher(None, a, b)
    r = s.ratio()
    m = s.find_longest_match(0, len(a), 0, len(b))
    return {
        "a": a,
        "b": b,
        "ratio": r,
        "ratio_bits": bits(r),
        "quick_ratio_bits": bits(s.quick_ratio()),
        "real_quick_ratio_bits": bits(s.real_quick_ratio()),
        "longest": [m.a, m.b, m.size],
        "blocks": [[x.a, x.b, x.size] for x in s.get_matching_blocks()],
    }


def close_case(word, possibilities, n=1, cutoff=0.0):
    return {
        "word": word,
        "possibilities": possibilities,
        "n": n,
        "cutoff": cutoff,
        "result": get_close_matches(word, possibilities, n=n, cutoff=cutoff),
    }


def mmad_case(reply, options):
    """MMAD's parse_answer, then gpt_answer as its scripts take it."""
    answers = MMAD_LETTER.findall(reply)
    closest = None
    if not answers and options:
        values = [v for _, v in options]
        matches = get_close_matches(reply, values, n=1, cutoff=0.0)
        if matches:
            for key, value in options:
                if value == matches[0]:
                    closest = key
                    break
    return {
        "reply": reply,
        "options": [[k, v] for k, v in options],
        "regex": answers,
        "closest": closest,
    }


def rand_str(rng, alphabet, lo, hi):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


ALPHABETS = [
    "ab",
    "abc",
    "abcd ",
    "abcdefghijklmnopqrstuvwxyz ",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,:;!?()*-_\n",
    "äöüßéèàç漢字日本語😀🚀\u0301\u200d ",
    "aé漢😀",
]

HAND_PAIRS = [
    ("", ""),
    ("", "a"),
    ("a", ""),
    ("a", "a"),
    ("abcd", "bcde"),
    ("abxcd", "abcd"),
    (" abcd", "abcd abcd"),
    ("qabxcd", "abycdf"),
    ("private Thread currentThread;", "private volatile Thread currentThread;"),
    ("aaaa", "aa"),
    ("aa", "aaaa"),
    ("abab", "baba"),
    ("Yes", "No"),
    ("No", "no"),
    ("A jagged break", "D: A jagged break"),
    ("e\u0301", "\u00e9"),
    ("😀😀😀", "😀"),
    ("a" * 300, "a" * 300),
    ("a" * 199, "a" * 199),
    ("a" * 200, "a" * 200),
    ("a" * 201, "b" + "a" * 200),
    ("x" + "a" * 250 + "y", "a" * 250),
    ("ab" * 150, "ba" * 150),
    ("abc" * 100, "abc" * 67),
    ("The quick brown fox jumps over the lazy dog. " * 6,
     "The quick brown cat jumps over the lazy fox. " * 6),
    ("Scratch", "There is a visible scratch on the surface " * 6),
]

CLOSE_HAND = [
    ("appel", ["ape", "apple", "peach", "puppy"], 3, 0.6),
    ("wheel", ["while", "with", "yield", "else"], 1, 0.0),
    ("abc", ["abd", "abe", "xbc"], 1, 0.0),
    ("abc", ["xbc", "abe", "abd"], 1, 0.0),
    ("abc", ["abd", "abe", "xbc"], 3, 0.0),
    ("", ["", "a", "b"], 1, 0.0),
    ("", ["a", "b"], 1, 0.0),
    ("x", [], 1, 0.0),
    ("x", ["", ""], 1, 0.0),
    ("zzz", ["a", "b", "c"], 1, 0.0),
    ("zzz", ["a", "b", "c"], 2, 0.0),
    ("Yes", ["Yes", "No"], 1, 0.0),
    ("No", ["Yes", "No"], 1, 0.0),
    ("no", ["Yes", "No"], 1, 0.0),
    ("There is no defect.", ["Yes", "No"], 1, 0.0),
    ("The object looks fine to me.", ["Yes", "No"], 1, 0.0),
    ("a scratch is visible", ["Crack", "Scratch", "Dent", "No defect"], 1, 0.0),
    ("jagged break", ["A jagged break", "A smooth cut", "A hole", "A stain"], 1, 0.0),
    ("It looks like a smooth cut near the top edge of the object, with some discoloration "
     "around it. The rest of the surface appears to be intact and uniform in colour, and "
     "I can not see any other irregularities on this sample image at all.",
     ["A jagged break", "A smooth cut", "A hole", "A stain"], 1, 0.0),
    ("é", ["e\u0301", "\u00e9", "e"], 1, 0.0),
    ("ab", ["ba", "ab", "ab"], 1, 0.0),
    ("ab", ["ba", "aa", "bb"], 1, 0.0),
    ("ab", ["ba", "aa", "bb"], 3, 0.0),
    ("abcdefgh", ["abcdefgh", "abcdefgh"], 2, 0.0),
]

MMAD_HAND = [
    ("B", [("A", "Yes"), ("B", "No")]),
    ("D: A jagged break", [("A", "A smooth cut"), ("D", "A jagged break")]),
    ("Answer: C.", []),
    ("no defect", [("A", "Yes"), ("B", "No")]),
    ("", [("A", "Yes"), ("B", "No")]),
    ("", []),
    ("ÀA", []),
    ("éB", []),
    ("Bé", []),
    ("A\u0301", []),
    ("\u0301A", []),
    ("_C_", []),
    ("1D2", []),
    ("A²", []),
    ("²A", []),
    ("Ⓐ A", []),
    ("A\u200d", []),
    ("A\u203f", []),
    ("A・B", []),
    ("漢A字", []),
    ("A-B", []),
    ("(E)", []),
    ("F G H", [("A", "F"), ("B", "G")]),
    ("a b c", [("A", "a"), ("B", "b")]),
]


def main():
    if sys.version_info[:2] != (3, 11):
        print("warning: fixture is meant to be generated with CPython 3.11", file=sys.stderr)
    rng = random.Random(SEED)

    pairs = [pair_case(a, b) for a, b in HAND_PAIRS]
    for i in range(260):
        alphabet = ALPHABETS[i % len(ALPHABETS)]
        if i % 5 == 4:
            # Long enough on the b side to trigger the autojunk heuristic.
            a = rand_str(rng, alphabet, 0, 260)
            b = rand_str(rng, alphabet, 200, 320)
        elif i % 5 == 3:
            # A b derived from a, so there are long matches to find.
            a = rand_str(rng, alphabet, 0, 60)
            b = list(a)
            for _ in range(rng.randint(0, 6)):
                pos = rng.randint(0, len(b))
                op = rng.randint(0, 2)
                if op == 0 or not b:
                    b.insert(pos, rng.choice(alphabet))
                elif op == 1:
                    del b[min(pos, len(b) - 1)]
                else:
                    b[min(pos, len(b) - 1)] = rng.choice(alphabet)
            b = "".join(b)
        else:
            a = rand_str(rng, alphabet, 0, 25)
            b = rand_str(rng, alphabet, 0, 25)
        pairs.append(pair_case(a, b))

    close = [close_case(*c) for c in CLOSE_HAND]
    for i in range(90):
        alphabet = ALPHABETS[i % 4]  # small alphabets make ratio ties common
        if i % 6 == 5:
            word = rand_str(rng, alphabet, 200, 300)  # a long reply: autojunk applies
        else:
            word = rand_str(rng, alphabet, 0, 12)
        possibilities = [rand_str(rng, alphabet, 0, 10) for _ in range(rng.randint(0, 6))]
        n = 1 if i % 3 else rng.randint(1, 4)
        close.append(close_case(word, possibilities, n=n, cutoff=0.0))

    mmad = [mmad_case(r, o) for r, o in MMAD_HAND]
    letters_alphabet = "ABCDEabcde é_1²\u0301.:()*\n"
    for i in range(60):
        reply = rand_str(rng, letters_alphabet if i % 2 else ALPHABETS[3], 0, 30)
        options = [(k, rand_str(rng, ALPHABETS[3], 0, 8)) for k in "ABCDE"[: rng.randint(0, 5)]]
        mmad.append(mmad_case(reply, options))

    data = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "pairs": pairs,
        "close": close,
        "mmad": mmad,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT.name}: {len(pairs)} pairs, {len(close)} close, {len(mmad)} mmad, "
          f"{len(text.encode('utf-8'))} bytes")


if __name__ == "__main__":
    main()
