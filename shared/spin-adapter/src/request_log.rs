//! One JSON line per request (on stdout), and the request's context that every outgoing
//! call carries.
//!
//! [`crate::http::serve`] starts the context when a request arrives: the request id (a
//! valid `x-request-id` from the caller, else a fresh one) and a valid W3C `traceparent`.
//! Outgoing calls ([`crate::outbound`]: the backend, the mail webhook, the user service)
//! send both on; the response echoes `x-request-id`. Once the request's work is done (the
//! response, then what runs after it: a delivery, the metrics write), `serve` writes the
//! line: route, method, status, error code, latency to the response, the Redis round trips
//! before the response and after it, the request id and what the handler noted ([`note`]),
//! after the response too (a delivery's outcome). Stdout carries nothing else (but the
//! mail itself, in the local `mail_delivery=log` mode).
//!
//! A cause worth an operator's eye (an unexpected error, a failed write after the response)
//! goes to stderr as a JSON line of its own ([`error`]) with the same request id.
//!
//! What may be noted: safe identifiers only (challenge, device session, user and request
//! ids, message types, result and reason codes). Never a code, a token, a key, a
//! signature, a payload or an e-mail address.
//!
//! A component instance serves one request at a time, so the context is process-wide
//! state, reset at the start of every request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Map, Value};

#[derive(Debug, Default)]
struct Context {
    request_id: String,
    traceparent: Option<String>,
    notes: Vec<(&'static str, String)>,
}

static CONTEXT: Mutex<Option<Context>> = Mutex::new(None);
static ROUND_TRIPS: AtomicU32 = AtomicU32::new(0);

fn with<T>(f: impl FnOnce(&mut Context) -> T) -> T {
    let mut guard = CONTEXT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(guard.get_or_insert_with(Context::default))
}

/// A caller's `x-request-id` is used when it is 1-128 characters of `A-Z a-z 0-9 . _ : -`
/// (nothing that could break a log line or a header); otherwise a fresh one is made.
pub fn valid_request_id(raw: &str) -> bool {
    (1..=128).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// A W3C `traceparent` of version 00, as the OpenAPI files admit it:
/// `00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all zeros. (Another version is
/// ignored, not passed on: what it means is not known here.)
pub fn valid_traceparent(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

fn fresh_request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: still a usable, if guessable, id.
        return "no-random".to_string();
    }
    edge_auth_protocol::canonical::hex(&bytes)
}

/// Starts a request's context; returns its request id.
pub fn begin(request_id: Option<&str>, traceparent: Option<&str>) -> String {
    let request_id = request_id
        .filter(|id| valid_request_id(id))
        .map_or_else(fresh_request_id, str::to_string);
    ROUND_TRIPS.store(0, Ordering::Relaxed);
    with(|c| {
        *c = Context {
            request_id: request_id.clone(),
            traceparent: traceparent
                .filter(|t| valid_traceparent(t))
                .map(str::to_string),
            notes: Vec::new(),
        };
    });
    request_id
}

/// Notes a safe identifier for this request's log line (see the module docs).
pub fn note(key: &'static str, value: impl Into<String>) {
    let value = value.into();
    with(|c| {
        c.notes.retain(|(k, _)| *k != key);
        c.notes.push((key, value));
    });
}

/// Notes the request's `user_id` (read back from Redis, or named by the request): only an
/// id of the shape every stored one was checked to have (ours, or one the user directory
/// gave), so a value that is not one never reaches the line.
pub fn note_user_id(user_id: &str) {
    if edge_auth_domain::sessions::input::UserRef::parse(user_id).is_ok() {
        note("user_id", user_id);
    }
}

/// One Redis call made (the Redis adapter counts every `execute`).
pub fn count_round_trip() {
    ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
}

/// The Redis round trips of this request so far.
pub fn round_trips() -> u32 {
    ROUND_TRIPS.load(Ordering::Relaxed)
}

/// The headers an outgoing call carries: `x-request-id`, and `traceparent` when the
/// request came with one.
pub fn outgoing_headers() -> Vec<(&'static str, String)> {
    with(|c| {
        let mut headers = Vec::new();
        if !c.request_id.is_empty() {
            headers.push(("x-request-id", c.request_id.clone()));
        }
        if let Some(t) = &c.traceparent {
            headers.push(("traceparent", t.clone()));
        }
        headers
    })
}

/// What the edge knows when the response has gone out.
#[derive(Debug)]
pub struct Outcome<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub error_code: Option<&'a str>,
    pub latency_ms: f64,
    /// The Redis round trips made before the response ([`round_trips`] then).
    pub round_trips: u32,
}

/// Writes `message` (and the request id) to stderr as one JSON line: an error or warning
/// an operator may need, beside the request's line on stdout.
pub fn error(message: &str) {
    eprintln!("{}", error_line(message));
}

fn error_line(message: &str) -> String {
    let mut fields = Map::new();
    fields.insert("level".into(), "error".into());
    fields.insert("msg".into(), message.into());
    with(|c| {
        if !c.request_id.is_empty() {
            fields.insert("request_id".into(), c.request_id.clone().into());
        }
    });
    Value::Object(fields).to_string()
}

/// The line for `outcome` (see the module docs).
pub fn line(outcome: &Outcome<'_>) -> String {
    let mut fields = Map::new();
    fields.insert("level".into(), "info".into());
    fields.insert("msg".into(), "request".into());
    fields.insert("route".into(), outcome.route.into());
    fields.insert("method".into(), outcome.method.into());
    fields.insert("status".into(), outcome.status.into());
    fields.insert(
        "error_code".into(),
        outcome.error_code.map_or(Value::Null, Value::from),
    );
    fields.insert(
        "latency_ms".into(),
        ((outcome.latency_ms * 1000.0).round() / 1000.0).into(),
    );
    fields.insert("redis_round_trips".into(), outcome.round_trips.into());
    fields.insert(
        "redis_round_trips_after".into(),
        round_trips().saturating_sub(outcome.round_trips).into(),
    );
    with(|c| {
        fields.insert("request_id".into(), c.request_id.clone().into());
        if let Some(t) = &c.traceparent {
            fields.insert("traceparent".into(), t.clone().into());
        }
        for (k, v) in &c.notes {
            fields.insert((*k).into(), v.clone().into());
        }
    });
    Value::Object(fields).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_are_used_only_when_clean() {
        assert!(valid_request_id("abc-123_X.y:z"));
        for bad in ["", "has space", "new\nline", "quote\"", &"a".repeat(129)] {
            assert!(!valid_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn traceparents_follow_the_w3c_form() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "7f-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_the_notes() {
        // The only test touching the process-wide context.
        assert_eq!(begin(Some("bad id"), None).len(), 32, "a fresh id");
        begin(Some("req-1"), None);
        note("device_session_id", "s_x");
        count_round_trip();
        let answered = round_trips();
        count_round_trip();
        count_round_trip();
        let text = line(&Outcome {
            route: "/api/v1/x",
            method: "POST",
            status: 200,
            error_code: None,
            latency_ms: 1.5,
            round_trips: answered,
        });
        assert!(!text.contains('\n'));
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["device_session_id"], "s_x");
        assert_eq!(v["redis_round_trips"], 1);
        assert_eq!(v["redis_round_trips_after"], 2);
        assert_eq!(v["status"], 200);

        let error: Value = serde_json::from_str(&error_line("a \"cause\"\nover lines"))
            .expect("an error line is JSON");
        assert_eq!(error["level"], "error");
        assert_eq!(error["request_id"], "req-1");
        assert_eq!(error["msg"], "a \"cause\"\nover lines");
    }
}
