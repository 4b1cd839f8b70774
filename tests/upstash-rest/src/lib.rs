//! A stand-in for Upstash's Redis REST API in front of a real `redis-server`, so the
//! whole end-to-end suite (and the benchmark, through the `upstash-rest` binary) can run
//! on the REST transport.
//!
//! # What it covers
//! Checked against Upstash's REST API page (upstash.com/docs/redis/features/restapi) and
//! the official clients (upstash/redis-js `pkg/http.ts`, `pkg/script.ts`; upstash/redis-py
//! `upstash_redis/http.py`):
//! - `POST /` with a JSON array (`["SET","k","v"]`; strings or numbers) and
//!   `Authorization: Bearer <token>` (or `?_token=`): `200 {"result": …}`, where simple and
//!   bulk strings are JSON strings, integers numbers, nil `null`, arrays nested as Redis
//!   nests them (RESP2 rules: doubles as strings).
//! - Redis refusing a command: `400 {"error": "<Redis' error text>"}`, e.g.
//!   `NOSCRIPT No matching script. Please use EVAL.`; a missing or wrong token:
//!   `401 {"error": "Unauthorized"}`; another method: `405`.
//! - `Upstash-Encoding: base64`: every string of the result base64-encoded except `OK`.
//! - `POST /pipeline`: an array of commands, answered `200` with one `{"result"}` or
//!   `{"error"}` per command, not atomic.
//! - Blocking commands (`BLPOP`, `XREAD … BLOCK`, …) are refused, as Upstash lists them as
//!   unsupported over REST.
//!
//! For tests, not Upstash's: [`UpstashRest::answer_late`] runs chosen commands and answers
//! them late, as an answer lost to a client's timeout after the command ran;
//! [`UpstashRest::break_answer`] runs them and breaks their answer off after its status
//! and the first bytes of its body.
//!
//! Not covered (the adapter uses none of it): path-style commands (`/set/k/v`),
//! `/multi-exec`, `Upstash-Response-Format: resp2`, the `upstash-sync-token` header,
//! `/subscribe` and `/monitor`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The token the test server accepts.
pub const REST_TOKEN: &str = "test-upstash-rest-token";

struct State {
    client: redis::Client,
    /// Reopened after a connection error (a test may stop and restart Redis).
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// `Bearer <token>` and `_token=<token>`.
    token: String,
    query_token: String,
    commands: AtomicU64,
    /// Commands to answer wrongly: those whose JSON body holds the text, run and then
    /// answered so, so many times more.
    faults: std::sync::Mutex<Vec<(String, Fault, u32)>>,
}

/// How a command that ran is answered ([`UpstashRest::answer_late`],
/// [`UpstashRest::break_answer`]).
#[derive(Clone, Copy)]
enum Fault {
    /// After this long.
    Late(std::time::Duration),
    /// Its status, then part of its body, then the connection breaks.
    Broken,
    /// No answer at all: the connection closes once the command has run.
    Dropped,
}

/// An answer's body: whole, or broken off.
type Body = BoxBody<Bytes, std::io::Error>;

/// Why a command has no result: Redis refused it (`400`), or Redis could not be reached
/// (`500`, as a service in front of a lost database answers).
enum Failure {
    Refused(String),
    Unreachable(String),
}

/// The REST server, serving until its test's runtime ends.
#[derive(Clone)]
pub struct UpstashRest {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl std::fmt::Debug for UpstashRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstashRest")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl UpstashRest {
    /// Starts a REST server on a free port in front of the Redis at `redis_url`,
    /// accepting [`REST_TOKEN`].
    ///
    /// # Errors
    /// Redis cannot be reached or the listener cannot bind.
    pub async fn start(redis_url: &str) -> anyhow::Result<Self> {
        Self::serve(redis_url, "127.0.0.1:0".parse()?, REST_TOKEN).await
    }

