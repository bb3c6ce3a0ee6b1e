# Installs Debian packages that are missing; does nothing when all are there.
# Usage: ensure_packages PACKAGE...
ensure_packages() {
    local missing=()
    local p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "error: missing packages ${missing[*]}, and neither root nor sudo is available to install them" >&2
            return 1
        fi
    fi
    echo "installing ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not installed; install Rust (https://rustup.rs) first" >&2
        return 1
    fi
}
