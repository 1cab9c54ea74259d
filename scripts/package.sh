#!/usr/bin/env bash
# Builds the installable Echo Workbench into dist/ and checks it:
#
#   dist/echo-workbench_<version>-1_<arch>.deb     the Debian package (cargo-deb)
#   dist/echo-workbench-<version>.debug            the binary's debug symbols (the
#                                                  packaged binary is stripped and
#                                                  names this file in .gnu_debuglink)
#
# The check unpacks the package into a temporary root (dpkg -x, no root needed) and
# runs the installed program there, from `/`, with no variable pointing at it:
# --version, `dataset stats` on the bundled sample (found through the install
# layout, not the source tree), `score` on the bundled answers file, and, where
# xvfb-run is installed, the window's first seconds.
#
# No AppImage: its runtime and appimagetool are published only as binaries on
# GitHub releases, which this build's package sources (Debian, crates.io, PyPI,
# npm) do not carry, and we do not commit binaries we did not build.
#
# Usage: scripts/package.sh            build (release, about 16 minutes on 2 cores) and check
#        scripts/package.sh --check-only DEB   check an existing package
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

check_deb() {
    local deb="$1" root status
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' RETURN
    dpkg -x "$deb" "$root"
    local bin="$root/usr/bin/echo-workbench"
    local share="$root/usr/share/echo-workbench"
    echo "check: unpacked $(basename "$deb") ($(du -sh "$root" | cut -f1) installed)"
    for f in "$share/assets/sample/mmad.json" "$share/assets/experts.toml" \
        "$share/knowledge/domain_knowledge.json" "$share/assets/prompts/echo" \
        "$root/usr/share/applications/echo-workbench.desktop" \
        "$root/usr/share/icons/hicolor/scalable/apps/echo-workbench.svg"; do
        [ -e "$f" ] || { echo "check: missing ${f#"$root"}" >&2; return 1; }
    done
    if file "$bin" | grep -q 'not stripped'; then
        echo "check: the packaged binary is not stripped" >&2; return 1
    fi
    local version
    version="$(cd / && env -u ECHO_WORKBENCH_DATA "$bin" --version)"
    echo "check: $version"
    [[ "$version" == *"(commit "* ]] || { echo "check: --version names no commit" >&2; return 1; }
    local stats found
    stats="$(cd / && env -u ECHO_WORKBENCH_DATA "$bin" dataset stats 2>"$root/stats.err")"
    found="$(cat "$root/stats.err")"
    [[ "$found" == *"$share/assets/sample"* ]] || {
        echo "check: the installed binary did not find its own sample: $found" >&2; return 1
    }
    [[ "$stats" == *"210 questions"* ]] || { echo "check: dataset stats: $stats" >&2; return 1; }
    echo "check: dataset stats on the bundled sample: ${stats%%$'\n'*}"
    local score
    score="$(cd / && "$bin" score "$share/assets/answers/sample_first_option.json" --ci-resamples 0 --format json)"
    python3 - "$score" <<'PY' || return 1
import json, sys
v = json.loads(sys.argv[1])
avg = v["table"]["Average"]["Average"]
assert abs(avg - 30.51485551485551) < 1e-9, avg
print(f"check: score on the bundled answers: Average {avg:.2f}")
PY
    if command -v xvfb-run >/dev/null 2>&1; then
        local home
        home="$(mktemp -d)"
        set +e
        (cd / && HOME="$home" timeout 8 xvfb-run -a "$bin" gui >"$home/gui.log" 2>&1)
        status=$?
        set -e
        # 124: still running when the timeout ended it, i.e. the window came up and stayed.
        if [ "$status" -ne 124 ]; then
            echo "check: the window exited with $status:" >&2
            tail -20 "$home/gui.log" >&2
            return 1
        fi
        echo "check: the window ran 8 s under Xvfb from /"
        rm -rf "$home"
    else
        echo "check: xvfb-run not installed; window not started"
    fi
    echo "check: passed"
}

if [ "${1:-}" = "--check-only" ]; then
    check_deb "$2"
    exit 0
fi

ensure_build_tools
command -v objcopy >/dev/null 2>&1 || apt_install binutils
command -v dpkg-deb >/dev/null 2>&1 || apt_install dpkg
command -v file >/dev/null 2>&1 || apt_install file
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi

cargo build --release --locked
version="$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')"
mkdir -p dist target/package
debug="dist/echo-workbench-$version.debug"
objcopy --only-keep-debug target/release/echo-workbench "$debug"
# Stripped here (cargo-deb is told not to strip again) so that the link to the
# symbols file survives.
objcopy --strip-all --add-gnu-debuglink="$debug" \
    target/release/echo-workbench target/package/echo-workbench
cargo deb --no-build --no-strip --output dist/
deb="$(ls -t dist/*.deb | head -1)"
check_deb "$deb"
echo
for f in "$deb" "$debug"; do
    echo "$(du -h "$f" | cut -f1)  $f"
done
