//! Spin variables.

use anyhow::Context;

/// Reads a component variable (declared under `[component.<id>.variables]`).
///
/// # Errors
/// The variable is not defined for this component or its provider failed.
pub fn variable(name: &str) -> anyhow::Result<String> {
    spin_sdk::variables::get(name).with_context(|| format!("reading Spin variable `{name}`"))
}
