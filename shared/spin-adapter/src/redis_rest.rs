//! Redis over the Upstash REST protocol, through Spin's outbound HTTP (pooled across
//! requests since Spin 3.4, where a RESP connection is a new TCP + TLS + AUTH handshake
//! on every request).
//!
//! One command is one `POST <redis_rest_url>` of a JSON array of strings with
//! `Authorization: Bearer <redis_rest_token>`; the answer is `{"result": …}` or
//! `{"error": "…"}`. Results are decoded into the same flat list Spin's Redis interface
//! returns ([`flatten`]), so every script reply reads the same on either transport.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use spin_sdk::http::Method;
use spin_sdk::redis::{RedisParameter, RedisResult};

use crate::outbound::{self, OutboundError, Request};

/// The largest answer read (an audit page or a session list is far below it).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// Connect and first-byte timeout of one command.
const TIMEOUT: Duration = Duration::from_secs(5);

/// An error Redis itself answered (`{"error": "…"}`), e.g. `NOSCRIPT …`.
#[derive(Debug, thiserror::Error)]
#[error("Redis (REST) answered: {0}")]
pub struct RedisRestError(pub String);

/// The answer was lost: none came in time, it broke off after its status, the connection
/// broke after the command went out whole, a gateway in front of the service answered for
/// it (502, 504), or a 200 came with a body that is not JSON. The command may have run all
/// the same.
#[derive(Debug, thiserror::Error)]
#[error("Redis REST answer lost: {0}")]
pub struct RestAnswerLost(pub String);

/// The REST endpoint and its token.
pub struct RestClient {
    url: String,
    token: String,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token, nor a URL that may carry it (`?_token=`).
        f.debug_struct("RestClient")
            .field("origin", &crate::outbound::origin(&self.url))
            .finish_non_exhaustive()
    }
}

impl RestClient {
    pub fn new(url: String, token: String) -> Self {
        Self { url, token }
    }

    /// Sends one command and decodes its result.
    ///
    /// # Errors
    /// [`RedisRestError`] when Redis refused the command; otherwise the transport failed,
    /// timed out, or answered something that is not the REST protocol.
    pub fn execute(
        &self,
        name: &str,
        params: &[RedisParameter],
    ) -> anyhow::Result<Vec<RedisResult>> {
        let body = command_json(name, params)?;
        let request = Request {
            method: Method::Post,
            url: &self.url,
            bearer: Some(&self.token),
            headers: &[("accept", "application/json")],
            body: Some(("application/json", &body)),
            connect_timeout: TIMEOUT,
            first_byte_timeout: TIMEOUT,
            max_response: Some(MAX_RESPONSE),
        };
        let (status, answer) = outbound::send_request(&request).map_err(|e| match e {
            OutboundError::Timeout { what, .. } => {
                anyhow::Error::new(RestAnswerLost(format!("timed out: {what}")))
            }
            // Answered, its body then failed, or sent whole before the connection broke
            // (the cause says which): the command may have run.
            OutboundError::Failed {
                cause, sent: true, ..
            } => anyhow::Error::new(RestAnswerLost(format!("{cause:#}"))),
            OutboundError::Failed {
                cause, sent: false, ..
            } => cause.context("Redis REST request failed"),
        })?;
        decode(status, &answer)
    }
}

/// `[name, args…]` as a JSON array of strings (Redis reads every argument as a string).
fn command_json(name: &str, params: &[RedisParameter]) -> anyhow::Result<Vec<u8>> {
    let mut items = Vec::with_capacity(1 + params.len());
    items.push(Value::String(name.to_string()));
    for param in params {
        items.push(Value::String(match param {
            RedisParameter::Int64(n) => n.to_string(),
            RedisParameter::Binary(bytes) => String::from_utf8(bytes.clone())
                .context("a Redis REST argument must be UTF-8 text")?,
        }));
    }
    serde_json::to_vec(&Value::Array(items)).context("encoding a Redis REST command")
}

/// Reads an answer: `{"result"}` on 200, `{"error"}` (Redis' refusal) on 400, anything
/// else is a failure of the service (401 is a wrong token).
fn decode(status: u16, body: &[u8]) -> anyhow::Result<Vec<RedisResult>> {
    // A proxy's word that the service's answer did not reach it: the command was sent on.
    if matches!(status, 502 | 504) {
        return Err(RestAnswerLost(format!("a gateway answered {status} for Redis REST")).into());
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        // A 200 says the command ran, whatever became of its body.
        Err(e) if status == 200 => {
            return Err(RestAnswerLost(format!("200 with a body that is not JSON ({e})")).into());
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "Redis REST answered {status} with a body that is not JSON"
            )));
        }
    };
    if let Some(error) = value.get("error") {
        let message = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
        if status == 400 {
            return Err(RedisRestError(message).into());
        }
        bail!("Redis REST answered {status}: {message}");
    }
    match (status, value.get("result")) {
        (200, Some(result)) => {
            let mut out = Vec::new();
            flatten(result, &mut out)?;
            Ok(out)
        }
        _ => bail!("Redis REST answered {status} without a result"),
    }
}

