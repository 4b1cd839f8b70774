//! `execute-command`: verify (CPU only) → the client step → the session step → dispatch
//! (a reserved `gateway.*` type, or the backend) → a signed response.
//!
//! Errors found before the session is proven (the key in the envelope is the one bound
//! to the session) are plain [`CommandError`]s; after that every outcome, refusals
//! included ([`Refusal`]), is a response signed by the gateway key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use edge_auth_protocol::PROTOCOL_VERSION;
use edge_auth_protocol::canonical::{sha256_hex, sign_response};
use edge_auth_protocol::wire::{
    ResponseEnvelope, STATUS_ERROR, STATUS_OK, SignedCommand, SignedResponse,
};
use serde_json::json;

use crate::gateway::command::{VerifiedCommand, verify};
use crate::gateway::ports::{
    Backend, BackendReply, BackendRequest, BudgetKind, ClientAdmission, ClientOutcome, CommandGate,
    SessionAdmission, SessionOutcome, StreamClaim,
};
use crate::gateway::settings::{GatewayKey, GatewaySettings};
use crate::rate_limit::Budget;
use crate::sessions::input::ChangeReason;
use crate::sessions::model::SessionRecord;
use crate::sessions::ports::SessionStore;
use crate::sessions::usecases::{SessionError, active_sessions, revoke_session};
use crate::time::Elapsed;

/// A command refused before its session was proven: a plain JSON error.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("protocol_version {0} is not supported; this gateway speaks version 1")]
    UnsupportedVersion(u32),
    #[error("the payload must be at most {max} bytes")]
    PayloadTooLarge { max: usize },
    #[error("payload_sha256 is not the SHA-256 of the payload")]
    PayloadHashMismatch,
    #[error("the signature does not verify for this envelope and client_public_key ({0})")]
    InvalidSignature(String),
    #[error(
        "timestamp_ms is more than {window_ms} ms away from the server's clock ({server_time_ms}); check the device clock (a retry is a new command with a new request_id)"
    )]
    Stale { server_time_ms: u64, window_ms: u64 },
    #[error("no such device session; log in again")]
    UnknownSession,
    #[error("client_public_key is not the key bound to this session")]
    KeyMismatch,
    #[error("too many commands from this client address; retry later")]
    RateLimited { retry_after_ms: u64 },
    /// A variable the gateway needs is not set (named for the log, not the client).
    #[error("the gateway is not configured: {0} is not set")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A command refused after its session was proven: answered with a signed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    SessionRevoked,
    SessionExpired,
    UserBlocked,
    Replayed,
    RateLimited {
        retry_after_ms: u64,
        budget: BudgetKind,
    },
    /// `gateway.subscribe` while the session holds as many open streams as it may.
    TooManyStreams {
        retry_after_ms: u64,
    },
    UnknownMessageType,
    /// The backend answered 4xx; its status and body are passed on.
    BackendRejected {
        status: u16,
    },
    BackendTimeout,
    BackendUnavailable,
}

