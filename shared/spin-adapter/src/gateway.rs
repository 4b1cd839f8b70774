//! What the gateway functions share: their settings from Spin variables, and how they
//! answer a refusal that is not signed.

use std::collections::HashMap;

use anyhow::Context;
use edge_auth_domain::error::PublicError;
use edge_auth_domain::gateway::command::max_body_bytes;
use edge_auth_domain::gateway::execute::CommandError;
use edge_auth_domain::gateway::settings::{GatewaySettings, max_payload_setting};

use crate::settings::optional;

/// Every variable the gateway settings read; a component declares the ones it needs.
const NAMES: [&str; 20] = [
    "gateway_signing_key",
    "gateway_key_id",
    "gateway_next_public_key",
    "gateway_next_key_id",
    "gateway_previous_signing_key",
    "gateway_previous_key_id",
    "command_freshness_window_seconds",
    "command_max_payload_bytes",
    "command_rate_limit_per_session",
    "command_rate_limit_per_user",
    "command_rate_limit_per_message_type",
    "command_rate_limit_per_client",
    "backend_routes",
    "backend_url",
    "backend_token",
    "backend_connect_timeout_ms",
    "backend_first_byte_timeout_ms",
    "trusted_proxies",
    "trusted_proxy_header",
    "client_ipv6_prefix",
];

/// Reads and checks the gateway settings.
///
/// # Errors
/// A variable that cannot be read or a value out of range (the message names it).
pub fn gateway_settings() -> anyhow::Result<GatewaySettings> {
    let mut values = HashMap::new();
    for name in NAMES {
        if let Some(value) = optional(name)? {
            values.insert(name, value);
        }
    }
    GatewaySettings::from_settings(|name| values.get(name).cloned())
        .context("invalid gateway settings")
}

/// How much of a command's body execute-command reads (a [`Route`](crate::http::Route)'s
/// body limit, see [`max_body_bytes`]): a longer body cannot hold a payload
/// `command_max_payload_bytes` allows, however its JSON is escaped, so it is refused
/// (`413`) before it is parsed.
///
/// # Errors
/// The setting cannot be read or is out of range: the route's answer for its settings,
/// `503`, with the cause logged.
pub fn command_body_limit() -> Result<usize, PublicError> {
    const NAME: &str = "command_max_payload_bytes";
    let read = || -> anyhow::Result<usize> {
        let raw = optional(NAME).with_context(|| format!("reading {NAME}"))?;
        let get = |name: &str| if name == NAME { raw.clone() } else { None };
        max_payload_setting(&get).context("invalid gateway settings")
    };
    read()
        .map(max_body_bytes)
        .map_err(|e| plain_error("execute-command", &e.into()))
}

/// The plain error answer of a gateway route (`route`: its name in the log) to `err`,
/// with what an operator needs logged first: the cause of an unexpected failure, or the
/// setting whose absence keeps the route answering `503`.
pub fn plain_error(route: &str, err: &CommandError) -> PublicError {
    match err {
        CommandError::NotConfigured(name) => crate::request_log::error(&format!(
            "{route}: {name} is not set; the gateway answers 503 until it is"
        )),
        CommandError::Unexpected(cause) => {
            crate::http::log_cause(&format!("{route} failed"), cause)
        }
        _ => {}
    }
    crate::public_errors::command(err)
}
