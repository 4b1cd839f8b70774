//! What the gateway needs from outside: the command gate (two atomic steps in the store,
//! one per hash slot) and the team's backend.

use crate::gateway::command::{MessageType, RequestId};
use crate::gateway::settings::{BackendRoute, CommandBudgets};
use crate::ids::DeviceSessionId;
use crate::public_key::ClientPublicKey;
use crate::rate_limit::Budget;

/// The first step: freshness against the store's clock, then the client's budget (in
/// the client's own slot).
#[derive(Debug, Clone)]
pub struct ClientAdmission<'a> {
    pub budget: &'a Budget,
    /// What the command is, for the store's accounting (as in [`SessionAdmission`]).
    pub message_type: &'a MessageType,
    pub known_type: bool,
    pub timestamp_ms: u64,
    pub window_ms: u64,
}

/// What the first step decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOutcome {
    /// Fresh and within budget (one call spent).
    Admitted,
    /// Outside the window; nothing spent. `now_ms`: the store's clock.
    Stale { now_ms: u64 },
    /// The client's budget is spent; nothing spent.
    RateLimited { retry_after_ms: u64 },
}

/// The second step, in the session's slot (the address tag its id carries).
#[derive(Debug, Clone)]
pub struct SessionAdmission<'a> {
    pub session: &'a DeviceSessionId,
    pub key: &'a ClientPublicKey,
    pub request_id: &'a RequestId,
    pub message_type: &'a MessageType,
    /// Whether the type is routed or reserved: only those get a message-type budget
    /// (unknown names must not create budget keys).
    pub known_type: bool,
    pub replay_ttl_ms: u64,
    pub budgets: &'a CommandBudgets,
    /// Freshness is checked again by the clock of the session's node (on a cluster it
    /// may not be the client step's), so the reservation outlives the window by the
    /// clock that times it.
    pub timestamp_ms: u64,
    pub window_ms: u64,
    /// The push stream this command opens (`gateway.subscribe`), if any.
    pub stream: Option<StreamClaim>,
}

/// A push stream claimed by the session step: it counts against the session's cap from
/// the moment the command is admitted until the stream releases it
/// ([`crate::push::ports::PushStore::release`]), or, where the instance died and never
/// did, until `ends_in_ms + grace_ms` after it opened. The claim is named by the
/// command's request id (unique per session: the replay reservation guarantees it, and a
/// subscribe's lasts as long as its claim can count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClaim {
    /// Open streams a session may hold (`push_max_streams_per_session`).
    pub max_streams: u64,
    /// When the stream ends by itself (`push_max_duration_seconds`).
    pub ends_in_ms: u64,
    /// How long after that a claim no stream released still counts: time to write the
    /// terminal event, and for the stream to notice a client that stopped reading.
    pub grace_ms: u64,
}

/// Which budget refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    Client,
    Session,
    User,
    MessageType,
}

impl BudgetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Session => "session",
            Self::User => "user",
            Self::MessageType => "message_type",
        }
    }
}

/// What the second step decided, in this order: the command is fresh, the session exists,
/// the key is the bound one, the request id is not reserved already (a copy of a command
/// that went ahead is a replay even after the session ended), the session is active and
/// not expired, the request id is reserved, its address is not blocked, every budget allows it, the session has room for
/// the stream it opens (if it opens one), then every budget is spent, the stream claimed,
/// and the last use recorded. Every refusal before the reservation changes nothing; one
/// after it (a block among them) is final for that request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutcome {
    /// Outside the window by this node's clock; nothing changed.
    Stale {
        now_ms: u64,
    },
    UnknownSession,
    KeyMismatch,
    Revoked {
        now_ms: u64,
    },
    /// Expired now or before (expiry recorded if it was due).
    Expired {
        now_ms: u64,
    },
    Blocked {
        now_ms: u64,
    },
    Replayed {
        now_ms: u64,
    },
    /// The request id stays reserved; no budget spent.
    RateLimited {
        now_ms: u64,
        retry_after_ms: u64,
        budget: BudgetKind,
    },
    /// The session already holds [`StreamClaim::max_streams`] open streams (claims past
    /// their grace are dropped first). The request id stays reserved; no budget spent.
    /// `retry_after_ms`: until the oldest of them ends by itself.
    TooManyStreams {
        now_ms: u64,
        retry_after_ms: u64,
    },
    Admitted {
        now_ms: u64,
        user_id: String,
    },
}

/// The command gate.
pub trait CommandGate {
    /// The first step (see [`ClientAdmission`]).
    ///
    /// # Errors
    /// The store is unreachable; nothing is known to have changed.
    fn admit_client(&self, admission: &ClientAdmission<'_>) -> anyhow::Result<ClientOutcome>;

    /// The second step (see [`SessionOutcome`]), atomic.
    ///
    /// # Errors
    /// As [`CommandGate::admit_client`].
    fn admit_session(&self, admission: &SessionAdmission<'_>) -> anyhow::Result<SessionOutcome>;
}

/// One backend call.
#[derive(Debug)]
pub struct BackendRequest<'a> {
    pub route: &'a BackendRoute,
    pub user_id: &'a str,
    pub session: &'a DeviceSessionId,
    pub request_id: &'a RequestId,
    pub message_type: &'a MessageType,
    pub payload: &'a [u8],
}

/// How a backend call ended.
#[derive(Debug)]
pub enum BackendReply {
    /// The backend answered (any status).
    Answered { status: u16, body: Vec<u8> },
    /// No connection or first byte within the timeouts, or a body that took too long
    /// after the headers (`status`: theirs, when they had come: the backend may have
    /// acted); the cause is for the log.
    Timeout {
        status: Option<u16>,
        cause: anyhow::Error,
    },
    /// Refused, unreachable, or broke off (`status` as above, when the headers had come
    /// and the body then broke off or passed its limit); the cause is for the log.
    Unavailable {
        status: Option<u16>,
        cause: anyhow::Error,
    },
}

/// The team's backend.
pub trait Backend {
    /// Sends `request`; never fails otherwise (every failure is a [`BackendReply`]).
    fn call(&self, request: &BackendRequest<'_>) -> BackendReply;
}
