//! A push stream as a test reads it: `subscribe-events` answers, parsed SSE events, and the
//! checks every event must pass.

use std::time::{Duration, Instant};

use edge_auth_protocol::verify::verify_event;
use edge_auth_protocol::wire::{Jwks, SignedEvent};
use serde_json::Value;

use crate::app::{ApiResponse, TestApp};
use crate::device::Device;

/// One event of a stream, verified.
#[derive(Debug, Clone)]
pub struct PushEvent {
    /// The SSE `id`: where to resume from.
    pub id: String,
    /// The SSE `event` (the same as the envelope's type).
    pub event: String,
    pub signed: SignedEvent,
    /// The verified payload, as JSON.
    pub payload: Value,
}

/// An open stream.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    pending: String,
    session: String,
    /// The subscribe request's `request_sha256`: every event must be signed for it.
    request_sha256: String,
    jwks: Jwks,
    /// Heartbeat comments seen so far.
    pub heartbeats: u32,
    /// Events seen so far: the signed `sequence` the next one must carry.
    events: u64,
    /// Whether the body has ended.
    pub ended: bool,
}

impl EventStream {
    /// The next event within `within`, or `None` if the body ended or the time passed.
    ///
    /// # Panics
    /// A frame that is not a well-formed, verified event of this stream.
    pub async fn next(&mut self, within: Duration) -> Option<PushEvent> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let frame: String = self.pending.drain(..end + 2).collect();
                if let Some(event) = self.parse(&frame) {
                    return Some(event);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => self
                    .pending
                    .push_str(std::str::from_utf8(&bytes).expect("the stream is UTF-8")),
                Ok(Ok(None)) => self.ended = true,
                Ok(Err(e)) => panic!("the stream broke: {e}"),
            }
        }
    }

    /// Every event up to the end of the body (within `within`).
    pub async fn rest(&mut self, within: Duration) -> Vec<PushEvent> {
        let deadline = Instant::now() + within;
        let mut events = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left).await {
                Some(event) => events.push(event),
                None => break,
            }
        }
        events
    }

    fn parse(&mut self, frame: &str) -> Option<PushEvent> {
        let (mut id, mut event, mut data) = (None, None, None);
        for line in frame.lines().filter(|l| !l.is_empty()) {
            if line.starts_with(':') {
                self.heartbeats += 1;
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v.to_string());
            } else {
                panic!("unexpected SSE line {line:?} in {frame:?}");
            }
        }
        let data = data?;
        let signed: SignedEvent = serde_json::from_str(&data).expect("data is a SignedEvent");
        let payload = verify_event(&signed, &self.jwks, &self.session, &self.request_sha256)
            .unwrap_or_else(|e| panic!("event does not verify: {e}: {data}"));
        let event = event.expect("every event names its type");
        assert_eq!(event, signed.envelope.event_type);
        assert_eq!(
            id.as_deref(),
            Some(signed.envelope.position.as_str()),
            "the SSE id is the signed position"
        );
        assert_eq!(
            signed.envelope.sequence, self.events,
            "a stream numbers its events 0, 1, 2, … without a gap: {data}"
        );
        self.events += 1;
        Some(PushEvent {
            id: id.expect("every event has an id"),
            event,
            signed,
            payload: serde_json::from_slice(&payload).expect("the payload is JSON"),
        })
    }
}

/// The `request_sha256` of a subscribe command, as the gateway computes it.
fn subscribe_request_sha256(command: &impl serde::Serialize) -> String {
    use base64::Engine;
    let json = serde_json::to_value(command).expect("the command serializes");
    let signed: edge_auth_protocol::wire::SignedCommand =
        serde_json::from_value(json).expect("a signed command");
    let signature: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(&signed.signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .unwrap_or([0; 64]);
    edge_auth_protocol::canonical::request_sha256(&signed.envelope, &signature)
}

impl TestApp {
    /// `POST /api/v1/gateway/subscribe-events` as `device`, resuming after
    /// `last_event_id` (in the signed payload): the open stream, or the refusal (checked
    /// against the spec).
    pub async fn subscribe(
        &self,
        device: &Device,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, ApiResponse> {
        let payload = last_event_id
            .map(|id| serde_json::json!({ "last_event_id": id }).to_string())
            .unwrap_or_default();
        let prepared = device.command("gateway.subscribe", payload.as_bytes());
        self.subscribe_with(device, &prepared.command, &[]).await
    }

    /// As [`TestApp::subscribe`] with a command of the caller's and extra headers.
    pub async fn subscribe_with(
        &self,
        device: &Device,
        command: &impl serde::Serialize,
        headers: &[(&str, &str)],
    ) -> Result<EventStream, ApiResponse> {
        let path = "/api/v1/gateway/subscribe-events";
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .json(command);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request_sha256 = subscribe_request_sha256(command);
        let response = request.send().await.expect("the request reaches the host");
        if response.status() != 200 {
            return Err(ApiResponse::checked(response, path, "post").await);
        }
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Ok(EventStream {
            response,
            pending: String::new(),
            session: device.session.clone(),
            request_sha256,
            jwks: self.jwks().await,
            heartbeats: 0,
            events: 0,
            ended: false,
        })
    }

    /// `POST /api/v1/internal/push/events`.
    pub async fn publish(&self, body: &Value) -> ApiResponse {
        self.internal(
            reqwest::Method::POST,
            "/api/v1/internal/push/events",
            "/api/v1/internal/push/events",
            Some(body),
        )
        .await
    }
}
