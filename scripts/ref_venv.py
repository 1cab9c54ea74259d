#!/usr/bin/env python3
"""The one virtual environment every Python reference in `scripts/` runs in.

PyTorch, transformers, faiss and PIL are the references our numbers are checked
and timed against. They are installed into a virtual environment of this
project's own (default `target/ref-venv` in the repository, or `$ECHO_REF_VENV`),
never into the system interpreter (Debian's refuses `pip install` anyway).

Two ways to use it:

* from a script: `import ref_venv; ref_venv.reexec()` at the top of `main()`
  re-runs the script inside the environment, creating it on first use;
* from a shell script: `PY="$(python3 scripts/ref_venv.py)"` prints the
  environment's interpreter after making sure it has every package.

PyPI's Linux torch brings several GB of CUDA libraries; point pip at a CPU-only
wheel index (`PIP_EXTRA_INDEX_URL`) where one is reachable.
"""

import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Everything any reference script imports; one environment keeps one torch on disk.
PACKAGES = [
    "torch",
    "torchvision",
    "transformers>=5",
    "safetensors",
    "numpy",
    "pillow",
    "faiss-cpu",
    "tokenizers",
    "jinja2",
]
MODULES = "torch, torchvision, transformers, safetensors, numpy, PIL, faiss, tokenizers, jinja2"


def location() -> Path:
    explicit = os.environ.get("ECHO_REF_VENV") or os.environ.get("TINY_QWEN3VL_VENV")
    return Path(explicit) if explicit else REPO / "target" / "ref-venv"


def ensure() -> Path:
    """Creates the environment and installs what is missing; returns its python."""
    target = location()
    python = target / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(target)
    probe = subprocess.run([str(python), "-c", f"import {MODULES}"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    return python


def inside() -> bool:
    return Path(sys.prefix).resolve() == location().resolve()


def reexec() -> None:
    """Re-runs the calling script inside the environment (no-op when already there)."""
    if inside():
        return
    python = ensure()
    script = os.path.abspath(sys.argv[0])
    os.execv(str(python), [str(python), script, *sys.argv[1:]])


if __name__ == "__main__":
    print(ensure())
