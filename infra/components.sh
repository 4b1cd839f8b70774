# Sourced by infra/run, infra/test, infra/bench and .ci/run.

# The cargo packages of the components, read from the build commands in the manifests
# (spin.toml stays the one list).
component_packages() {
    grep -ho -- '--release -p [a-z0-9-]*' "$@" | awk '{print $3}' | sort -u
}

# spin.toml (like every manifest here) loads the components from ./target, as `spin up`
# does: a CARGO_TARGET_DIR elsewhere would build them where nothing loads them, and the
# run would serve stale ones, or none.
ensure_target_dir() {
    if [ -n "${CARGO_TARGET_DIR:-}" ] && [ "$(realpath -m "$CARGO_TARGET_DIR")" != "$(realpath -m target)" ]; then
        echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR: the manifests load components from ./target; unset it (or point it there)" >&2
        exit 2
    fi
}

# Installs Debian packages, with sudo when not root.
apt_install() {
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq "$@"
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq "$@"
    fi
}

# python3 with a working venv module: Debian ships the module without ensurepip (in
# python3-venv), which making a venv needs.
ensure_python_venv() {
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        echo "python3 or its venv module is missing; installing them with apt-get" >&2
        apt_install python3 python3-venv
    fi
}

# The toolchain pinned in rust-toolchain.toml and its wasm32-wasip2 target (already on our
# machines; installed if not). rustup adds a pinned target only when it installs the
# toolchain itself, so a toolchain that was already there may lack the target. A machine
# without rustup gets Debian's package (Debian 13 and later; older releases: install it
# from rustup.rs first), and a C compiler for the crates that build C code.
ensure_toolchain() {
    local channel
    if ! command -v cc >/dev/null 2>&1; then
        apt_install build-essential
    fi
    if ! command -v rustup >/dev/null 2>&1; then
        apt_install rustup || {
            echo "rustup is missing and Debian has no package for it here: install it from https://rustup.rs, then run this again" >&2
            return 1
        }
    fi
    channel=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
    if ! rustup toolchain list | grep -q "^$channel"; then
        rustup toolchain install "$channel" --profile minimal -c clippy,rustfmt
    fi
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
}