    /// Serves on `listen` in front of the Redis at `redis_url`, accepting `token` (the
    /// `upstash-rest` binary, for the benchmark).
    ///
    /// # Errors
    /// Redis cannot be reached or the listener cannot bind.
    pub async fn serve(redis_url: &str, listen: SocketAddr, token: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url).context("the Redis URL")?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .context("connecting the REST server to Redis")?;
        let conn = tokio::sync::Mutex::new(Some(conn));
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the REST server to {listen}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            client,
            conn,
            token: format!("Bearer {token}"),
            query_token: format!("_token={token}"),
            commands: AtomicU64::new(0),
            faults: std::sync::Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    // A service error makes hyper close the connection unanswered.
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { handle(&state, request).await.ok_or(Unanswered) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state })
    }

    /// `http://127.0.0.1:<port>`: the `redis_rest_url` (and its allowed host).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Commands run so far (a pipeline counts each of its commands).
    pub fn commands(&self) -> u64 {
        self.state.commands.load(Ordering::Relaxed)
    }

    /// The next `times` commands whose JSON body holds `containing` run as usual, and
    /// their answer comes `by` later: an answer lost to a client's timeout after the
    /// command ran.
    pub fn answer_late(&self, containing: &str, by: std::time::Duration, times: u32) {
        self.fault(containing, Fault::Late(by), times);
    }

    /// The next `times` commands whose JSON body holds `containing` run as usual, and
    /// their answer breaks off after its status and the first bytes of its body: an answer
    /// lost after the command ran, which the client sees as such.
    pub fn break_answer(&self, containing: &str, times: u32) {
        self.fault(containing, Fault::Broken, times);
    }

    /// The next `times` commands whose JSON body holds `containing` run as usual, and the
    /// connection closes without an answer: a command that went out whole and ran, the
    /// connection lost before its status.
    pub fn drop_answer(&self, containing: &str, times: u32) {
        self.fault(containing, Fault::Dropped, times);
    }

    fn fault(&self, containing: &str, fault: Fault, times: u32) {
        if let Ok(mut faults) = self.state.faults.lock() {
            faults.push((containing.to_string(), fault, times));
        }
    }
}

fn answer(status: u16, body: &Value) -> hyper::Response<Body> {
    let whole = |bytes: Bytes| Full::new(bytes).map_err(|never| match never {}).boxed();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(whole(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| hyper::Response::new(whole(Bytes::new())))
}

/// `answered` with its body cut after its first half, then an error: hyper sends the
/// status and the head of the body (chunked), and a moment later breaks the connection
/// (at once, hyper could drop the head and the status with it, and the client would see
/// no answer at all).
async fn broken(answered: hyper::Response<Body>) -> hyper::Response<Body> {
    use futures::StreamExt;
    let (parts, body) = answered.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let head = bytes.slice(..bytes.len() / 2);
    let frames = futures::stream::once(async { Ok(hyper::body::Frame::data(head)) }).chain(
        futures::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            Err(std::io::Error::other(
                "the test server breaks this answer off",
            ))
        }),
    );
    hyper::Response::from_parts(parts, BodyExt::boxed(StreamBody::new(frames)))
}

fn authorized(state: &State, request: &hyper::Request<hyper::body::Incoming>) -> bool {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let query = request.uri().query().unwrap_or_default();
    bearer == Some(state.token.as_str()) || query.split('&').any(|pair| pair == state.query_token)
}

/// Why a connection closed unanswered ([`Fault::Dropped`]).
#[derive(Debug)]
struct Unanswered;

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the test server drops this answer")
    }
}

impl std::error::Error for Unanswered {}

/// The answer to `request`, or `None` to close the connection without one.
async fn handle(
    state: &State,
    request: hyper::Request<hyper::body::Incoming>,
) -> Option<hyper::Response<Body>> {
    if request.method() != hyper::Method::POST {
        return Some(answer(405, &json!({"error": "method not allowed"})));
    }
    if !authorized(state, &request) {
        return Some(answer(401, &json!({"error": "Unauthorized"})));
    }
    let base64 = request
        .headers()
        .get("upstash-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"base64"));
    let path = request.uri().path().to_string();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Some(answer(
                400,
                &json!({"error": format!("ERR reading the body: {e}")}),
            ));
        }
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return Some(answer(
                400,
                &json!({"error": format!("ERR the body is not JSON: {e}")}),
            ));
        }
    };
    let fault = fault_for(state, &body);
    let answered = handle_path(state, &path, parsed, base64).await;
    match fault {
        None => Some(answered),
        Some(Fault::Late(delay)) => {
            tokio::time::sleep(delay).await;
            Some(answered)
        }
        Some(Fault::Broken) => Some(broken(answered).await),
        Some(Fault::Dropped) => None,
    }
}

/// How to answer `body` ([`UpstashRest::answer_late`], [`UpstashRest::break_answer`]),
/// spending one of its times.
fn fault_for(state: &State, body: &[u8]) -> Option<Fault> {
    let mut faults = state.faults.lock().ok()?;
    let text = String::from_utf8_lossy(body);
    let slot = faults
        .iter_mut()
        .find(|(containing, _, times)| *times > 0 && text.contains(containing.as_str()))?;
    slot.2 -= 1;
    Some(slot.1)
}

