//! The signed-command gateway (`POST /api/v1/gateway/execute-command`): a device signs a
//! command with the key it bound at login; the gateway proves it fresh, unreplayed,
//! within budget and from that device, calls the team's backend (or answers a reserved
//! `gateway.*` type itself), and signs the answer.
//!
//! The wire contract and canonical encodings are `edge-auth-protocol`'s; this module adds
//! the rules: parsing, the order of checks, budgets, dispatch and the error vocabulary.
//!
//! # Layout
//! - [`command`]: parsing and verifying a signed command (CPU only, before any I/O).
//! - [`settings`]: gateway keys, freshness window, payload limit, budgets, backend table.
//! - [`ports`]: the command gate (the two Redis scripts) and the backend.
//! - [`execute`]: the use case, its plain errors and its signed refusals.

pub mod command;
pub mod execute;
pub mod ports;
pub mod settings;

#[cfg(test)]
mod tests;
