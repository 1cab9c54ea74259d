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
# The two passes share every compiled dependency (Cargo.toml's feature pins), so the
# second builds only this crate again. The integration tests (tests/it) drive the
# command line, which the GUI feature leaves alone, so they run once, in the core
# pass; the GUI pass runs what the feature adds: the unit tests with the app's
# modules, the binary's, and the app's own tests (tests/gui).
step "cargo test with the GUI: unit tests, the app's tests (tests/gui), examples"
cargo test --locked --lib --bins --examples --test gui
step "cargo test --no-default-features (core without egui): everything"
cargo test --no-default-features --locked
step "disk used by the build"
du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null || true
