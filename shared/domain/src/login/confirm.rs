//! `confirm-email-code`: prove the code, bind the device key, get a device session.
//!
//! Input is fully validated before any state is touched, so bad input never costs an
//! attempt. The store applies the rest in one atomic step: state, lifetime, newest-only,
//! code (constant-time), attempt counting, block, session limit, session + projection.

use crate::code::VerificationCode;
use crate::ids::{ChallengeId, DeviceSessionId, InvalidId, UserId};
use crate::login::ports::{ConfirmAttempt, ConfirmOutcome, GuardOutcome, GuardRequest, LoginStore};
use crate::login::settings::{LoginSettings, parse_session_limit};
use crate::public_key::{ClientPublicKey, PublicKeyError};
use crate::random::Random;
use crate::rate_limit::{Budget, BudgetSubject, client_host};
use crate::time::{Timestamp, millis};

/// A parsed request.
#[derive(Debug, Clone)]
pub struct ConfirmRequest {
    pub challenge_id: String,
    pub code: String,
    pub client_public_key: String,
    pub client_addr: String,
    pub user_agent: String,
}

/// Why `confirm-email-code` failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("challenge_id is malformed: {0}")]
    MalformedChallengeId(#[from] InvalidId),
    #[error("code must be exactly {0} digits")]
    MalformedCode(u8),
    #[error(transparent)]
    InvalidPublicKey(#[from] PublicKeyError),
    #[error("rate limited; retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("no such challenge")]
    NotFound,
    #[error("the challenge has expired")]
    Expired,
    #[error("a newer code was sent to this address")]
    Superseded,
    #[error("the challenge was already used")]
    Consumed,
    #[error("wrong code; {remaining_attempts} attempts left")]
    InvalidCode { remaining_attempts: u32 },
    #[error("too many wrong codes; request a new one")]
    TooManyAttempts,
    #[error("blocked by policy")]
    Blocked,
    #[error("the user has reached the session limit")]
    SessionLimitExceeded,
    #[error("invalid session limit configuration: {0}")]
    BadSessionLimit(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The success answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub device_session_id: DeviceSessionId,
    pub replay: bool,
}

/// Runs the use case.
///
/// # Errors
/// See [`ConfirmError`]. Only [`ConfirmError::InvalidCode`] and
/// [`ConfirmError::TooManyAttempts`] follow a state change (the attempt was counted).
pub fn confirm_email_code(
    settings: &LoginSettings,
    store: &impl LoginStore,
    random: &impl Random,
    request: &ConfirmRequest,
    now: Timestamp,
) -> Result<Confirmed, ConfirmError> {
    let challenge_id = ChallengeId::parse(request.challenge_id.trim())?;
    let length = settings.policy.code_length;
    let code = VerificationCode::parse(&request.code, length)
        .ok_or(ConfirmError::MalformedCode(length))?;
    let client_public_key = ClientPublicKey::parse(request.client_public_key.trim())?;
    let tag = challenge_id.tag();

    let guard = store.guard(&GuardRequest {
        now,
        budgets: vec![
            Budget {
                route: "confirm",
                subject: BudgetSubject::Client(client_host(&request.client_addr)),
                rate: settings.limits.per_client,
            },
            Budget {
                route: "confirm",
                subject: BudgetSubject::Address(tag),
                rate: settings.limits.per_address,
            },
        ],
        read_session_limit: true,
    })?;
    let raw_limit = match guard {
        GuardOutcome::Limited { retry_after_ms } => {
            return Err(ConfirmError::RateLimited { retry_after_ms });
        }
        GuardOutcome::Allowed { session_limit } => session_limit,
    };
    let session_limit =
        parse_session_limit(raw_limit.as_deref()).map_err(ConfirmError::BadSessionLimit)?;

    let attempt = ConfirmAttempt {
        code_mac: settings.key.code_mac(&challenge_id, code.expose()),
        challenge_id,
        client_public_key,
        now,
        new_session_id: DeviceSessionId::generate(tag, random)?,
        new_user_id: UserId::generate(tag, random)?,
        session_limit,
        limit_policy: settings.limit_policy,
        client_addr: request.client_addr.clone(),
        user_agent: request.user_agent.chars().take(512).collect(),
        idempotency_ms: millis(settings.policy.idempotency_window),
    };
    match store.confirm(&attempt)? {
        ConfirmOutcome::Confirmed { session_id, replay } => Ok(Confirmed {
            device_session_id: session_id,
            replay,
        }),
        ConfirmOutcome::NotFound => Err(ConfirmError::NotFound),
        ConfirmOutcome::Expired => Err(ConfirmError::Expired),
        ConfirmOutcome::Superseded => Err(ConfirmError::Superseded),
        ConfirmOutcome::Consumed => Err(ConfirmError::Consumed),
        ConfirmOutcome::InvalidCode { remaining_attempts } => {
            Err(ConfirmError::InvalidCode { remaining_attempts })
        }
        ConfirmOutcome::TooManyAttempts => Err(ConfirmError::TooManyAttempts),
        ConfirmOutcome::Blocked => Err(ConfirmError::Blocked),
        ConfirmOutcome::SessionLimitExceeded => Err(ConfirmError::SessionLimitExceeded),
    }
}
