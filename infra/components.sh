# Sourced by infra/run, infra/test and .ci/run: the cargo packages of the components,
# read from the build commands in the manifests (spin.toml stays the one list).
component_packages() {
    grep -ho -- '--release -p [a-z0-9-]*' "$@" | awk '{print $3}' | sort -u
}
