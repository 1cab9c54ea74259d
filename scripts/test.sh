#!/usr/bin/env bash
# The project's whole check, exactly what CI runs: formatting, lints, the full test
# suite with the GUI, and the core alone without it. Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_tools

# A CI clone builds once: incremental caches would only cost disk there.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi

step() { printf '\n==> %s\n' "$*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
step "cargo test (with the GUI)"
cargo test --all-targets --locked
step "cargo test --no-default-features (core without egui)"
cargo test --no-default-features --locked
step "disk used by the build"
du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null || true
