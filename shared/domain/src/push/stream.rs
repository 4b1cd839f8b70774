//! One subscriber's stream: a first read (resume or now, [`open`], before the subscribe
//! answers), `gateway.server_time`, then events as they come, heartbeats while idle, and
//! exactly one terminal `gateway.stream_end` ([`run`]).
//!
//! The stream waits on the slot's lifecycle and event streams together, so a revocation,
//! a block or a new event wakes it at once; it reads the session's state only when woken,
//! when the session's life is due to end, or when a slow client has taken
//! [`RECHECK_AFTER_MS`] over what one read found, never on a timer of its own. A heartbeat
//! is the only thing sent on a timeout.
//!
//! However it ends, the stream then releases its claim on the session's open streams
//! (one store call, after its last write).

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use edge_auth_protocol::PROTOCOL_VERSION;
use edge_auth_protocol::canonical::{sha256_hex, sign_event};
use edge_auth_protocol::wire::{EventEnvelope, SignedEvent};
use serde_json::json;

use crate::gateway::command::RequestId;
use crate::gateway::settings::GatewayKey;
use crate::ids::DeviceSessionId;
use crate::push::ports::{
    EndReason, Gone, Position, PushStore, ReadFrom, SessionState, StoredEvent, StreamRead,
    Subscriber, Wake,
};
use crate::push::publish::event_id;
use crate::push::settings::{PushSettings, RECHECK_AFTER_MS, WRITE_GRACE_MS};
use crate::random::Random;
use crate::time::Elapsed;

/// The gateway's event types.
pub const SERVER_TIME: &str = "gateway.server_time";
pub const RESYNC_REQUIRED: &str = "gateway.resync_required";
pub const STREAM_END: &str = "gateway.stream_end";

/// Events read per store call.
pub const READ_BATCH: u32 = 100;

/// An admitted subscription.
#[derive(Debug)]
pub struct Subscription<'a> {
    pub session: &'a DeviceSessionId,
    pub user_id: &'a str,
    /// The subscribe request's id: it names the stream's claim.
    pub request_id: &'a RequestId,
    /// The subscribe request's `request_sha256`: every event is signed for this stream.
    pub request_sha256: &'a str,
    /// Where the client resumes (`last_event_id`), or `None` for what comes next.
    pub resume: Option<Position>,
    pub key: &'a GatewayKey,
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The terminal event was sent with this reason.
    Ended(EndReason),
    /// A write failed: the client went away.
    ClientGone,
}

/// What [`Stream::deliver`] did with a read.
enum Delivered {
    /// Everything for this client was sent.
    All,
    /// The stream is over.
    Ended(StreamEnd),
    /// Writing took long enough that the session must be looked at again before the
    /// next write: the client stands at `passed`, and the rest is read again from there.
    Stale { passed: Position },
}

struct Stream<'a, R, O> {
    sub: &'a Subscription<'a>,
    random: &'a R,
    out: &'a mut O,
    /// Store clock at the last read, and the elapsed time then.
    clock_at_read: (u64, u64),
    /// The signed `sequence` of the next event: how many this stream has signed so far.
    /// Each signed event is written before the next is signed, and a failed write ends
    /// the stream, so the numbers a client gets have no gap unless one was taken out on
    /// the way.
    next_sequence: u64,
}