impl Refusal {
    /// The `result_code` of the signed response (and `error.code` of its payload).
    pub fn code(&self) -> &'static str {
        match self {
            Self::SessionRevoked => "session_revoked",
            Self::SessionExpired => "session_expired",
            Self::UserBlocked => "user_blocked",
            Self::Replayed => "replayed_request",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooManyStreams { .. } => "too_many_streams",
            Self::UnknownMessageType => "unknown_message_type",
            Self::BackendRejected { .. } => "backend_rejected",
            Self::BackendTimeout => "backend_timeout",
            Self::BackendUnavailable => "backend_unavailable",
        }
    }

    /// Whether the command gate decided it (the session step), rather than dispatch
    /// (an unknown type, the backend's answer or failure).
    pub fn by_gate(&self) -> bool {
        match self {
            Self::SessionRevoked
            | Self::SessionExpired
            | Self::UserBlocked
            | Self::Replayed
            | Self::RateLimited { .. }
            | Self::TooManyStreams { .. } => true,
            Self::UnknownMessageType
            | Self::BackendRejected { .. }
            | Self::BackendTimeout
            | Self::BackendUnavailable => false,
        }
    }

    /// Human text for the payload.
    pub fn message(&self) -> String {
        match self {
            Self::SessionRevoked => "this device session was revoked; log in again".into(),
            Self::SessionExpired => "this device session has expired; log in again".into(),
            Self::UserBlocked => "this account is blocked; contact support".into(),
            Self::Replayed => {
                "this request_id was already used by this session: the command first sent with \
                 it may have run; check before signing the action again with a new one"
                    .into()
            }
            Self::RateLimited { budget, .. } => {
                format!(
                    "the {} command budget is spent; retry later",
                    budget.as_str()
                )
            }
            Self::TooManyStreams { .. } => {
                "this device session has as many push streams open as it may; close one, or retry after retry_after_ms".into()
            }
            Self::UnknownMessageType => "no backend route for this message_type".into(),
            Self::BackendRejected { status } => {
                format!("the backend refused the command ({status})")
            }
            Self::BackendTimeout => "the backend did not answer in time".into(),
            Self::BackendUnavailable => "the backend is unavailable; retry later".into(),
        }
    }
}

/// A signed answer: the response, and the refusal it carries (for the HTTP status).
#[derive(Debug)]
pub struct Executed {
    pub response: SignedResponse,
    pub refusal: Option<Refusal>,
    /// Why the backend could not be reached (for the log only).
    pub cause: Option<anyhow::Error>,
}

/// What `execute_command` works with.
#[derive(Debug)]
pub struct Gateway<'a, G, B, S> {
    pub gate: &'a G,
    pub backend: &'a B,
    /// For the reserved types (`gateway.logout`, `gateway.sessions`).
    pub sessions: &'a S,
    pub settings: &'a GatewaySettings,
    /// Times the backend call, so that the answer is stamped when it is signed.
    pub clock: &'a dyn Elapsed,
}

/// The reserved message types the gateway answers itself.
pub const RESERVED: [&str; 2] = ["gateway.logout", "gateway.sessions"];

/// The reserved message type that opens a push stream (`subscribe-events` only;
/// `execute-command` refuses it as an invalid request before its gate).
pub const SUBSCRIBE: &str = "gateway.subscribe";

/// What goes into a signed response.
#[derive(Debug)]
struct Outcome {
    refusal: Option<Refusal>,
    backend_status: u16,
    payload: Vec<u8>,
    cause: Option<anyhow::Error>,
}

impl Outcome {
    fn ok(payload: Vec<u8>) -> Self {
        Self {
            refusal: None,
            backend_status: 0,
            payload,
            cause: None,
        }
    }

    /// A refusal with the standard error payload.
    fn refused(refusal: Refusal) -> Self {
        let mut body = json!({"error": {"code": refusal.code(), "message": refusal.message()}});
        if let Refusal::RateLimited { retry_after_ms, .. }
        | Refusal::TooManyStreams { retry_after_ms } = refusal
        {
            body["error"]["retry_after_ms"] = json!(retry_after_ms);
        }
        Self {
            refusal: Some(refusal),
            backend_status: 0,
            payload: body.to_string().into_bytes(),
            cause: None,
        }
    }
}

/// The CPU-only first half: configuration, then [`verify`]. Run it before opening any
/// connection, so garbage costs the store nothing at all.
///
/// # Errors
/// `NotConfigured`, and the errors of [`verify`].
pub fn prepare(
    settings: &GatewaySettings,
    command: &SignedCommand,
) -> Result<VerifiedCommand, CommandError> {
    if settings.signing.is_none() {
        return Err(CommandError::NotConfigured("gateway_signing_key"));
    }
    let command = verify(command, settings.max_payload)?;
    let routed = settings.routes.route(&command.message_type).is_some();
    if !command.message_type.is_reserved() && routed && settings.backend.is_none() {
        return Err(CommandError::NotConfigured("backend_url"));
    }
    Ok(command)
}

