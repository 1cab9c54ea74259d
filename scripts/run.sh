#!/usr/bin/env bash
# Builds the release binary (first time: about 15-20 minutes on 2 cores) and opens
# the workbench on the bundled sample dataset. Extra arguments go to the binary,
# e.g. `scripts/run.sh score answers.json`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_tools
if [ "$#" -eq 0 ]; then ensure_gui_runtime; fi
cargo build --release --locked
exec target/release/echo-workbench "$@"