impl<R: Random, O: Subscriber> Stream<'_, R, O> {
    fn now_ms(&self, elapsed: u64) -> u64 {
        self.clock_at_read.0 + elapsed.saturating_sub(self.clock_at_read.1)
    }

    fn sign(&mut self, stored: &StoredEvent) -> SignedEvent {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let envelope = EventEnvelope {
            protocol_version: PROTOCOL_VERSION,
            event_id: stored.event_id.clone(),
            event_type: stored.event_type.clone(),
            device_session_id: self.sub.session.as_str().to_string(),
            request_sha256: self.sub.request_sha256.to_string(),
            position: stored.position.to_string(),
            sequence,
            target: if stored.device.is_some() {
                "device"
            } else {
                "user"
            }
            .to_string(),
            user_id: stored.user_id.clone(),
            timestamp_ms: stored.at_ms,
            payload_sha256: sha256_hex(&stored.payload),
            key_id: self.sub.key.kid.clone(),
        };
        let signature = sign_event(&self.sub.key.key, &envelope);
        SignedEvent {
            envelope,
            payload: STANDARD.encode(&stored.payload),
            signature,
        }
    }

    /// One of the gateway's own events, for this device, at `position`.
    fn gateway(
        &mut self,
        event_type: &str,
        position: Position,
        at_ms: u64,
        payload: &serde_json::Value,
    ) -> anyhow::Result<Result<(), Gone>> {
        let stored = StoredEvent {
            position,
            event_id: event_id(self.random)?,
            event_type: event_type.to_string(),
            device: Some(self.sub.session.as_str().to_string()),
            user_id: self.sub.user_id.to_string(),
            at_ms,
            payload: payload.to_string().into_bytes(),
        };
        let signed = self.sign(&stored);
        Ok(self.out.event(position, &signed))
    }

    fn end(
        &mut self,
        reason: EndReason,
        position: Position,
        at_ms: u64,
    ) -> anyhow::Result<StreamEnd> {
        let message = match reason {
            EndReason::SessionRevoked => "this device session was revoked; log in again",
            EndReason::SessionExpired => "this device session has expired; log in again",
            EndReason::UserBlocked => "this account is blocked; contact support",
            EndReason::MaxDuration => {
                "the stream reached its maximum duration; subscribe again with last_event_id"
            }
            EndReason::StoreUnavailable => {
                "the gateway cannot read events now; subscribe again with last_event_id"
            }
            EndReason::ServerShutdown => {
                "this gateway instance is shutting down; subscribe again with last_event_id"
            }
        };
        let payload = json!({"code": reason.code(), "reason": reason.as_str(), "message": message});
        Ok(match self.gateway(STREAM_END, position, at_ms, &payload)? {
            Ok(()) => StreamEnd::Ended(reason),
            Err(Gone) => StreamEnd::ClientGone,
        })
    }

    /// Sends what `read` found, the client standing at `at` (where the read began). A
    /// batch can take long to write to a slow client: once the stream's maximum duration
    /// (`max_duration_ms` on `clock`) has come, it ends there, at the last event it
    /// passed, before the next write; and once [`RECHECK_AFTER_MS`] have gone by since
    /// the read, it stops before the next write, so that a revoke or block ends the
    /// stream without the rest of the batch.
    fn deliver(
        &mut self,
        read: &StreamRead,
        at: Position,
        clock: &impl Elapsed,
        max_duration_ms: u64,
    ) -> anyhow::Result<Delivered> {
        // An ended session gets nothing more, not even the events this read found: they
        // may have been published after it ended (a revoke between two reads, or while a
        // slow client held up the last batch). Its end stands where the client is.
        if let SessionState::Ended(reason) = read.state {
            return self.end(reason, at, read.now_ms).map(Delivered::Ended);
        }
        if read.gap {
            let payload = json!({
                "reason": "events_dropped",
                "message": "events this stream has not sent are no longer kept; fetch current state, then go on from this id",
            });
            if self
                .gateway(RESYNC_REQUIRED, read.cursor, read.now_ms, &payload)?
                .is_err()
            {
                return Ok(Delivered::Ended(StreamEnd::ClientGone));
            }
        }
        // Where the client stands: the last event sent or passed over (one not for it).
        let mut passed = if read.gap { read.cursor } else { at };
        for stored in &read.events {
            let now = clock.elapsed_ms();
            if now >= max_duration_ms {
                let at_ms = self.now_ms(now);
                return self
                    .end(EndReason::MaxDuration, passed, at_ms)
                    .map(Delivered::Ended);
            }
            // Another device's event, or one for another user: an address can change
            // hands in an external directory while the previous user's sessions in its
            // slot live on, and they must never see the new user's events.
            let session = self.sub.session.as_str();
            if stored.device.as_deref().is_some_and(|d| d != session)
                || stored.user_id != self.sub.user_id
            {
                passed = stored.position;
                continue;
            }
            // Timed from when the last read came back, so the first event after a read
            // made mid-stream always goes out: a slow client still progresses. (The first
            // read is made before the subscribe answers: a slow `gateway.server_time`
            // makes one more read before anything else goes out.)
            if now.saturating_sub(self.clock_at_read.1) >= RECHECK_AFTER_MS {
                return Ok(Delivered::Stale { passed });
            }
            let signed = self.sign(stored);
            if self.out.event(stored.position, &signed).is_err() {
                return Ok(Delivered::Ended(StreamEnd::ClientGone));
            }
            passed = stored.position;
        }
        Ok(Delivered::All)
    }
}

