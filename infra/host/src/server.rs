//! The HTTP listener: HTTP/1.1 with keep-alive, graceful shutdown, and [`start`] for tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{App, LoadOptions};
use crate::logs::Logs;

/// How to run the host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub manifest: PathBuf,
    /// `127.0.0.1:3000` by default; port 0 picks a free port.
    pub listen: SocketAddr,
    pub variables: HashMap<String, String>,
    /// Environment for `SPIN_VARIABLE_*`; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
    /// Dotenv file; `None` means `.env` in the working directory, as Spin.
    pub dotenv: Option<PathBuf>,
    pub expose_redis_round_trips: bool,
    /// `scheme://host:port` of a Redis REST endpoint (Upstash protocol): outgoing HTTP
    /// requests to it count as Redis round trips (an edge-auth-host addition, like the
    /// round-trip header).
    pub redis_rest_origin: Option<String>,
    /// Shifts the wall clock guests read by this many milliseconds (tests only: it
    /// simulates an instance whose clock is off; Spin has no such option).
    pub guest_clock_offset_ms: i64,
    /// Keep log lines in memory (see [`RunningHost::logs`]).
    pub capture_logs: bool,
    /// Do not copy log lines to stderr.
    pub quiet: bool,
}

impl HostOptions {
    /// Defaults for `manifest`: Spin's listen address, process environment, `.env`.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            variables: HashMap::new(),
            env: None,
            dotenv: None,
            expose_redis_round_trips: false,
            redis_rest_origin: None,
            guest_clock_offset_ms: 0,
            capture_logs: false,
            quiet: false,
        }
    }
}

/// A host serving in the background of the current tokio runtime.
#[derive(Debug)]
pub struct RunningHost {
    pub addr: SocketAddr,
    app: Arc<App>,
    logs: Logs,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningHost {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Captured log lines (host and components), if capture was on.
    pub fn logs(&self) -> Vec<String> {
        self.logs.captured()
    }

    /// Routes in precedence order with their target.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.app.routes()
    }

    /// Stops accepting, ends blocking Redis reads (push streams send their terminal
    /// `server_shutdown` event), lets requests in flight finish (up to 10 s), and returns.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Loads the app, binds the listener and serves in a background task.
///
/// # Errors
/// Start-up failures (manifest, variables, components) and a listener that cannot bind.
/// The process environment as text. Spin reads only its own `SPIN_VARIABLE_*` names: an
/// unrelated variable that is not UTF-8 is skipped (`std::env::vars` would panic on it),
/// while one of Spin's that is not UTF-8 stops the start, as Spin's provider fails on it.
///
/// # Errors
/// A `SPIN_VARIABLE_*` whose value is not UTF-8 (named, its value not shown).
fn process_env() -> anyhow::Result<HashMap<String, String>> {
    let mut env = HashMap::new();
    for (key, value) in std::env::vars_os() {
        let Ok(key) = key.into_string() else { continue };
        match value.into_string() {
            Ok(value) => {
                env.insert(key, value);
            }
            Err(_) if key.starts_with("SPIN_VARIABLE_") => {
                anyhow::bail!("environment variable {key} is not valid UTF-8")
            }
            Err(_) => {}
        }
    }
    Ok(env)
}

pub async fn start(options: HostOptions) -> anyhow::Result<RunningHost> {
    let logs = Logs::new(options.capture_logs, options.quiet);
    let env = match options.env.clone() {
        Some(env) => env,
        None => process_env()?,
    };
    let dotenv = match &options.dotenv {
        Some(path) => Some(path.clone()),
        None => std::env::current_dir().ok().map(|d| d.join(".env")),
    };
    let load = LoadOptions {
        manifest: options.manifest.clone(),
        variables: options.variables.clone(),
        env,
        dotenv,
        expose_redis_round_trips: options.expose_redis_round_trips,
        redis_rest_origin: options.redis_rest_origin.clone(),
        guest_clock_offset_ms: options.guest_clock_offset_ms,
    };
    let app = {
        let logs = logs.clone();
        // Compiling components is CPU-bound: keep it off the async workers.
        tokio::task::spawn_blocking(move || App::load(&load, logs))
            .await
            .context("loading task panicked")??
    };
    let app = Arc::new(app);
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("failed to listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    app.set_listen_addr(addr);

    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve(app.clone(), listener, rx));
    Ok(RunningHost {
        addr,
        app,
        logs,
        shutdown: Some(tx),
        task: Some(task),
    })
}

async fn serve(app: Arc<App>, listener: TcpListener, mut shutdown: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    app.logs.host(&format!("accept failed: {e}"));
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| {
            let app = app.clone();
            async move { app.handle(req, client).await }
        });
        // Hyper's defaults, as Spin 4.0.2's (hyper-util's `auto::Builder`, no timer): no
        // header-read timeout, a 408 KiB head buffer (431 beyond), 100 headers, no body
        // limit. A stalled body is bounded where the guest reads it (see `app`).
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    // Streams blocked on Redis end now, with their terminal event, rather than at the
    // grace period's end.
    app.begin_draining();
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}
