//! Server-Sent Events on a streamed body: the push stream's [`Subscriber`].
//!
//! Each event is `id: <position>`, `event: <type>`, `data: <signed event JSON>` and a
//! blank line; a heartbeat is the comment line `: heartbeat`. JSON has no raw line
//! breaks, so `data` is always one line.
//!
//! The writer also keeps the stream's metrics: it is open once its first event is out
//! (then it enters the gauge, [`crate::metrics::stream_opened`]), and [`SseWriter::ended`]
//! counts how it ended and the published events it sent.

use edge_auth_domain::push::ports::{Gone, Position, Subscriber};
use edge_auth_domain::push::settings::WRITE_GRACE_MS;
use edge_auth_domain::time::Elapsed;
use edge_auth_protocol::RESERVED_PREFIX;
use edge_auth_protocol::wire::SignedEvent;

use crate::http::BodyWriter;
use crate::metrics::{self, Counter};
use crate::redis::SpinRedis;

/// The stream a writer counts in the gauge of open streams, and how long it may last.
#[derive(Debug)]
pub struct Live {
    /// `<session>/<request id>`.
    pub stream: String,
    /// When it ends by itself (`push_max_duration_seconds`).
    pub ends_in_ms: u64,
    /// How long after that its place (its claim, its gauge entry) still counts.
    pub grace_ms: u64,
}

/// Time the stream keeps, within the grace, to give its place back after its last write.
const RELEASE_MARGIN_MS: u64 = 5_000;

/// Writes a push stream as SSE.
#[derive(Debug)]
pub struct SseWriter<'a, 'b> {
    body: &'a mut BodyWriter<'b>,
    /// Entered in the gauge at the first event written; `None` once the stream is open.
    live: Option<Live>,
    /// Published events written (the gateway's own not counted).
    delivered: u64,
}

impl<'a, 'b> SseWriter<'a, 'b> {
    /// A writer for the stream `live`, admitted `admitted.elapsed_ms()` ago. No write
    /// completes later than [`WRITE_GRACE_MS`] after the stream's maximum duration (what
    /// its `gateway.server_time` announced, inside a platform's request limit), nor after
    /// its place has lapsed (less a margin to give it back): a client that reads slowly
    /// cannot keep a stream past its announced end, nor one that no longer counts.
    pub fn new(body: &'a mut BodyWriter<'b>, live: Live, admitted: &impl Elapsed) -> Self {
        let last_write = (live.ends_in_ms
            + WRITE_GRACE_MS.min(live.grace_ms.saturating_sub(RELEASE_MARGIN_MS)))
        .saturating_sub(admitted.elapsed_ms());
        body.end_by(std::time::Duration::from_millis(last_write));
        Self {
            body,
            live: Some(live),
            delivered: 0,
        }
    }

    /// Counts how the stream ended (`reason`: the terminal event's, or `client_gone`) and
    /// the published events it sent; a stream that never got its first event out was
    /// never open, and counts nothing.
    pub fn ended(self, reason: &str) {
        if self.live.is_none() {
            metrics::count(&Counter::PushStreamEnded { reason });
            metrics::count_n(&Counter::PushEventsDelivered, self.delivered);
        }
    }

    fn write(&mut self, frame: &[u8]) -> Result<(), Gone> {
        self.body
            .write(frame)
            .map_err(|crate::http::ClientGone| Gone)?;
        if let Some(live) = self.live.take() {
            let counts_for_ms = live.ends_in_ms + live.grace_ms;
            let entered = SpinRedis::connect()
                .and_then(|redis| metrics::stream_opened(&redis, &live.stream, counts_for_ms));
            if let Err(cause) = entered {
                crate::http::log_cause("push stream metrics (the stream goes on)", &cause);
            }
        }
        Ok(())
    }
}

impl Subscriber for SseWriter<'_, '_> {
    fn event(&mut self, position: Position, event: &SignedEvent) -> Result<(), Gone> {
        // Serialising these plain structs cannot fail; a failure would be a bug, and the
        // client could not use a broken event anyway: say why and end the stream.
        let data = serde_json::to_string(event).map_err(|e| {
            crate::http::log_cause("serialising a push event", &anyhow::Error::new(e));
            Gone
        })?;
        let frame = format!(
            "id: {position}\nevent: {}\ndata: {data}\n\n",
            event.envelope.event_type
        );
        self.write(frame.as_bytes())?;
        if !event.envelope.event_type.starts_with(RESERVED_PREFIX) {
            self.delivered += 1;
        }
        Ok(())
    }

    fn heartbeat(&mut self) -> Result<(), Gone> {
        self.write(b": heartbeat\n\n")
    }
}
