//! What push needs from outside: the push store (events and the session's state, in the
//! session's address slot) and the subscriber a stream writes to.

use std::fmt;

use crate::gateway::command::RequestId;
use crate::ids::{AddressTag, DeviceSessionId};
use crate::push::settings::PushSettings;
use crate::sessions::input::UserRef;

/// A position in an address slot's event stream: `<ms>-<seq>`, as the SSE `id` of every
/// event and the `last_event_id` a client resumes from. `0-0` is before the first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    ms: u64,
    seq: u64,
}

/// Why a resume position was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("last_event_id must be an event id of this stream (`<ms>-<seq>`, digits), got {got:?}")]
pub struct InvalidPosition {
    pub got: String,
    /// A number past `u64` (the only way digits fail to parse).
    #[source]
    pub cause: Option<std::num::ParseIntError>,
}

impl Position {
    /// Before the first event.
    pub const START: Self = Self { ms: 0, seq: 0 };

    /// Parses `<ms>-<seq>` (each 1-20 ASCII digits, within `u64`).
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(text: &str) -> Result<Self, InvalidPosition> {
        let bad = |cause| InvalidPosition {
            got: text.chars().take(64).collect(),
            cause,
        };
        let (ms, seq) = text.split_once('-').ok_or_else(|| bad(None))?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad(None));
        }
        Ok(Self {
            ms: ms.parse().map_err(|e| bad(Some(e)))?,
            seq: seq.parse().map_err(|e| bad(Some(e)))?,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An event as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: Position,
    /// The publisher's id (`ev_…`).
    pub event_id: String,
    pub event_type: String,
    /// The one device it is for, or `None` for every session of the user.
    pub device: Option<String>,
    pub user_id: String,
    /// When the store took it (its clock), Unix ms.
    pub at_ms: u64,
    /// The payload's JSON bytes.
    pub payload: Vec<u8>,
}

/// One event to append to an address slot's stream.
#[derive(Debug, Clone)]
pub struct Append<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub user: &'a UserRef,
    /// Only this device session of the user.
    pub device: Option<&'a DeviceSessionId>,
    pub payload: &'a [u8],
    pub limits: &'a PushSettings,
}

/// What appending decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        position: Position,
    },
    /// The slot's address does not belong to the user and holds no active session of
    /// the user (with an external directory an address can pass to another user, and
    /// the previous user's sessions live on there): nothing written.
    UnknownUser,
    /// The device session does not exist, is another user's, or has ended (revoked or
    /// recorded expired): nothing written.
    UnknownSession,
}

/// Why a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    SessionRevoked,
    SessionExpired,
    UserBlocked,
    /// `push_max_duration_seconds` reached: resume with the last id.
    MaxDuration,
    /// The store failed mid-stream: resume with the last id.
    StoreUnavailable,
    /// The runtime is shutting down (where it says so: see [`Wake::ShuttingDown`]):
    /// resume with the last id, on another instance.
    ServerShutdown,
}

impl EndReason {
    /// `reason` of the terminal event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionRevoked => "session_revoked",
            Self::SessionExpired => "session_expired",
            Self::UserBlocked => "user_blocked",
            Self::MaxDuration => "max_duration",
            Self::StoreUnavailable => "store_unavailable",
            Self::ServerShutdown => "server_shutdown",
        }
    }

    /// `code` of the terminal event: `failed_precondition` when the session cannot go
    /// on, `unavailable` when the client should resume.
    pub fn code(self) -> &'static str {
        match self {
            Self::SessionRevoked | Self::SessionExpired | Self::UserBlocked => {
                "failed_precondition"
            }
            Self::MaxDuration | Self::StoreUnavailable | Self::ServerShutdown => "unavailable",
        }
    }
}

/// The session as a read found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Active; its life ends at this time (store clock, Unix ms) unless used again.
    Active { ends_at_ms: Option<u64> },
    /// Revoked, expired (recorded now if it was due) or blocked.
    Ended(EndReason),
}