async fn handle_path(
    state: &State,
    path: &str,
    parsed: Value,
    base64: bool,
) -> hyper::Response<Body> {
    match path {
        "/" => match run(state, &parsed, base64).await {
            Ok(result) => answer(200, &json!({ "result": result })),
            Err(Failure::Refused(error)) => answer(400, &json!({ "error": error })),
            Err(Failure::Unreachable(error)) => answer(500, &json!({ "error": error })),
        },
        "/pipeline" => {
            let Value::Array(commands) = parsed else {
                return answer(
                    400,
                    &json!({"error": "ERR a pipeline is an array of commands"}),
                );
            };
            let mut results = Vec::with_capacity(commands.len());
            for command in &commands {
                results.push(match run(state, command, base64).await {
                    Ok(result) => json!({ "result": result }),
                    Err(Failure::Refused(error) | Failure::Unreachable(error)) => {
                        json!({ "error": error })
                    }
                });
            }
            answer(200, &Value::Array(results))
        }
        _ => answer(404, &json!({"error": format!("ERR unknown path {path}")})),
    }
}

/// Redis' blocking commands, which Upstash does not serve over REST.
fn blocking(name: &str, args: &[String]) -> bool {
    const BLOCKING: [&str; 8] = [
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
    ];
    BLOCKING.iter().any(|b| name.eq_ignore_ascii_case(b))
        || ((name.eq_ignore_ascii_case("XREAD") || name.eq_ignore_ascii_case("XREADGROUP"))
            && args.iter().any(|a| a.eq_ignore_ascii_case("BLOCK")))
}

/// Runs one command array.
async fn run(state: &State, command: &Value, base64: bool) -> Result<Value, Failure> {
    let refused = |text: String| Failure::Refused(text);
    let Value::Array(items) = command else {
        return Err(refused("ERR a command is a JSON array".to_string()));
    };
    let mut words = Vec::with_capacity(items.len());
    for item in items {
        words.push(match item {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(refused(format!("ERR unsupported argument {other}"))),
        });
    }
    let Some((name, args)) = words.split_first() else {
        return Err(refused("ERR empty command".to_string()));
    };
    if blocking(name, args) {
        return Err(refused(format!(
            "ERR {name} with blocking is not supported over REST"
        )));
    }
    let mut cmd = redis::cmd(name);
    for arg in args {
        cmd.arg(arg.as_bytes());
    }
    state.commands.fetch_add(1, Ordering::Relaxed);
    let mut conn = {
        let mut cached = state.conn.lock().await;
        match &*cached {
            Some(conn) => conn.clone(),
            None => {
                let conn = state
                    .client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| Failure::Unreachable(format!("ERR Redis unreachable: {e}")))?;
                *cached = Some(conn.clone());
                conn
            }
        }
    };
    match cmd.query_async::<redis::Value>(&mut conn).await {
        Ok(value) => to_json(value, base64).map_err(refused),
        Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
            *state.conn.lock().await = None;
            Err(Failure::Unreachable(format!("ERR Redis unreachable: {e}")))
        }
        Err(e) => Err(refused(match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        })),
    }
}

/// A RESP2 reply as Upstash writes it.
fn to_json(value: redis::Value, base64: bool) -> Result<Value, String> {
    use redis::Value as V;
    let text = |bytes: Vec<u8>| -> Value {
        if base64 {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    Ok(match value {
        V::Nil => Value::Null,
        V::Int(n) => json!(n),
        V::Okay => json!("OK"),
        V::SimpleString(s) if s == "OK" => json!("OK"),
        V::SimpleString(s) => text(s.into_bytes()),
        V::BulkString(bytes) => text(bytes),
        V::Double(d) => text(d.to_string().into_bytes()),
        V::Boolean(b) => json!(i64::from(b)),
        V::BigNumber(n) => text(n.to_string().into_bytes()),
        V::Array(items) | V::Set(items) => Value::Array(
            items
                .into_iter()
                .map(|v| to_json(v, base64))
                .collect::<Result<_, _>>()?,
        ),
        V::Map(pairs) => {
            let mut flat = Vec::with_capacity(pairs.len() * 2);
            for (k, v) in pairs {
                flat.push(to_json(k, base64)?);
                flat.push(to_json(v, base64)?);
            }
            Value::Array(flat)
        }
        V::ServerError(e) => return Err(format!("{e:?}")),
        other => return Err(format!("ERR unsupported reply {other:?}")),
    })
}
