# Sourced by infra/run, infra/test, infra/bench and .ci/run.

# The cargo packages of the components, read from the build commands in the manifests
# (spin.toml stays the one list).
component_packages() {
    grep -ho -- '--release -p [a-z0-9-]*' "$@" | awk '{print $3}' | sort -u
}

# The toolchain pinned in rust-toolchain.toml and its wasm32-wasip2 target (already on our
# machines; installed if not). rustup adds a pinned target only when it installs the
# toolchain itself, so a toolchain that was already there may lack the target.
ensure_toolchain() {
    local channel
    channel=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
    if ! rustup toolchain list | grep -q "^$channel"; then
        rustup toolchain install "$channel" --profile minimal -c clippy,rustfmt
    fi
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
}
