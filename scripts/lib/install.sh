# Puts the `hydra` binary on the PATH as a symbolic link: in /usr/local/bin
# as root, else in ~/.local/bin; says where, and how to run it when that
# directory is not on the PATH.
# Usage: put_on_path BINARY
put_on_path() {
    local bin
    if [ "$(id -u)" -eq 0 ]; then
        bin=/usr/local/bin
    else
        bin="$HOME/.local/bin"
    fi
    mkdir -p "$bin"
    ln -sf "$1" "$bin/hydra"
    case ":$PATH:" in
        *":$bin:"*) echo "hydra is installed as $bin/hydra" >&2 ;;
        *) echo "hydra is installed as $bin/hydra; $bin is not on your PATH, so run it as $bin/hydra" >&2 ;;
    esac
}
