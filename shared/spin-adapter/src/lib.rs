//! Adapters from edge-auth's domain ports to Spin's host interfaces (spin-sdk 5.2).
//!
//! Only this crate and the function crates depend on spin-sdk: switching SDKs later
//! touches the adapters, not the domain.
//!
//! # Layout
//! - [`config`]: Spin variables, with the name in every error.
//! - [`redis`]: the Redis store over `spin_sdk::redis`.
//! - [`http`]: JSON responses and the one place domain errors become HTTP.

pub mod config;
pub mod http;
pub mod redis;
