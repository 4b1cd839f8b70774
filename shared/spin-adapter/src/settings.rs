//! Login settings from Spin variables.

use std::collections::HashMap;

use anyhow::Context;
use edge_auth_domain::crypto::ServerKey;
use edge_auth_domain::login::settings::LoginSettings;
use spin_sdk::variables::{self, Error};

/// Every variable the login settings read; a component declares the ones it needs.
const NAMES: [&str; 20] = [
    "code_hmac_key",
    "code_hmac_previous_key",
    "address_tag_key",
    "code_length",
    "challenge_ttl_seconds",
    "challenge_max_attempts",
    "resend_interval_seconds",
    "confirm_idempotency_seconds",
    "rate_limit_per_client",
    "rate_limit_per_address",
    "rate_limit_wrong_codes_per_client",
    "session_limit_policy",
    "failed_confirm_cap",
    "failed_confirm_lockout_seconds",
    "trusted_proxies",
    "trusted_proxy_header",
    "client_ipv6_prefix",
    "session_lifetime_seconds",
    "session_idle_timeout_seconds",
    "user_directory",
];

/// Reads a variable: `Ok(None)` when this component does not declare it or it is empty.
///
/// # Errors
/// The provider failed or the name is invalid.
pub fn optional(name: &str) -> anyhow::Result<Option<String>> {
    match variables::get(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(Error::Undefined(_)) => Ok(None),
        Err(e) => {
            Err(anyhow::Error::new(e)).with_context(|| format!("reading Spin variable `{name}`"))
        }
    }
}

/// A timeout setting in milliseconds, 1 to 60000 as the backend's are, or `default_ms`
/// when not set.
///
/// # Errors
/// The variable cannot be read, or holds anything but a whole number in range.
pub fn timeout(name: &'static str, default_ms: u64) -> anyhow::Result<std::time::Duration> {
    let raw = optional(name)?;
    let ms = edge_auth_domain::login::settings::number(&|_| raw.clone(), name, 1, 60_000)?
        .unwrap_or(default_ms);
    Ok(std::time::Duration::from_millis(ms))
}

/// The key of address tags, which is what `block-user` and `unblock-user` need of the
/// server keys (not the previous code key: a typo in it must not disable blocking).
///
/// # Errors
/// A variable that cannot be read, `code_hmac_key` missing, or a secret too short.
pub fn tag_key() -> anyhow::Result<ServerKey> {
    let mut values = HashMap::new();
    for name in ["code_hmac_key", "address_tag_key"] {
        if let Some(value) = optional(name)? {
            values.insert(name, value);
        }
    }
    edge_auth_domain::login::settings::server_key(&|name| values.get(name).cloned())
        .context("invalid address tag key")
}

/// Reads and checks the login settings.
///
/// # Errors
/// A variable that cannot be read or a value out of range (the message names it).
pub fn login_settings() -> anyhow::Result<LoginSettings> {
    let mut values = HashMap::new();
    for name in NAMES {
        if let Some(value) = optional(name)? {
            values.insert(name, value);
        }
    }
    LoginSettings::from_settings(|name| values.get(name).cloned()).context("invalid login settings")
}
