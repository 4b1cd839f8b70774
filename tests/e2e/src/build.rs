//! Builds the Wasm components once per test run.
//!
//! The packages come from the `build.command` of every component in the manifests, so
//! `spin.toml` stays the one list of what to build.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

use crate::workspace_root;

/// The manifests whose components the tests run.
pub const MANIFESTS: [&str; 2] = ["spin.toml", "tests/fixtures/spin.toml"];

/// Builds every component of [`MANIFESTS`] with one `cargo build`, the first time it is
/// called in this process; later calls return the first outcome.
///
/// # Errors
/// A manifest that cannot be read, or a failed build (its output went to stderr).
pub fn ensure_components_built() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_all().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_all() -> anyhow::Result<()> {
    let root = workspace_root();
    refuse_unfit_environment(&root)?;
    let mut packages = Vec::new();
    for manifest in MANIFESTS {
        for package in packages_of(&root.join(manifest))? {
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
    }
    let mut command = nested_cargo(&root);
    command.args(["build", "--target", "wasm32-wasip2", "--release"]);
    for package in &packages {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .context("running cargo build for the components")?;
    if !status.success() {
        bail!("building components {packages:?} failed: {status}");
    }
    Ok(())
}

/// As `ensure_target_dir` in `infra/components.sh`: the manifests load the components
/// from `./target` (as `spin up` does), so a build elsewhere would leave the tests running
/// stale components, or none; and cargo ignores `.cargo/config.toml`'s link arguments (the
/// components' stack and heap sizes) under `RUSTFLAGS`, so such a build would fail the
/// memory tests unexplained.
///
/// # Errors
/// Says which variable to unset.
fn refuse_unfit_environment(root: &Path) -> anyhow::Result<()> {
    let target = std::fs::canonicalize(root.join("target")).unwrap_or_else(|_| root.join("target"));
    for name in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        let Some(dir) = std::env::var_os(name).filter(|d| !d.is_empty()) else {
            continue;
        };
        // A relative one is taken from the workspace root, where the documented commands
        // run.
        let dir = root.join(&dir);
        if std::fs::canonicalize(&dir).unwrap_or(dir) != target {
            bail!(
                "{name} is set: the manifests load components from ./target; unset it (or point it there)"
            );
        }
    }
    for name in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        if std::env::var_os(name).is_some_and(|v| !v.is_empty()) {
            bail!(
                "{name} is set: cargo would then ignore .cargo/config.toml's link arguments for \
                 the components (their stack and heap sizes); unset it"
            );
        }
    }
    Ok(())
}

/// The `-p <package>` of each component's build command.
fn packages_of(manifest: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let mut packages = Vec::new();
    let components = doc.get("component").and_then(toml::Value::as_table);
    for component in components.into_iter().flat_map(|t| t.values()) {
        let Some(command) = component
            .get("build")
            .and_then(|b| b.get("command"))
            .and_then(toml::Value::as_str)
        else {
            continue;
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] == "-p" && !packages.iter().any(|p| p == pair[1]) {
                packages.push(pair[1].to_string());
            }
        }
    }
    Ok(packages)
}

/// `cargo` (the one running the tests), in `root`, for a build run from a test.
pub fn nested_cargo(root: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command.current_dir(root);
    for_nested_cargo(&mut command);
    command
}

/// Leaves out of `command`'s environment what cargo set for the test binary itself
/// (`CARGO_PKG_*`, `CARGO_MANIFEST_*`, `OUT_DIR`, ...). A cargo run from a test would see
/// them as changed inputs of build scripts that watch them (ring's watches
/// `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, `OUT_DIR` and more): it reran ring's, and the
/// next test build rebuilt ring and its dependents (rustls, reqwest, redis, ...), some
/// 30 s of every later CI pass.
pub fn for_nested_cargo(command: &mut Command) {
    const SET_FOR_TARGETS: [&str; 7] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else {
            continue;
        };
        if SET_FOR_TARGETS.contains(&name)
            || ["CARGO_PKG_", "CARGO_CFG_", "CARGO_BIN_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
}
