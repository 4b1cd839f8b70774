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
    let mut packages = Vec::new();
    for manifest in MANIFESTS {
        for package in packages_of(&root.join(manifest))? {
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--target", "wasm32-wasip2", "--release"]);
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
