//! The Redis store over Spin's Redis interface.

use anyhow::{Context, bail};
use edge_auth_domain::health::StorePing;
use spin_sdk::redis::{Connection, RedisResult};

use crate::config;

/// An open connection to the Redis named by the `redis_url` variable.
pub struct SpinRedis {
    conn: Connection,
}

impl std::fmt::Debug for SpinRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the URL: it may hold credentials.
        f.write_str("SpinRedis")
    }
}

impl SpinRedis {
    /// Opens a connection to `redis_url`.
    ///
    /// # Errors
    /// The variable is missing, the address is not allowed or malformed, or Redis
    /// refused the connection.
    pub fn connect() -> anyhow::Result<Self> {
        let url = config::variable("redis_url")?;
        let conn = Connection::open(&url).context("opening the Redis connection")?;
        Ok(Self { conn })
    }
}

impl StorePing for SpinRedis {
    fn ping(&self) -> anyhow::Result<()> {
        let reply = self
            .conn
            .execute("PING", &[])
            .context("sending PING to Redis")?;
        match reply.as_slice() {
            [RedisResult::Status(s)] if s == "PONG" => Ok(()),
            other => bail!("unexpected PING reply: {other:?}"),
        }
    }
}
