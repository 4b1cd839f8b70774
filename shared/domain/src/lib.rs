//! edge-auth's domain: the use cases, their rules and the ports they need.
//!
//! Nothing here knows about Spin, HTTP or Redis wire formats: the crate builds and tests
//! natively, and the function crates plug adapters (see `edge-auth-spin`) into the ports.
//!
//! # Layout
//! - [`login`]: `send-email-code` and `confirm-email-code` (use cases and ports).
//! - [`sessions`]: the session lifecycle behind the internal API.
//! - [`gateway`]: `execute-command`, the signed-command gateway.
//! - [`push`]: `subscribe-events` (a signed event stream per device) and publishing.
//! - [`challenge`]: the challenge state machine and policy.
//! - [`email`], [`public_key`], [`code`], [`ids`]: parsed newtypes for everything a client sends.
//! - [`crypto`]: the server key: code MACs and address tags.
//! - [`rate_limit`]: edge budgets; [`client`]: which client a request counts against.
//! - [`health`]: the liveness check behind `GET /api/v1/health`.
//! - [`error`]: the public error shape every route answers with; [`json`]: request bodies
//!   are JSON objects.
//! - [`random`], [`time`]: the CSPRNG port and Unix-millisecond timestamps.

pub mod challenge;
pub mod client;
pub mod code;
pub mod crypto;
pub mod email;
pub mod error;
pub mod gateway;
pub mod health;
pub mod ids;
pub mod json;
pub mod login;
pub mod public_key;
pub mod push;
pub mod random;
pub mod rate_limit;
pub mod sessions;
pub mod time;
