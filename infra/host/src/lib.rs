//! `edge-auth-host`: runs the components of a `spin.toml` the way Spin 4 does, on wasmtime,
//! with real Redis behind Spin's Redis interface.
//!
//! The Spin CLI cannot be installed on our machines, yet every end-to-end test, the local
//! runner and the benchmarks need the components served exactly as Spin serves them. This
//! host is that stand-in: the same manifest and the same `.wasm` files run unchanged under
//! `spin up`, and anything that would work only here is a bug.
//!
//! # Layout
//! Top down; each module uses only those listed after it.
//! - [`server`]: the listener, graceful shutdown, and [`start`] for tests.
//! - `app`: loading (manifest, variables, compile once, pre-instantiate) and serving one
//!   request in a fresh instance; the engine's instance pool; the app's side of chaining.
//! - `state`, `redis_host`, `bindings`: the per-request store and the host side of
//!   `fermyon:spin` (variables, Redis) and `wasi:config/store`.
//! - `outbound`: a guest's outgoing HTTP: allowed hosts, service chaining, self-requests.
//! - `http_client`: what sends it on: a pooled client, TLS with Spin's roots, timeouts.
//! - [`variables`]: templates and providers (`--variable`, `SPIN_VARIABLE_*`, `.env`, defaults).
//! - [`manifest`]: `spin.toml` v2, with Spin's load-time checks.
//! - [`routes`]: Spin's route precedence (via `routefinder`, as Spin) and the `spin-*` headers.
//! - [`allowed_hosts`]: `allowed_outbound_hosts` parsing and matching.
//! - [`logs`]: one log for host messages and component output, `[source] line`.

pub mod allowed_hosts;
mod app;
mod bindings;
mod http_client;
pub mod logs;
pub mod manifest;
mod outbound;
mod redis_host;
pub mod routes;
pub mod server;
mod state;
pub mod variables;

pub use app::{App, INSTANTIATE_HEADER, LoadOptions, MEMORY_GROWS_HEADER, ROUND_TRIPS_HEADER};
pub use server::{HostOptions, RunningHost, start};
