//! The host side of `fermyon:spin/redis@2.0.0`, over the `redis` crate, as Spin does it.
//!
//! Each `open` checks the address against `allowed_outbound_hosts` and makes a new
//! multiplexed connection (RESP2); at most 1024 per instance. `execute` flattens nested
//! replies into one list, turns doubles into their text and refuses maps. Every command a
//! guest sends counts as one round trip for the request's tally.
//!
//! One addition, ours alone: once the host begins to shut down, a blocking command
//! (`XREAD … BLOCK`, `BLPOP`, …) answers [`SHUTTING_DOWN`] at once, in flight or not, so
//! a push stream can end with its terminal event. Spin has no such signal.

use std::sync::atomic::Ordering;

use redis::Value;
use wasmtime::component::Resource;

use crate::bindings::fermyon::spin::redis::{self as wit, Error, RedisParameter, RedisResult};
use crate::state::RequestState;

/// Spin's per-instance connection limit.
const MAX_CONNECTIONS: usize = 1024;

/// The error a blocking command answers once the host is shutting down. The adapter
/// (`shared/spin-adapter/src/push_store.rs`, `HOST_SHUTTING_DOWN`) matches it exactly.
pub const SHUTTING_DOWN: &str = "edge-auth-host is shutting down";

/// Whether `command` may block the connection (Redis' blocking commands, and `XREAD` /
/// `XREADGROUP` with a `BLOCK` argument).
fn blocks(command: &str, arguments: &[RedisParameter]) -> bool {
    const BLOCKING: [&str; 10] = [
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
    ];
    if BLOCKING.iter().any(|b| command.eq_ignore_ascii_case(b)) {
        return true;
    }
    (command.eq_ignore_ascii_case("XREAD") || command.eq_ignore_ascii_case("XREADGROUP"))
        && arguments
            .iter()
            .any(|a| matches!(a, RedisParameter::Binary(b) if b.eq_ignore_ascii_case(b"BLOCK")))
}

/// A guest's open Redis connection.
pub struct RedisConnection {
    conn: redis::aio::MultiplexedConnection,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisConnection")
    }
}

fn other(err: impl std::fmt::Display) -> Error {
    Error::Other(err.to_string())
}

type Reply<T> = wasmtime::Result<Result<T, Error>>;

impl RequestState {
    fn connection(
        &mut self,
        handle: &Resource<RedisConnection>,
    ) -> wasmtime::Result<redis::aio::MultiplexedConnection> {
        // A multiplexed connection is a cheap handle onto one socket.
        Ok(self.table.get(handle)?.conn.clone())
    }

    async fn query<T: redis::FromRedisValue>(
        &mut self,
        handle: &Resource<RedisConnection>,
        cmd: redis::Cmd,
    ) -> Reply<T> {
        let mut conn = self.connection(handle)?;
        if self.before_response() {
            self.redis_round_trips.fetch_add(1, Ordering::Relaxed);
        }
        Ok(cmd.query_async::<T>(&mut conn).await.map_err(other))
    }
}

impl wit::Host for RequestState {}

impl wit::HostConnection for RequestState {
    async fn open(&mut self, address: String) -> Reply<Resource<RedisConnection>> {
        if !self.allowed_hosts()?.allows_url(&address) {
            // Like Spin, name only scheme://host:port: the URL may carry a password.
            self.log_denied(&redacted(&address));
            return Ok(Err(Error::InvalidAddress));
        }
        if self.redis_connections >= MAX_CONNECTIONS {
            return Ok(Err(Error::TooManyConnections));
        }
        let client = match redis::Client::open(address.as_str()) {
            Ok(client) => client,
            Err(_not_a_url) => return Ok(Err(Error::InvalidAddress)),
        };
        let conn = match client.get_multiplexed_async_connection().await {
            Ok(conn) => conn,
            Err(e) => return Ok(Err(other(e))),
        };
        self.redis_connections += 1;
        Ok(Ok(self.table.push(RedisConnection { conn })?))
    }

    async fn publish(
        &mut self,
        this: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> Reply<()> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        Ok(self.query::<i64>(&this, cmd).await?.map(drop))
    }

    async fn get(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Reply<Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.query(&this, cmd).await
    }

    async fn set(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> Reply<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        Ok(self.query::<Value>(&this, cmd).await?.map(drop))
    }

    async fn incr(&mut self, this: Resource<RedisConnection>, key: String) -> Reply<i64> {
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(key).arg(1);
        self.query(&this, cmd).await
    }

