//! Test support for edge-auth's end-to-end tests.
//!
//! Every test gets its own throwaway `redis-server` on a free port and its own runtime on
//! a free port, serving the components of a real `spin.toml`: our host by default, real
//! Spin when the tests are built with `EDGE_AUTH_TEST_RUNTIME=spin` (see
//! [`app::SELECTED_RUNTIME`]). Components are built once per test run (the first test to
//! need them runs one `cargo build`).
//!
//! # Layout
//! - [`redis_server`]: [`RedisServer`], a `redis-server` child process killed on drop.
//! - [`build`]: builds the components named by the manifests' build commands, once.
//! - [`app`]: [`spawn_app`] and [`TestApp`], one method per endpoint, on a [`Runtime`].
//! - [`spin_process`]: [`SpinProcess`], real `spin up` as a child process killed on drop.
//! - [`mail_stub`]: [`MailStub`], the team's mail webhook as a recording stub.
//! - [`backend_stub`]: [`BackendStub`], the team's backend behind the gateway.
//! - [`device`]: [`Device`], a logged-in test device that signs commands.
//! - [`metrics`]: [`metrics::Metrics`], the metrics route parsed as a scraper parses it.
//! - [`user_service_stub`]: [`UserServiceStub`], the team's user service (REST directory).
//! - [`openapi`]: checks responses against the OpenAPI file.
//! - [`slot_watch`]: [`slot_watch::SlotWatch`], which fails a test whose Redis calls touch
//!   more than one hash slot in one call (they would fail on Redis Cluster).

pub mod app;
pub mod backend_stub;
pub mod build;
pub mod device;
pub mod logs;
pub mod mail_stub;
pub mod metrics;
pub mod openapi;
pub mod poll;
pub mod push;
pub mod redis_server;
pub mod slot_watch;
pub mod spin_process;
pub mod stub_server;
pub mod tls;
pub mod user_service_stub;

pub use app::{
    ApiResponse, BACKEND_TOKEN, GATEWAY_KEY_ID, GATEWAY_SEED, INTERNAL_TOKEN, MAIL_TOKEN, Runtime,
    RuntimeKind, RuntimeOptions, SELECTED_RUNTIME, SELECTED_TRANSPORT, Spawn, TEST_SECRET, TestApp,
    Transport, USER_SERVICE_TOKEN, device_key, memory_grows, round_trips, spawn_app, status_of,
};
pub use backend_stub::BackendStub;
pub use device::Device;
pub use mail_stub::MailStub;
pub use redis_server::RedisServer;
pub use spin_process::SpinProcess;
pub use upstash_rest::UpstashRest;
pub use user_service_stub::UserServiceStub;

use std::path::PathBuf;

/// The workspace root (where `spin.toml` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}