/// How a stream's run went.
#[derive(Debug)]
pub struct Ran {
    /// How it ended; an error is the store failing mid-stream (the stream sent its
    /// terminal `store_unavailable` event if it could), for the log.
    pub ended: anyhow::Result<StreamEnd>,
    /// An error: its claim could not be released (it lapses by itself), for the log.
    pub released: anyhow::Result<()>,
}

/// A stream whose first read is done ([`open`]), ready to [`run`].
#[derive(Debug)]
pub struct Opened {
    first: StreamRead,
    /// The stream's clock when the first read came back: its store time is paired with
    /// this, not with when the stream starts writing.
    read_at_ms: u64,
}

/// The first read of an admitted `sub` (from its resume point, or from what comes next),
/// done before the subscribe answers: a store failing here makes a plain error answer,
/// never a stream that ends without its terminal event (which needs a position to stand
/// at). The stream's claim is then released, as a stream releases it at its end.
///
/// # Errors
/// The store's failure, also saying when the claim could not be released (it lapses by
/// itself).
pub fn open(
    store: &impl PushStore,
    settings: &PushSettings,
    sub: &Subscription<'_>,
    clock: &impl Elapsed,
) -> anyhow::Result<Opened> {
    let from = sub.resume.map_or(ReadFrom::Now, ReadFrom::After);
    match store.read(sub.session, from, READ_BATCH, settings.max_age_ms) {
        Ok(first) => Ok(Opened {
            first,
            read_at_ms: clock.elapsed_ms(),
        }),
        Err(cause) => Err(match store.release(sub.session, sub.request_id) {
            Ok(()) => cause.context("push stream: the first read failed"),
            Err(release) => cause.context(format!(
                "push stream: the first read failed, and its place was not released (it \
                 lapses by itself: {release:#})"
            )),
        }),
    }
}

/// Runs the stream of an admitted and [`open`]ed `sub` until its terminal event or the
/// client's departure, then releases its claim (see the module docs).
pub fn run(
    store: &impl PushStore,
    random: &impl Random,
    settings: &PushSettings,
    sub: &Subscription<'_>,
    opened: Opened,
    clock: &impl Elapsed,
    out: &mut impl Subscriber,
) -> Ran {
    let ended = stream(store, random, settings, sub, opened, clock, out);
    let released = store
        .release(sub.session, sub.request_id)
        .context("push stream: its place was not released (it lapses by itself)");
    Ran { ended, released }
}

