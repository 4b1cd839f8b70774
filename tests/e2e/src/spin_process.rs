//! [`SpinProcess`]: real Spin (`spin up`) serving a manifest as a child process.
//!
//! The end-to-end suite runs on real Spin 4.0.2 as well as on our host, so that anything
//! that works only on our host shows up as a failing test. The process gets the same
//! `SPIN_VARIABLE_*` variables the host would, a free port, a throwaway working directory
//! (so no developer `.env` is read) and a throwaway state directory (so no `.spin/` is
//! written beside the manifest); it is killed on drop.
//!
//! # Finding the binary
//! `SPIN_BIN`, else `spin` on `PATH`, else `../shared/bin/spin` beside the workspace (see
//! [`spin_binary`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::redis_server::free_port;
use crate::workspace_root;

/// How long `spin up` may take to answer its health route (it compiles every component
/// of the manifest first; Wasmtime's cache makes later starts fast).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The Spin binary the tests run: `SPIN_BIN` (a relative one from the workspace root),
/// else `spin` on `PATH`, else `../shared/bin/spin` beside the workspace; `None` when
/// there is none.
pub fn spin_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SPIN_BIN").filter(|p| !p.is_empty()) {
        // Spin is started in a directory of its own, where a relative path names another
        // file: it is taken from the workspace root, where the documented commands run
        // (a test's own working directory is its package's). A bare name is looked up on
        // PATH, as a command's is.
        let path = PathBuf::from(path);
        return Some(if path.components().count() > 1 {
            workspace_root().join(path)
        } else {
            path
        });
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("spin"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let shared = workspace_root().join("../shared/bin/spin");
        shared.is_file().then_some(shared)
    })
}

/// A `spin up` child process serving one manifest on a free port.
#[derive(Debug)]
pub struct SpinProcess {
    /// The address it listens on.
    pub addr: SocketAddr,
    child: Child,
    /// Working directory, state directory and component logs.
    dir: tempfile::TempDir,
    /// Spin's own stdout and stderr lines.
    output: Arc<Mutex<Vec<String>>>,
}

impl SpinProcess {
    /// Starts `spin up -f <manifest>` with `variables` (environment entries such as
    /// `SPIN_VARIABLE_REDIS_URL`) and waits until `/.well-known/spin/health` answers.
    ///
    /// # Errors
    /// No Spin binary, or Spin exited or did not answer within [`READY_TIMEOUT`]; the
    /// error carries everything Spin printed (start-up errors name their cause there).
    pub async fn start(
        manifest: &Path,
        variables: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let binary = spin_binary().context(
            "no Spin binary: set SPIN_BIN, put `spin` on PATH or provide ../shared/bin/spin",
        )?;
        warm_up(&binary).await?;
        // A port can be taken between our probe and Spin's bind: try a few.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::try_start(&binary, manifest, variables).await {
                Ok(process) => return Ok(process),
                Err(StartError::PortTaken(e)) => last_error = Some(e),
                Err(StartError::Failed(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("spin up could not bind a port")))
    }

