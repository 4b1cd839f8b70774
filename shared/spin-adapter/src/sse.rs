//! Server-Sent Events on a streamed body: the push stream's [`Subscriber`].
//!
//! Each event is `id: <position>`, `event: <type>`, `data: <signed event JSON>` and a
//! blank line; a heartbeat is the comment line `: heartbeat`. JSON has no raw line
//! breaks, so `data` is always one line.

use edge_auth_domain::push::ports::{Gone, Position, Subscriber};
use edge_auth_domain::push::stream::Elapsed;
use edge_auth_protocol::wire::SignedEvent;

use crate::http::BodyWriter;

/// Writes a push stream as SSE.
#[derive(Debug)]
pub struct SseWriter<'a, 'b> {
    body: &'a mut BodyWriter<'b>,
}

impl<'a, 'b> SseWriter<'a, 'b> {
    pub fn new(body: &'a mut BodyWriter<'b>) -> Self {
        Self { body }
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
        self.body
            .write(frame.as_bytes())
            .map_err(|crate::http::ClientGone| Gone)
    }

    fn heartbeat(&mut self) -> Result<(), Gone> {
        self.body
            .write(b": heartbeat\n\n")
            .map_err(|crate::http::ClientGone| Gone)
    }
}

/// The stream's clock: the WASI monotonic clock since the stream opened.
#[derive(Debug, Clone, Copy)]
pub struct Since(pub std::time::Instant);

impl Elapsed for Since {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