    async fn del(&mut self, this: Resource<RedisConnection>, keys: Vec<String>) -> Reply<u32> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(keys);
        self.query(&this, cmd).await
    }

    async fn sadd(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Reply<u32> {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(key).arg(values);
        self.query(&this, cmd).await
    }

    async fn smembers(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
    ) -> Reply<Vec<String>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(key);
        self.query(&this, cmd).await
    }

    async fn srem(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> Reply<u32> {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(key).arg(values);
        self.query(&this, cmd).await
    }

    async fn execute(
        &mut self,
        this: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> Reply<Vec<RedisResult>> {
        let blocking = blocks(&command, &arguments);
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(n) => cmd.arg(n),
                RedisParameter::Binary(bytes) => cmd.arg(bytes),
            };
        }
        let reply = if blocking {
            let mut draining = self.draining.clone();
            if *draining.borrow() {
                return Ok(Err(other(SHUTTING_DOWN)));
            }
            tokio::select! {
                reply = self.query::<Value>(&this, cmd) => reply?,
                _ = draining.wait_for(|d| *d) => return Ok(Err(other(SHUTTING_DOWN))),
            }
        } else {
            self.query::<Value>(&this, cmd).await?
        };
        Ok(match reply {
            Ok(value) => {
                let mut out = Vec::new();
                flatten(value, &mut out).map(|()| out)
            }
            Err(e) => Err(e),
        })
    }

    async fn drop(&mut self, this: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        self.redis_connections = self.redis_connections.saturating_sub(1);
        Ok(())
    }
}

/// `scheme://host[:port]` of a URL, without credentials or path (or a placeholder).
fn redacted(address: &str) -> String {
    match url::Url::parse(address) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
            (Some(host), None) => format!("{}://{host}", url.scheme()),
            _ => format!("{}://<no host>", url.scheme()),
        },
        Err(_) => "<unparseable address>".to_string(),
    }
}

/// Flattens a reply the way Spin does: arrays and sets are spliced in place.
pub fn flatten(value: Value, out: &mut Vec<RedisResult>) -> Result<(), Error> {
    match value {
        Value::Nil => out.push(RedisResult::Nil),
        Value::Int(n) => out.push(RedisResult::Int64(n)),
        Value::BulkString(bytes) => out.push(RedisResult::Binary(bytes)),
        Value::SimpleString(s) => out.push(RedisResult::Status(s)),
        Value::Okay => out.push(RedisResult::Status("OK".to_string())),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        Value::Double(d) => out.push(RedisResult::Binary(d.to_string().into_bytes())),
        Value::Boolean(b) => out.push(RedisResult::Int64(i64::from(b))),
        Value::BigNumber(n) => out.push(RedisResult::Binary(n.to_string().into_bytes())),
        Value::ServerError(e) => return Err(other(format!("{e:?}"))),
        Value::Map(_)
        | Value::Attribute { .. }
        | Value::VerbatimString { .. }
        | Value::Push { .. } => {
            return Err(other(
                "Could not convert Redis response - TypeError: Redis Map type is not supported",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_flatten_in_order_and_doubles_become_text() {
        let value = Value::Array(vec![
            Value::Int(1),
            Value::Array(vec![Value::Nil, Value::BulkString(b"x".to_vec())]),
            Value::Okay,
            Value::Double(2.5),
        ]);
        let mut out = Vec::new();
        flatten(value, &mut out).expect("flattens");
        assert_eq!(out.len(), 5);
        assert!(matches!(out[0], RedisResult::Int64(1)));
        assert!(matches!(out[1], RedisResult::Nil));
        assert!(matches!(&out[2], RedisResult::Binary(b) if b == b"x"));
        assert!(matches!(&out[3], RedisResult::Status(s) if s == "OK"));
        assert!(matches!(&out[4], RedisResult::Binary(b) if b == b"2.5"));
    }

    #[test]
    fn denied_addresses_are_logged_without_credentials() {
        assert_eq!(
            redacted("rediss://default:s3cret@cache.example.com:6380/0"),
            "rediss://cache.example.com:6380"
        );
        assert_eq!(redacted("not a url"), "<unparseable address>");
    }

    #[test]
    fn blocking_commands_are_told_apart_from_the_rest() {
        let arg = |s: &str| RedisParameter::Binary(s.as_bytes().to_vec());
        assert!(blocks(
            "xread",
            &[arg("COUNT"), RedisParameter::Int64(1), arg("block")]
        ));
        assert!(!blocks("XREAD", &[arg("STREAMS"), arg("k"), arg("0-0")]));
        assert!(blocks("BLPOP", &[arg("k"), RedisParameter::Int64(0)]));
        assert!(!blocks("EVALSHA", &[arg("BLOCK")]));
    }

    #[test]
    fn a_map_reply_is_refused() {
        let mut out = Vec::new();
        let err = flatten(Value::Map(vec![]), &mut out).expect_err("must fail");
        assert!(matches!(err, Error::Other(m) if m.contains("Map type is not supported")));
    }
}
