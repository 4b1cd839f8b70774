//! edge-auth's domain: the use cases, their rules and the ports they need.
//!
//! Nothing here knows about Spin, HTTP or Redis wire formats: the crate builds and tests
//! natively, and the function crates plug adapters (see `edge-auth-spin`) into the ports.
//!
//! # Layout
//! - [`health`]: the liveness check behind `GET /api/v1/health`.
//! - [`error`]: the public error shape every route answers with.

pub mod error;
pub mod health;