/// Flattens a JSON result as Spin flattens a RESP reply: arrays are spliced in place,
/// text is [`RedisResult::Binary`] (REST does not tell a status from a bulk string),
/// integers stay integers, other numbers become their text, `null` is nil, and a boolean
/// is what RESP2 makes of Lua's: `true` is 1, `false` is nil.
fn flatten(value: &Value, out: &mut Vec<RedisResult>) -> anyhow::Result<()> {
    match value {
        Value::Null => out.push(RedisResult::Nil),
        Value::String(s) => out.push(RedisResult::Binary(s.clone().into_bytes())),
        Value::Number(n) => match n.as_i64() {
            Some(i) => out.push(RedisResult::Int64(i)),
            None => out.push(RedisResult::Binary(n.to_string().into_bytes())),
        },
        Value::Bool(true) => out.push(RedisResult::Int64(1)),
        Value::Bool(false) => out.push(RedisResult::Nil),
        Value::Array(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        Value::Object(_) => bail!("Redis REST result: a map is not supported (as on RESP)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(status: u16, body: &str) -> anyhow::Result<Vec<RedisResult>> {
        decode(status, body.as_bytes())
    }

    #[test]
    fn debug_output_shows_the_origin_only() {
        let client = RestClient::new(
            "https://db.upstash.io/?_token=s3cret".to_string(),
            "t0ken".to_string(),
        );
        let shown = format!("{client:?}");
        assert!(shown.contains("https://db.upstash.io"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
    }

    #[test]
    fn commands_are_json_arrays_of_strings() {
        let body = command_json(
            "EVALSHA",
            &[
                RedisParameter::Binary(b"abc".to_vec()),
                RedisParameter::Int64(-2),
            ],
        )
        .expect("encodes");
        assert_eq!(body, br#"["EVALSHA","abc","-2"]"#);
        let bad = command_json("SET", &[RedisParameter::Binary(vec![0xff])]);
        assert!(bad.is_err(), "non-UTF-8 cannot travel as JSON text");
    }

    #[test]
    fn nested_results_flatten_in_order_like_spins_redis_interface() {
        let out = decoded(
            200,
            r#"{"result":[1,["x",null,["y"]],"OK",2.5,true,false]}"#,
        )
        .expect("ok");
        assert_eq!(out.len(), 8);
        assert!(matches!(out[0], RedisResult::Int64(1)));
        assert!(matches!(&out[1], RedisResult::Binary(b) if b == b"x"));
        assert!(matches!(out[2], RedisResult::Nil));
        assert!(matches!(&out[3], RedisResult::Binary(b) if b == b"y"));
        assert!(matches!(&out[4], RedisResult::Binary(b) if b == b"OK"));
        assert!(matches!(&out[5], RedisResult::Binary(b) if b == b"2.5"));
        assert!(matches!(out[6], RedisResult::Int64(1)));
        // Lua's false (a guard.lua item with no session limit, say), as RESP2 gives it.
        assert!(matches!(out[7], RedisResult::Nil));
        let nil = decoded(200, r#"{"result":null}"#).expect("ok");
        assert!(matches!(nil.as_slice(), [RedisResult::Nil]));
    }

    #[test]
    fn redis_refusals_are_told_apart_from_failures_of_the_service() {
        let refused = decoded(400, r#"{"error":"NOSCRIPT No matching script"}"#).expect_err("e");
        let refusal = refused
            .downcast_ref::<RedisRestError>()
            .expect("Redis' own");
        assert!(refusal.0.starts_with("NOSCRIPT"));
        let unauthorized = decoded(401, r#"{"error":"Unauthorized"}"#).expect_err("e");
        assert!(unauthorized.downcast_ref::<RedisRestError>().is_none());
        // Answers that leave open whether the command ran are told as lost, and only they.
        let lost = |status, body: &str| {
            decoded(status, body)
                .expect_err("a failure")
                .downcast_ref::<RestAnswerLost>()
                .is_some()
        };
        assert!(lost(502, "<html>bad gateway</html>"));
        assert!(lost(504, ""));
        assert!(lost(200, r#"{"result":"OK""#));
        assert!(!lost(500, "<html>error</html>"));
        assert!(!lost(401, r#"{"error":"Unauthorized"}"#));
        assert!(decoded(200, r#"{"nothing":1}"#).is_err());
        assert!(decoded(200, r#"{"result":{"a":1}}"#).is_err());
    }
}
