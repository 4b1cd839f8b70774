//! Adapters from edge-auth's domain ports to Spin's host interfaces (spin-sdk 5.2).
//!
//! Only this crate and the function crates depend on spin-sdk: switching SDKs later
//! touches the adapters, not the domain.
//!
//! # Layout
//! - [`config`], [`settings`]: Spin variables, with the name in every error.
//! - [`redis`]: the connection, scripts (EVALSHA → EVAL) and flat replies.
//! - [`keys`]: every Redis key name, in one table.
//! - [`login_store`], [`session_store`], [`command_gate`], [`push_store`]: the stores as
//!   Lua scripts.
//! - [`gateway`]: the gateway's settings; [`backend`]: the team's backend over HTTP.
//! - [`mail`]: the mail adapters (`webhook`, `log`); [`user_directory`]: the REST user
//!   directory; [`outbound`]: outgoing HTTP with timeouts.
//! - [`request_log`]: one JSON line per request; the request id and `traceparent` that
//!   outgoing calls carry.
//! - [`http`]: the one handler idiom every function uses ([`http::serve`]: route, checks,
//!   typed call, answer, deferred work); [`public_errors`]: the error table.
//! - [`sse`]: the push stream as Server-Sent Events on a streamed body; [`clock`]: the
//!   monotonic clock the stream and the gateway time themselves by.
//! - [`internal`]: what the internal routes share (revoke body, block context, session
//!   records as JSON).

pub mod backend;
pub mod clock;
pub mod command_gate;
pub mod config;
pub mod gateway;
pub mod http;
pub mod internal;
pub mod keys;
pub mod login_store;
pub mod mail;
pub mod metrics;
pub mod outbound;
pub mod public_errors;
pub mod push_store;
pub mod redis;
pub mod redis_rest;
pub mod request_log;
pub mod session_store;
pub mod settings;
pub mod sse;
pub mod user_directory;