/// The stream itself, up to its end.
fn stream(
    store: &impl PushStore,
    random: &impl Random,
    settings: &PushSettings,
    sub: &Subscription<'_>,
    opened: Opened,
    clock: &impl Elapsed,
    out: &mut impl Subscriber,
) -> anyhow::Result<StreamEnd> {
    let mut read = opened.first;
    let mut stream = Stream {
        sub,
        random,
        out,
        clock_at_read: (read.now_ms, opened.read_at_ms),
        next_sequence: 0,
    };
    // The client's own position (or where the stream starts): the events after it follow.
    let start = sub.resume.unwrap_or(read.cursor);
    // How long the client may wait for this stream's end: what is left of its maximum
    // duration, plus the grace its last writes may take (the adapter ends every write
    // before the grace is over). A client still waiting after that (and a margin for the
    // network) knows someone is holding events back behind heartbeats, which are not
    // signed, and resumes.
    let ends_within_ms = settings
        .max_duration_ms
        .saturating_sub(clock.elapsed_ms())
        .saturating_add(WRITE_GRACE_MS);
    let hello = json!({"server_time_ms": read.now_ms, "ends_within_ms": ends_within_ms});
    if stream
        .gateway(SERVER_TIME, start, read.now_ms, &hello)?
        .is_err()
    {
        return Ok(StreamEnd::ClientGone);
    }
    let mut last_sent = clock.elapsed_ms();
    let mut at = start;
    loop {
        let sent_before = stream.next_sequence;
        let delivered = stream.deliver(&read, at, clock, settings.max_duration_ms)?;
        // Only what was written counts: events passed over (another device's, or another
        // user's on an address that changed hands) keep no proxy's idle timer alive, and
        // a client that vanished is found only by a write.
        if stream.next_sequence != sent_before {
            last_sent = clock.elapsed_ms();
        }
        at = match delivered {
            Delivered::Ended(end) => return Ok(end),
            // Read again at once: the session's state, and the events not yet sent.
            Delivered::Stale { passed } => passed,
            Delivered::All => {
                // When the session's life ends, unless it is used again (its next read
                // records the expiry).
                let ends_in = match read.state {
                    SessionState::Active {
                        ends_at_ms: Some(at),
                    } => Some(stream.clock_at_read.1 + at.saturating_sub(read.now_ms)),
                    _ => None,
                };
                loop {
                    let now = clock.elapsed_ms();
                    if now >= settings.max_duration_ms {
                        let at_ms = stream.now_ms(now);
                        return stream.end(EndReason::MaxDuration, read.cursor, at_ms);
                    }
                    if ends_in.is_some_and(|t| now >= t) {
                        break;
                    }
                    if now.saturating_sub(last_sent) >= settings.heartbeat_ms {
                        if stream.out.heartbeat().is_err() {
                            return Ok(StreamEnd::ClientGone);
                        }
                        last_sent = now;
                    }
                    let mut timeout = (last_sent + settings.heartbeat_ms)
                        .saturating_sub(now)
                        .min(settings.max_duration_ms - now);
                    if let Some(t) = ends_in {
                        timeout = timeout.min(t.saturating_sub(now));
                    }
                    match store.wait(sub.session, read.lifecycle, read.cursor, timeout.max(1)) {
                        Ok(Wake::Changed) => break,
                        Ok(Wake::TimedOut) => {}
                        Ok(Wake::ShuttingDown) => {
                            let at = stream.now_ms(clock.elapsed_ms());
                            return stream.end(EndReason::ServerShutdown, read.cursor, at);
                        }
                        Err(e) => return fail(&mut stream, read.cursor, clock, e),
                    }
                }
                read.cursor
            }
        };
        read = match store.read(
            sub.session,
            ReadFrom::After(at),
            READ_BATCH,
            settings.max_age_ms,
        ) {
            Ok(next) => next,
            Err(e) => return fail(&mut stream, at, clock, e),
        };
        stream.clock_at_read = (read.now_ms, clock.elapsed_ms());
    }
}

/// Ends the stream after a store failure: the terminal event if it can be sent, then the
/// cause.
fn fail<R: Random, O: Subscriber>(
    stream: &mut Stream<'_, R, O>,
    cursor: Position,
    clock: &impl Elapsed,
    cause: anyhow::Error,
) -> anyhow::Result<StreamEnd> {
    let at = stream.now_ms(clock.elapsed_ms());
    // The client may be gone as well: the cause is what matters.
    let _sent = stream.end(EndReason::StoreUnavailable, cursor, at);
    Err(cause.context("push stream: the store failed mid-stream"))
}
