//! Session lifecycle for the trusted internal API: read, list, revoke, revoke all, block,
//! unblock, audit.
//!
//! Every change happens in one atomic store step that updates the session record (source
//! of truth), its gateway projection, the user's lifecycle stream (which the push stream
//! reads to close live connections) and the audit stream. Revoking everything a user has
//! runs in bounded batches so a user with tens of thousands of sessions never blocks
//! Redis for long.
//!
//! # Layout
//! - [`model`]: session records, statuses, pages, audit records.
//! - [`input`]: parsed newtypes for what operators send (reason codes, actors, targets).
//! - [`ports`]: the [`ports::SessionStore`] port.
//! - [`auth`]: the internal bearer token check (constant time).
//! - [`usecases`]: one function per route.

pub mod auth;
pub mod input;
pub mod model;
pub mod ports;
pub mod usecases;

#[cfg(test)]
mod tests;
