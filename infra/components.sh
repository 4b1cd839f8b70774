# Sourced by infra/run, infra/test, infra/bench and .ci/run.

# The cargo packages of the components, read from the build commands in the manifests
# (spin.toml stays the one list).
component_packages() {
    grep -ho -- '--release -p [a-z0-9-]*' "$@" | awk '{print $3}' | sort -u
}

# spin.toml (like every manifest here) loads the components from ./target, as `spin up`
# does: a target directory elsewhere (CARGO_TARGET_DIR, or CARGO_BUILD_TARGET_DIR, which
# cargo reads the same way) would build them where nothing loads them, and the run would
# serve stale ones, or none. And the components' stack and heap sizes are link arguments
# in .cargo/config.toml, which cargo ignores when RUSTFLAGS (or CARGO_ENCODED_RUSTFLAGS)
# is set: such a build would run with a 1 MiB stack and fail the memory tests unexplained.
ensure_target_dir() {
    local name
    for name in CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR; do
        if [ -n "${!name:-}" ] && [ "$(realpath -m "${!name}")" != "$(realpath -m target)" ]; then
            echo "$name=${!name}: the manifests load components from ./target; unset it (or point it there)" >&2
            exit 2
        fi
    done
    for name in RUSTFLAGS CARGO_ENCODED_RUSTFLAGS; do
        if [ -n "${!name:-}" ]; then
            echo "$name is set: cargo would then ignore .cargo/config.toml's link arguments for the components (their stack and heap sizes); unset it" >&2
            exit 2
        fi
    done
}

# Installs Debian packages, with sudo when not root.
apt_install() {
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq "$@"
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq "$@"
    fi
}

# redis-server (Debian's package) when it is missing.
ensure_redis_server() {
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "redis-server is missing; installing it with apt-get" >&2
        apt_install redis-server
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
    # Likewise clippy and rustfmt, which CI runs last.
    if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
        rustup component add clippy
    fi
    if ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then
        rustup component add rustfmt
    fi
}

# What infra/run serves: spin.toml's components and our host (with the workspace's
# feature set, as the tests build it, so a tested checkout reuses most of the build).
build_app() {
    local packages=() p
    for p in $(component_packages spin.toml); do packages+=(-p "$p"); done
    echo "Building components: ${packages[*]}"
    cargo build --target wasm32-wasip2 --release "${packages[@]}"
    cargo build --bin edge-auth-host
}
