//! A throwaway `redis-server`: free port, no persistence, killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A `redis-server` child process owned by one test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// A TLS port beside the plain one, and its certificate and key files.
    tls: Option<(u16, ServerTls)>,
}

/// The certificate (PEM) and key a TLS redis-server presents.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` from PATH on a free port and waits until it answers PING.
    ///
    /// # Errors
    /// `redis-server` is missing (install it with `apt-get install redis-server`) or
    /// did not answer within 10 s.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on_free_ports(None)
    }

    /// As [`RedisServer::start`], also serving TLS on a second port with `tls` (the
    /// plain port stays for the test's own inspection and the slot watch).
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_tls(tls: ServerTls) -> anyhow::Result<Self> {
        Self::start_on_free_ports(Some(tls))
    }

    /// Picks free ports and starts the server there. A port is free only when probed:
    /// another test's server (ours or Spin's) can take it before redis-server binds it,
    /// and then redis-server exits. So a start whose server is gone is tried again on
    /// new ports.
    fn start_on_free_ports(tls: Option<ServerTls>) -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let tls = match &tls {
                Some(tls) => {
                    let mut tls_port = free_port()?;
                    while tls_port == port {
                        tls_port = free_port()?;
                    }
                    Some((tls_port, tls.clone()))
                }
                None => None,
            };
            let mut server = Self {
                port,
                child: None,
                dir: tempfile::tempdir().context("creating a directory for redis-server")?,
                tls,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(SpawnError::Exited(e)) => last_error = Some(e),
                Err(SpawnError::Failed(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server could not bind a port")))
    }

    /// `rediss://127.0.0.1:<tls port>`, for a server started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("rediss://127.0.0.1:{port}"))
    }

    fn spawn(&mut self) -> Result<(), SpawnError> {
        let mut command = Command::new("redis-server");
        if let Some((tls_port, tls)) = &self.tls {
            command
                .args(["--tls-port", &tls_port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                // Clients are not asked for certificates (as hosted Redis: a password).
                .args(["--tls-auth-clients", "no"]);
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed? `apt-get install redis-server`)")
            .map_err(SpawnError::Failed)?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the server answers PING, and checks that the server answering is this
    /// one (`INFO server`'s `process_id`): with the port taken by another test's
    /// redis-server, ours exits and the other one would answer.
    fn wait_ready(&mut self) -> Result<(), SpawnError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(SpawnError::Exited(anyhow::anyhow!(
                    "redis-server on port {} exited with {status} (port taken?)",
                    self.port
                )));
            }
            let info = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
            match info {
                Ok(info) => {
                    let ours = self.child.as_ref().map(Child::id);
                    let answering = info
                        .lines()
                        .find_map(|line| line.strip_prefix("process_id:"))
                        .and_then(|pid| pid.trim().parse::<u32>().ok());
                    if answering.is_some() && answering == ours {
                        return Ok(());
                    }
                    // Another server holds the port; ours is about to exit.
                    if Instant::now() > deadline {
                        self.stop();
                        return Err(SpawnError::Exited(anyhow::anyhow!(
                            "another redis-server answers on port {}",
                            self.port
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if Instant::now() > deadline => {
                    self.stop();
                    return Err(SpawnError::Failed(anyhow::anyhow!(
                        "redis-server on port {} did not answer PING: {e}",
                        self.port
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A direct connection, for a test to inspect or seed state.
    ///
    /// # Errors
    /// The server is not running.
    pub fn connection(&self) -> anyhow::Result<redis::Connection> {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .context("connecting to the test redis-server")
    }

    /// Stops the server (its data is gone: persistence is off).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server after writing its data to disk (`SHUTDOWN SAVE`), so that
    /// [`RedisServer::restart`] brings the same data back.
    pub fn stop_saving(&mut self) {
        if let Ok(mut conn) = self.connection() {
            let _ = redis::cmd("SHUTDOWN").arg("SAVE").query::<()>(&mut conn);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().map_err(SpawnError::into_inner)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why a start failed: the server exited or another one answers on its port (worth
/// another try on new ports), or anything else.
enum SpawnError {
    Exited(anyhow::Error),
    Failed(anyhow::Error),
}

impl SpawnError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            Self::Exited(e) | Self::Failed(e) => e,
        }
    }
}

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_started_on_a_port_another_server_holds_is_not_taken_for_the_other() {
        let first = RedisServer::start().expect("first server");
        let mut second = RedisServer {
            port: first.port(),
            child: None,
            dir: tempfile::tempdir().expect("temporary directory"),
            tls: None,
        };
        let started = second.spawn();
        assert!(
            matches!(started, Err(SpawnError::Exited(_))),
            "the second server must be reported as gone, not as ready"
        );
        assert!(second.child.is_none(), "nothing is left running");
    }
}