/// One read of a subscriber's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRead {
    /// The store's clock.
    pub now_ms: u64,
    pub state: SessionState,
    /// The newest lifecycle record of the slot: waiting from here wakes on the next.
    pub lifecycle: Position,
    /// Where the stream stands after this read (the last event examined).
    pub cursor: Position,
    /// Events between the resume position and what is kept were dropped (by length or
    /// age): the cursor moved to the newest event, and the client must resync. Such a
    /// read carries no events (they would all be at or before the newest), so the resync,
    /// sent at the cursor, comes before anything after it.
    pub gap: bool,
    /// Events after the position, for this session (the user's and its own), in order.
    pub events: Vec<StoredEvent>,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// From the newest event: only what comes next.
    Now,
    /// After this position (a resume, or the stream's own cursor).
    After(Position),
}

/// How a [`PushStore::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A record arrived on the lifecycle or the event stream: read again.
    Changed,
    /// The timeout passed with nothing new.
    TimedOut,
    /// The runtime said it is shutting down and will not wait any longer: the stream ends
    /// now, with a terminal event, instead of being cut off.
    ShuttingDown,
}

/// The push store.
pub trait PushStore {
    /// The address tags an external directory's user has logged in with.
    ///
    /// # Errors
    /// The store is unreachable.
    fn locate_user(&self, user: &UserRef) -> anyhow::Result<Vec<AddressTag>>;

    /// Appends one event to the stream of the slot `tag`, atomically checked (see
    /// [`AppendOutcome`]), and trims what is older than the limits.
    ///
    /// # Errors
    /// The store is unreachable; nothing is known to have been written.
    fn append(&self, tag: AddressTag, event: &Append<'_>) -> anyhow::Result<AppendOutcome>;

    /// Reads `session`'s state and its events after `from` (at most `max_events`),
    /// recording an expiry that is due. Never changes anything else. Events published
    /// before the session's login are not its own: a `from` before them reads from after
    /// the address's newest event at the login, and what was dropped before then is no
    /// gap. Events older
    /// than `max_age_ms` by the store's clock are gone even where no append has trimmed
    /// them yet: one of them after `from` makes the read a gap.
    ///
    /// # Errors
    /// The store is unreachable.
    fn read(
        &self,
        session: &DeviceSessionId,
        from: ReadFrom,
        max_events: u32,
        max_age_ms: u64,
    ) -> anyhow::Result<StreamRead>;

    /// Blocks until the slot's lifecycle stream has a record after `lifecycle` or its
    /// event stream one after `cursor` ([`Wake::Changed`]), `timeout_ms` passes
    /// ([`Wake::TimedOut`]), or the runtime ends the wait because it is shutting down
    /// ([`Wake::ShuttingDown`]).
    ///
    /// # Errors
    /// The store is unreachable.
    fn wait(
        &self,
        session: &DeviceSessionId,
        lifecycle: Position,
        cursor: Position,
        timeout_ms: u64,
    ) -> anyhow::Result<Wake>;

    /// Releases the claim of the stream opened by `session`'s subscribe `stream` (its
    /// request id; see [`crate::gateway::ports::StreamClaim`]), so the session may open
    /// another. Releasing a claim that is gone does nothing.
    ///
    /// # Errors
    /// The store is unreachable; the claim lapses by itself.
    fn release(&self, session: &DeviceSessionId, stream: &RequestId) -> anyhow::Result<()>;
}

/// The client went away (a write failed): the stream stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// What a stream writes to.
pub trait Subscriber {
    /// Sends one event, at `position` (the SSE `id`).
    ///
    /// # Errors
    /// `Gone` when the client is no longer there.
    fn event(
        &mut self,
        position: Position,
        event: &edge_auth_protocol::wire::SignedEvent,
    ) -> Result<(), Gone>;

    /// Sends a heartbeat (keeps idle connections open).
    ///
    /// # Errors
    /// As [`Subscriber::event`].
    fn heartbeat(&mut self) -> Result<(), Gone>;
}