    async fn try_start(
        binary: &Path,
        manifest: &Path,
        variables: &HashMap<String, String>,
    ) -> Result<Self, StartError> {
        let dir = tempfile::tempdir()
            .context("creating a directory for spin up")
            .map_err(StartError::Failed)?;
        let port = free_port().map_err(StartError::Failed)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(binary);
        command
            .arg("up")
            .arg("--from")
            .arg(manifest)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            // Component output is read from the log files, under the component's id.
            .arg("--quiet")
            .current_dir(dir.path())
            .env_clear()
            .envs(passed_through_environment())
            .envs(variables)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // `spin up` runs the trigger as a child process: give both a process group of
        // their own, so that dropping this kills the trigger too (killing `spin up` alone
        // leaves it serving).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))
            .map_err(StartError::Failed)?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let echo = std::env::var_os("EDGE_AUTH_TEST_LOGS").is_some();
        if let Some(stdout) = child.stdout.take() {
            collect_lines(stdout, Arc::clone(&output), echo);
        }
        if let Some(stderr) = child.stderr.take() {
            collect_lines(stderr, Arc::clone(&output), echo);
        }
        let mut process = Self {
            addr,
            child,
            dir,
            output,
        };
        process.wait_ready().await?;
        Ok(process)
    }

    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let client = reqwest::Client::new();
        let health = format!("http://{}/.well-known/spin/health", self.addr);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader threads a moment to take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let printed = self.output_lines().join("\n");
                let error = anyhow::anyhow!("spin up exited with {status}:\n{printed}");
                // Spin 4.0.2 says "<addr> is already in use. To have Spin search for a
                // free port, use the --find-free-port option."; the OS's own wording is
                // kept in case a Spin version passes it through.
                let taken = printed.contains("is already in use")
                    || printed.contains("Address already in use");
                return Err(if taken {
                    StartError::PortTaken(error)
                } else {
                    StartError::Failed(error)
                });
            }
            // Ours only once it says it serves this address: another test's Spin may hold
            // the port (taken between our probe and this bind) and answer the health
            // check, while ours is still compiling and will fail to bind.
            let serving = format!("Serving http://{}", self.addr);
            if self.output_lines().iter().any(|l| l.trim() == serving)
                && let Ok(response) = client
                    .get(&health)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let printed = self.output_lines().join("\n");
                return Err(StartError::Failed(anyhow::anyhow!(
                    "spin up did not answer {health} within {READY_TIMEOUT:?}:\n{printed}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `spin up` process's id (its trigger runs as a child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Spin's own output as `[spin] <line>`, then each component's stdout and stderr as
    /// `[<component id>] <line>` (the form our host logs in).
    pub fn logs(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .output_lines()
            .into_iter()
            .map(|line| format!("[spin] {line}"))
            .collect();
        lines.extend(component_log_lines(&self.dir.path().join("logs")));
        lines
    }

    fn output_lines(&self) -> Vec<String> {
        self.output
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default()
    }
}

impl Drop for SpinProcess {
    fn drop(&mut self) {
        // The whole group: `spin up` and its trigger process.
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a start failed: a port someone else took (worth another try) or anything else.
enum StartError {
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

/// What Spin needs from the test's own environment: where to find programs, its cache
/// (`HOME`/`XDG_CACHE_HOME`: the unpacked binary and Wasmtime's compiled components) and
/// its log filter. `SPIN_VARIABLE_*` of the developer's shell are not passed.
/// Runs `<binary> --version` once per process before any `spin up`. The wrapper in
/// `../shared/bin` unpacks Spin on its first call; unpacked by several tests at once, one
/// test's copy replaces the file another's Spin is running from, and that Spin then fails
/// to start its trigger process ("No such file or directory").
async fn warm_up(binary: &Path) -> anyhow::Result<()> {
    static WARM: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();
    let binary = binary.to_path_buf();
    WARM.get_or_init(|| async move {
        let result = tokio::task::spawn_blocking(move || {
            Command::new(&binary)
                .arg("--version")
                .envs(passed_through_environment())
                .output()
        })
        .await;
        match result {
            Ok(Ok(output)) if output.status.success() => Ok(()),
            Ok(Ok(output)) => Err(format!(
                "spin --version failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )),
            Ok(Err(e)) => Err(format!("running spin --version: {e}")),
            Err(e) => Err(format!("spin --version task: {e}")),
        }
    })
    .await
    .clone()
    .map_err(anyhow::Error::msg)
}

fn passed_through_environment() -> Vec<(String, String)> {
    ["PATH", "HOME", "XDG_CACHE_HOME", "TMPDIR", "RUST_LOG"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect()
}

fn collect_lines(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>, echo: bool) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[spin] {line}");
            }
            if let Ok(mut lines) = into.lock() {
                lines.push(line);
            }
        }
    });
}

/// The lines of `<dir>/<component>_{stdout,stderr}.txt`, as `[<component>] <line>`.
fn component_log_lines(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(component) = name
            .strip_suffix("_stdout.txt")
            .or_else(|| name.strip_suffix("_stderr.txt"))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        lines.extend(text.lines().map(|line| format!("[{component}] {line}")));
    }
    lines
}