/// `execute-command`'s check of a [`prepare`]d command's type, before anything is spent or
/// reserved: `gateway.subscribe` opens a stream, at `subscribe-events` only. Refused
/// plainly, so a subscribe sent there (by someone on the path, say) neither spends the
/// device's request id nor earns a signed answer that push is unknown.
///
/// # Errors
/// `InvalidRequest` for `gateway.subscribe`.
pub fn check_executable_type(command: &VerifiedCommand) -> Result<(), CommandError> {
    if command.message_type.as_str() == SUBSCRIBE {
        return Err(CommandError::InvalidRequest(format!(
            "{SUBSCRIBE} opens a push stream: send it to /api/v1/gateway/subscribe-events"
        )));
    }
    Ok(())
}

/// What the gate decided about a proven command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted (budgets spent, request id reserved, last use recorded).
    Admitted { now_ms: u64, user_id: String },
    /// Refused after the session was proven: answered with a signed refusal.
    Refused { now_ms: u64, refusal: Refusal },
}

/// The command gate's two steps for a command [`prepare`]d with the same settings:
/// freshness and the client's budget, then the session step (see
/// [`SessionOutcome`]). `client` is the caller's budget key; `stream` is the push stream
/// the command opens (`subscribe-events` only). Shared by `execute-command` and
/// `subscribe-events`, so a stream opens only where a command would run.
///
/// # Errors
/// The plain [`CommandError`]s of the gate (stale, rate limited by client, unknown
/// session, key mismatch) and the store's failure.
pub fn admit<G: CommandGate>(
    gate: &G,
    settings: &GatewaySettings,
    client: &str,
    command: &VerifiedCommand,
    stream: Option<StreamClaim>,
) -> Result<Admission, CommandError> {
    // `gateway.subscribe` is known only where it opens a stream (execute-command refuses
    // one before its gate; admitted without a stream, it would count as an unknown type
    // and must not spend the push route's type budget).
    let known_type = settings.knows(&command.message_type, stream.is_some());
    let budget = Budget {
        route: "command",
        client: client.to_string(),
        rate: settings.budgets.per_client,
    };
    match gate.admit_client(&ClientAdmission {
        budget: &budget,
        message_type: &command.message_type,
        known_type,
        timestamp_ms: command.envelope.timestamp_ms,
        window_ms: settings.window_ms,
    })? {
        ClientOutcome::Admitted => {}
        ClientOutcome::Stale { now_ms } => {
            return Err(CommandError::Stale {
                server_time_ms: now_ms,
                window_ms: settings.window_ms,
            });
        }
        ClientOutcome::RateLimited { retry_after_ms } => {
            return Err(CommandError::RateLimited { retry_after_ms });
        }
    }

    let admitted = gate.admit_session(&SessionAdmission {
        session: &command.session,
        key: &command.key,
        request_id: &command.request_id,
        message_type: &command.message_type,
        known_type,
        // A subscribe's request id also names its stream's claim: it stays reserved as long
        // as the claim can count, or a fresh command reusing the id would take the same
        // place again instead of a new one (and the stream cap would not hold).
        replay_ttl_ms: stream.map_or(settings.replay_ttl_ms(), |claim| {
            settings
                .replay_ttl_ms()
                .max(claim.ends_in_ms + claim.grace_ms)
        }),
        budgets: &settings.budgets,
        timestamp_ms: command.envelope.timestamp_ms,
        window_ms: settings.window_ms,
        stream,
    })?;
    let refused = |now_ms, refusal| Ok(Admission::Refused { now_ms, refusal });
    match admitted {
        SessionOutcome::Stale { now_ms } => Err(CommandError::Stale {
            server_time_ms: now_ms,
            window_ms: settings.window_ms,
        }),
        SessionOutcome::UnknownSession => Err(CommandError::UnknownSession),
        SessionOutcome::KeyMismatch => Err(CommandError::KeyMismatch),
        SessionOutcome::Revoked { now_ms } => refused(now_ms, Refusal::SessionRevoked),
        SessionOutcome::Expired { now_ms } => refused(now_ms, Refusal::SessionExpired),
        SessionOutcome::Blocked { now_ms } => refused(now_ms, Refusal::UserBlocked),
        SessionOutcome::Replayed { now_ms } => refused(now_ms, Refusal::Replayed),
        SessionOutcome::RateLimited {
            now_ms,
            retry_after_ms,
            budget,
        } => refused(
            now_ms,
            Refusal::RateLimited {
                retry_after_ms,
                budget,
            },
        ),
        SessionOutcome::TooManyStreams {
            now_ms,
            retry_after_ms,
        } => refused(now_ms, Refusal::TooManyStreams { retry_after_ms }),
        SessionOutcome::Admitted { now_ms, user_id } => Ok(Admission::Admitted { now_ms, user_id }),
    }
}

