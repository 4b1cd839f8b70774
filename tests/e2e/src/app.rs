//! [`spawn_app`]: a host on a free port serving a manifest, against its own Redis.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use edge_auth_host::{HostOptions, ROUND_TRIPS_HEADER, RunningHost};

use crate::build::ensure_components_built;
use crate::redis_server::RedisServer;
use crate::workspace_root;

/// How to spawn a test app; [`Spawn::default`] serves the real `spin.toml`.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// Manifest path relative to the workspace root.
    pub manifest: String,
    /// Extra `SPIN_VARIABLE_*`-style variables (by variable name, e.g. `greeting`).
    pub variables: HashMap<String, String>,
    /// Leave out the `redis_url` the harness normally provides.
    pub without_redis_url: bool,
}

impl Default for Spawn {
    fn default() -> Self {
        Self {
            manifest: "spin.toml".to_string(),
            variables: HashMap::new(),
            without_redis_url: false,
        }
    }
}

impl Spawn {
    /// Serves `manifest` (relative to the workspace root) instead of `spin.toml`.
    pub fn manifest(manifest: &str) -> Self {
        Self {
            manifest: manifest.to_string(),
            ..Self::default()
        }
    }

    /// Sets a variable through the environment (`SPIN_VARIABLE_<NAME>`).
    #[must_use]
    pub fn variable(mut self, name: &str, value: &str) -> Self {
        self.variables.insert(name.to_string(), value.to_string());
        self
    }

    /// Host options for this spawn, against `redis`.
    pub fn host_options(&self, redis: &RedisServer) -> HostOptions {
        let mut env = HashMap::new();
        if !self.without_redis_url {
            env.insert("SPIN_VARIABLE_REDIS_URL".to_string(), redis.url());
            env.insert(
                "SPIN_VARIABLE_REDIS_ALLOWED_HOST".to_string(),
                format!("redis://127.0.0.1:{}", redis.port()),
            );
        }
        for (name, value) in &self.variables {
            env.insert(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value.clone(),
            );
        }
        let mut options = HostOptions::new(workspace_root().join(&self.manifest));
        options.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        options.env = Some(env);
        // Never pick up a developer's `.env`.
        options.dotenv = Some(PathBuf::from("/nonexistent/.env"));
        options.expose_redis_round_trips = true;
        options.capture_logs = true;
        options.quiet = std::env::var_os("EDGE_AUTH_TEST_LOGS").is_none();
        options
    }

    /// Builds the components (once per run), starts Redis and the host.
    ///
    /// # Errors
    /// Build, Redis or host start-up failures.
    pub async fn try_spawn(self) -> anyhow::Result<TestApp> {
        tokio::task::spawn_blocking(ensure_components_built)
            .await
            .context("build task panicked")??;
        let redis = tokio::task::spawn_blocking(RedisServer::start)
            .await
            .context("redis task panicked")??;
        let host = edge_auth_host::start(self.host_options(&redis)).await?;
        Ok(TestApp {
            address: host.url(),
            host,
            redis,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("building the HTTP client")?,
        })
    }

    /// As [`Spawn::try_spawn`], panicking with the cause on failure.
    pub async fn spawn(self) -> TestApp {
        match self.try_spawn().await {
            Ok(app) => app,
            Err(e) => panic!("failed to spawn the test app: {e:#}"),
        }
    }
}

/// The real app (`spin.toml`) on a free port with its own Redis.
pub async fn spawn_app() -> TestApp {
    Spawn::default().spawn().await
}

/// A running app: host, its Redis, and a client.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub host: RunningHost,
    pub redis: RedisServer,
    pub client: reqwest::Client,
}

impl TestApp {
    /// `GET /api/v1/health`.
    pub async fn get_health(&self) -> reqwest::Response {
        self.get("/api/v1/health").await
    }

    /// `GET <path>` on the app.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the request reaches the host")
    }

    /// Every log line so far (host and components).
    pub fn logs(&self) -> Vec<String> {
        self.host.logs()
    }
}

/// The Redis round trips the host counted for a response.
pub fn round_trips(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get(ROUND_TRIPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("the host was spawned with the round-trip header on")
}
