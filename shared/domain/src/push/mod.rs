//! Push: a signed event stream per device session (`subscribe-events`) and the backend's
//! publish route (`POST /api/v1/internal/push/events`).
//!
//! A stream opens only where a command would run (the gateway's checks, message type
//! `gateway.subscribe`), starts with `gateway.server_time`, then carries every event
//! published for the session's user or for that device, each signed by the gateway key
//! for this session's stream. It ends with one terminal `gateway.stream_end` event: the
//! session was revoked or expired, the user blocked, or the stream reached its maximum
//! duration (the client resumes with the last id and loses nothing).
//!
//! Events are kept per address slot (a user and one of their addresses), bounded by length
//! and age; a resume from a position older than what is kept gets
//! `gateway.resync_required` first, never a silent gap. A session reads nothing published
//! before its login: a new device resuming from `0-0` starts after the newest event then.
//!
//! # Layout
//! - [`settings`]: stream duration, heartbeat, and what the store keeps.
//! - [`ports`]: the push store (publish, read, wait) and the stream's subscriber.
//! - [`publish`]: the backend's publish use case.
//! - [`resume`]: where a subscribe resumes (its signed payload's position).
//! - [`stream`]: one subscriber's stream, from the first read to its terminal event.
pub mod ports;
pub mod publish;
pub mod resume;
pub mod settings;
pub mod stream;
#[cfg(test)]
mod tests;