/// Runs one command [`prepare`]d with the same settings (see the module docs). `client`
/// is the caller's budget key.
///
/// # Errors
/// See [`CommandError`]; every later outcome is an [`Executed`].
pub fn execute_command<G: CommandGate, B: Backend, S: SessionStore>(
    gw: &Gateway<'_, G, B, S>,
    client: &str,
    command: &VerifiedCommand,
) -> Result<Executed, CommandError> {
    let key = gw
        .settings
        .signing
        .as_ref()
        .ok_or(CommandError::NotConfigured("gateway_signing_key"))?;
    let admission = admit(gw.gate, gw.settings, client, command, None)?;
    let admitted = gw.clock.elapsed_ms();
    let (admitted_ms, outcome) = match admission {
        Admission::Refused { now_ms, refusal } => (now_ms, Outcome::refused(refusal)),
        Admission::Admitted { now_ms, user_id } => (now_ms, dispatch(gw, command, &user_id)?),
    };
    // The answer's time is the gateway's clock when it is signed: the store's clock at
    // admission, plus the time since on this instance's monotonic clock (the backend's).
    // A client sets its clock by the answer as it arrives: stamped at admission, the
    // answer would be early by the backend's time, and after a backend slower than the
    // window the client would date every later command stale. (The reply's way back
    // from the store is not counted: the stamp errs early by that, never late.)
    let signed_ms = admitted_ms + gw.clock.elapsed_ms().saturating_sub(admitted);
    Ok(sign(key, command, signed_ms, outcome))
}

/// The signed refusal of `command` (a route that refuses after the gate, e.g. a stream
/// that cannot open).
pub fn refuse(
    key: &GatewayKey,
    command: &VerifiedCommand,
    now_ms: u64,
    refusal: Refusal,
) -> Executed {
    sign(key, command, now_ms, Outcome::refused(refusal))
}

/// An admitted command: a reserved type, or its backend route.
fn dispatch<G, B: Backend, S: SessionStore>(
    gw: &Gateway<'_, G, B, S>,
    command: &VerifiedCommand,
    user_id: &str,
) -> Result<Outcome, CommandError> {
    if command.message_type.is_reserved() {
        return reserved(gw.sessions, command, user_id);
    }
    let (Some(route), Some(_)) = (
        gw.settings.routes.route(&command.message_type),
        &gw.settings.backend,
    ) else {
        return Ok(Outcome::refused(Refusal::UnknownMessageType));
    };
    let reply = gw.backend.call(&BackendRequest {
        route,
        user_id,
        session: &command.session,
        request_id: &command.request_id,
        message_type: &command.message_type,
        payload: &command.payload,
    });
    Ok(match reply {
        BackendReply::Answered { status, body } if (200..300).contains(&status) => Outcome {
            backend_status: status,
            ..Outcome::ok(body)
        },
        // The backend's refusal, passed on as it said it.
        BackendReply::Answered { status, body } if (400..500).contains(&status) => Outcome {
            refusal: Some(Refusal::BackendRejected { status }),
            backend_status: status,
            payload: body,
            cause: None,
        },
        BackendReply::Answered { status, body } => Outcome {
            backend_status: status,
            cause: Some(anyhow::anyhow!(
                "the backend answered {status} ({} bytes)",
                body.len()
            )),
            ..Outcome::refused(Refusal::BackendUnavailable)
        },
        BackendReply::Timeout { status, cause } => Outcome {
            backend_status: status.unwrap_or(0),
            cause: Some(cause),
            ..Outcome::refused(Refusal::BackendTimeout)
        },
        BackendReply::Unavailable { status, cause } => Outcome {
            backend_status: status.unwrap_or(0),
            cause: Some(cause),
            ..Outcome::refused(Refusal::BackendUnavailable)
        },
    })
}

