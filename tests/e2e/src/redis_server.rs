//! A throwaway `redis-server`: free port, no persistence, killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

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
        let port = free_port()?;
        let dir = tempfile::tempdir().context("creating a directory for redis-server")?;
        let mut server = Self {
            port,
            child: None,
            dir,
            tls: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// As [`RedisServer::start`], also serving TLS on a second port with `tls` (the
    /// plain port stays for the test's own inspection and the slot watch).
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_tls(tls: ServerTls) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut tls_port = free_port()?;
        while tls_port == port {
            tls_port = free_port()?;
        }
        let dir = tempfile::tempdir().context("creating a directory for redis-server")?;
        let mut server = Self {
            port,
            child: None,
            dir,
            tls: Some((tls_port, tls)),
        };
        server.spawn()?;
        Ok(server)
    }

    /// `rediss://127.0.0.1:<tls port>`, for a server started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("rediss://127.0.0.1:{port}"))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
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
            .context("starting redis-server (is it installed? `apt-get install redis-server`)")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match pong {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "redis-server on port {} did not answer PING: {e}",
                        self.port
                    )
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
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
