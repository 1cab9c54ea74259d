# Helpers for scripts/*.sh: install the few Debian packages the build or the window
# needs, only when they are missing (and only where we are allowed to).

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@";
    elif command -v sudo >/dev/null 2>&1; then sudo "$@";
    else echo "need root to run: $*" >&2; return 1; fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || { echo "please install: $*" >&2; return 1; }
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

# A C compiler for the few crates with C parts (ring, zstd-free TLS, image codecs).
ensure_build_tools() {
    if ! command -v cc >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
        apt_install build-essential
    fi
    command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
}

# Libraries the window opens at run time (X11 or Wayland, OpenGL, keyboard maps).
ensure_gui_runtime() {
    command -v ldconfig >/dev/null 2>&1 || return 0
    local missing=()
    ldconfig -p | grep -q 'libGL.so.1' || missing+=(libgl1 libegl1)
    ldconfig -p | grep -q 'libxkbcommon.so.0' || missing+=(libxkbcommon0 libxkbcommon-x11-0)
    ldconfig -p | grep -q 'libX11.so.6' || missing+=(libx11-6 libxcursor1 libxrandr2 libxi6)
    ldconfig -p | grep -q 'libwayland-client.so.0' || missing+=(libwayland-client0)
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}" || true; fi
}