/// `gateway.logout` revokes the calling session (audited like an internal revoke, actor
/// `device`); `gateway.sessions` lists the user's active sessions, marking the caller's.
fn reserved(
    sessions: &impl SessionStore,
    command: &VerifiedCommand,
    user_id: &str,
) -> Result<Outcome, CommandError> {
    let unexpected = |e: SessionError| match e {
        SessionError::Unexpected(e) => CommandError::Unexpected(e),
        other => CommandError::Unexpected(anyhow::Error::new(other)),
    };
    match command.message_type.as_str() {
        "gateway.logout" => {
            let reason = ChangeReason::by_gateway("logout", "device")
                .map_err(|e| CommandError::Unexpected(anyhow::Error::new(e)))?;
            let (record, _) =
                revoke_session(sessions, command.session.as_str(), &reason).map_err(unexpected)?;
            let body = json!({
                "device_session_id": record.device_session_id.as_str(),
                "status": record.status.as_str(),
            });
            Ok(Outcome::ok(body.to_string().into_bytes()))
        }
        "gateway.sessions" => {
            let items = active_sessions(sessions, user_id, DEVICES_LISTED, LISTING_CALLS)
                .map_err(unexpected)?;
            let list: Vec<_> = items
                .iter()
                .map(|s| device_entry(s, command.session.as_str()))
                .collect();
            Ok(Outcome::ok(
                json!({ "sessions": list }).to_string().into_bytes(),
            ))
        }
        _ => Ok(Outcome::refused(Refusal::UnknownMessageType)),
    }
}

/// The most devices `gateway.sessions` lists.
const DEVICES_LISTED: usize = 100;
/// The most listing calls (one round trip each, after the one that locates the user)
/// `gateway.sessions` makes: a page per address, more where one address holds many.
const LISTING_CALLS: usize = 8;

fn device_entry(record: &SessionRecord, caller: &str) -> serde_json::Value {
    json!({
        "device_session_id": record.device_session_id.as_str(),
        "created_at": record.created_at.to_rfc3339(),
        "last_used_at": record.lifetime.map(|l| l.last_used_at.to_rfc3339()),
        "user_agent": record.user_agent,
        "client_addr": record.client_addr,
        "current": record.device_session_id.as_str() == caller,
    })
}

/// Signs `outcome` as the answer to `command`.
fn sign(key: &GatewayKey, command: &VerifiedCommand, now_ms: u64, outcome: Outcome) -> Executed {
    let (status, result_code) = match &outcome.refusal {
        None => (STATUS_OK, "ok"),
        Some(refusal) => (STATUS_ERROR, refusal.code()),
    };
    let envelope = ResponseEnvelope {
        protocol_version: PROTOCOL_VERSION,
        request_id: command.request_id.as_str().to_string(),
        device_session_id: command.session.as_str().to_string(),
        timestamp_ms: now_ms,
        status: status.to_string(),
        result_code: result_code.to_string(),
        backend_status: outcome.backend_status,
        payload_sha256: sha256_hex(&outcome.payload),
        request_sha256: command.request_sha256.clone(),
        key_id: key.kid.clone(),
    };
    let signature = sign_response(&key.key, &envelope);
    Executed {
        response: SignedResponse {
            envelope,
            payload: STANDARD.encode(&outcome.payload),
            signature,
        },
        refusal: outcome.refusal,
        cause: outcome.cause,
    }
}
