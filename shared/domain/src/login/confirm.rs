//! `confirm-email-code`: prove the code, bind the device key, get a device session.
//!
//! Input is fully validated before any state is touched, so bad input never costs an
//! attempt. The store applies the rest in one atomic step: state, lifetime, newest-only,
//! code (constant-time), attempt counting, block, session limit, session + projection.

use crate::client::ClientHops;
use crate::code::VerificationCode;
use crate::ids::{AddressTag, ChallengeId, DeviceSessionId, InvalidId, UserId};
use crate::login::ports::{
    ConfirmAttempt, ConfirmOutcome, GuardOutcome, GuardRequest, LoginStore, UserChoice,
    UserDirectory,
};
use crate::login::settings::{LoginSettings, parse_session_limit};
use crate::public_key::{ClientPublicKey, PublicKeyError};
use crate::random::Random;
use crate::time::millis;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct ConfirmRequest {
    pub challenge_id: String,
    pub code: String,
    pub client_public_key: String,
    /// Where the request came from (peer and proxy headers).
    pub client: ClientHops,
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
    #[error("the session this code created has been revoked; request a new code")]
    SessionRevoked,
    #[error("the session this code created has expired; request a new code")]
    SessionExpired,
    #[error("wrong code; {remaining_attempts} attempts left")]
    InvalidCode { remaining_attempts: u32 },
    #[error("too many wrong codes; request a new one")]
    TooManyAttempts,
    #[error("too many wrong codes for this address; retry after {retry_after_ms} ms")]
    Locked { retry_after_ms: u64 },
    /// The address is blocked.
    #[error("blocked by policy")]
    Blocked,
    /// The user is: the external directory says so, or a block of the user is under way.
    #[error("the user is blocked")]
    UserBlocked,
    /// The external directory refuses a new user for the address (closed sign-ups).
    #[error("the user directory refuses a new user for this address")]
    SignUpRefused,
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
}

/// Where users come from.
#[derive(Clone, Copy)]
pub enum Directory<'a> {
    /// The store's own mapping (one Redis script does everything).
    Redis,
    /// The team's user service.
    External(&'a dyn UserDirectory),
}

impl std::fmt::Debug for Directory<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Redis => "Directory::Redis",
            Self::External(_) => "Directory::External",
        })
    }
}

/// Checks an id from the external directory, for a login at the address of `tag`,
/// before it goes into keys and records.
///
/// An id in edge-auth's own form (`u_<tag>_…`, as `user_directory=redis` makes them) is
/// found from the address its id names, never from the user index: at another address
/// its sessions would be out of reach of revoke-all, listings and push. So it is taken
/// at its own address only (a user carried over from `redis` to `rest` keeps logging in
/// there).
fn checked_external_id(user_id: String, tag: AddressTag) -> Result<String, ConfirmError> {
    let ok = !user_id.is_empty()
        && user_id.len() <= 128
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !ok {
        return Err(ConfirmError::Unexpected(anyhow::anyhow!(
            "the user directory returned an unusable user id ({} bytes)",
            user_id.len()
        )));
    }
    if let Ok(own) = UserId::parse(&user_id)
        && own.tag() != tag
    {
        return Err(ConfirmError::Unexpected(anyhow::anyhow!(
            "the user directory returned {user_id}, an id in edge-auth's own form that names \
             address {} for a login at address {}: such an id is found at its own address \
             only, so its sessions here would be out of reach; give the user an id of the \
             directory's own form",
            own.tag().to_hex(),
            tag.to_hex()
        )));
    }
    Ok(user_id)
}

/// The most of a client's `User-Agent` a session record keeps, in bytes: records are
/// kept long after their session, so an unauthenticated client must not choose their size.
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// The longest start of `text` of at most `max` bytes that ends on a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Runs the use case.
///
/// # Errors
/// See [`ConfirmError`]. Bad input, and a client out of budget, change nothing. A call
/// past those spends the client's confirm budget, and when it compares a code (a live
/// challenge, or one already confirmed) the address's; a wrong code ([`ConfirmError::InvalidCode`], the
/// [`ConfirmError::TooManyAttempts`] that kills a challenge, a wrong code for a
/// confirmed challenge's [`ConfirmError::Consumed`]) also counts against the address's
/// wrong-code cap and the client's wrong-code budget, and for a live challenge against
/// its attempts.
pub fn confirm_email_code(
    settings: &LoginSettings,
    store: &impl LoginStore,
    directory: Directory<'_>,
    random: &impl Random,
    request: &ConfirmRequest,
) -> Result<Confirmed, ConfirmError> {
    let challenge_id = ChallengeId::parse(request.challenge_id.trim())?;
    let length = settings.policy.code_length;
    let code = VerificationCode::parse(&request.code, length)
        .ok_or(ConfirmError::MalformedCode(length))?;
    let client_public_key = ClientPublicKey::parse(request.client_public_key.trim())?;
    let tag = challenge_id.tag();

    let client = settings.clients.resolve(&request.client);
    let budget_key = settings.clients.budget_key(&client);
    // Only the client's budget is spent up front: the address's is spent by the store,
    // and only by a confirm that compares a code; the client's wrong-code budget needs room,
    // and the store spends it for a wrong code.
    let wrong_codes = settings.limits.wrong_code_budget(budget_key.clone());
    let guard = store.guard(&GuardRequest {
        budgets: vec![settings.limits.client_budget("confirm", budget_key)],
        held: vec![wrong_codes.clone()],
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

    let mut attempt = ConfirmAttempt {
        code_mac: settings.key.code_mac(&challenge_id, code.expose()),
        previous_code_mac: settings.key.previous_code_mac(&challenge_id, code.expose()),
        challenge_id,
        client_public_key,
        new_session_id: DeviceSessionId::generate(tag, random)?,
        user: match directory {
            Directory::Redis => UserChoice::Local {
                new_user_id: UserId::generate(tag, random)?,
            },
            Directory::External(_) => UserChoice::ExternalUnresolved,
        },
        session_limit,
        limit_policy: settings.limit_policy,
        client_addr: client.to_string(),
        user_agent: truncated(&request.user_agent, MAX_USER_AGENT_BYTES).to_string(),
        idempotency_ms: millis(settings.policy.idempotency_window),
        address_budget: settings.limits.per_address,
        failure_cap: settings.lockout.cap,
        failure_lockout_ms: millis(settings.lockout.lockout),
        wrong_code_budget: wrong_codes,
        session_lifetime_ms: millis(settings.sessions.lifetime),
        session_idle_timeout_ms: millis(settings.sessions.idle_timeout),
    };
    let mut outcome = store.confirm(&attempt)?;
    let Directory::External(users) = directory else {
        return answer(outcome);
    };
    let first_login = matches!(outcome, ConfirmOutcome::NeedUser { .. });
    if let ConfirmOutcome::NeedUser { email } = &outcome {
        // The code is proven: only now may the directory create a user.
        let user = match users.resolve(email)? {
            Some(user) => user,
            None => users.create(email)?.ok_or(ConfirmError::SignUpRefused)?,
        };
        if user.blocked {
            return Err(ConfirmError::UserBlocked);
        }
        let user_id = checked_external_id(user.user_id, tag)?;
        // Index first: a session of the user never exists outside the index. A block of
        // the user under way may postdate the directory's answer: refuse, as it will.
        if !store.index_user(&user_id, tag)? {
            return Err(ConfirmError::UserBlocked);
        }
        attempt.user = UserChoice::External { user_id };
        outcome = store.confirm(&attempt)?;
    }
    // A block that raised its fence after the index above read this address while it
    // was not yet the user's, and could not flag it: look again, now that the session
    // exists. Without a fence now, the block comes later and finds the address theirs.
    // A repeat looks too: the confirm that made its session at a new address may have
    // failed before its own look (a 503), and the client's retry must not carry the
    // session past a block. (A session made at an address already the user's needs no
    // look: a block flags that address, then revokes what is there.)
    if let ConfirmOutcome::Confirmed {
        session_id,
        user_id,
        repeat,
    } = &outcome
        && (first_login || *repeat)
        && !store.index_user(user_id, tag)?
    {
        store.withdraw(session_id)?;
        return Err(ConfirmError::UserBlocked);
    }
    answer(outcome)
}

/// The answer to a confirm the store has decided.
///
/// # Errors
/// Each outcome but `Confirmed` as its [`ConfirmError`].
fn answer(outcome: ConfirmOutcome) -> Result<Confirmed, ConfirmError> {
    match outcome {
        ConfirmOutcome::Confirmed { session_id, .. } => Ok(Confirmed {
            device_session_id: session_id,
        }),
        ConfirmOutcome::NotFound => Err(ConfirmError::NotFound),
        ConfirmOutcome::RateLimited { retry_after_ms } => {
            Err(ConfirmError::RateLimited { retry_after_ms })
        }
        ConfirmOutcome::Locked { retry_after_ms } => Err(ConfirmError::Locked { retry_after_ms }),
        ConfirmOutcome::Expired => Err(ConfirmError::Expired),
        ConfirmOutcome::Superseded => Err(ConfirmError::Superseded),
        ConfirmOutcome::Consumed { .. } => Err(ConfirmError::Consumed),
        ConfirmOutcome::SessionRevoked => Err(ConfirmError::SessionRevoked),
        ConfirmOutcome::SessionExpired => Err(ConfirmError::SessionExpired),
        ConfirmOutcome::InvalidCode { remaining_attempts } => {
            Err(ConfirmError::InvalidCode { remaining_attempts })
        }
        ConfirmOutcome::TooManyAttempts { .. } => Err(ConfirmError::TooManyAttempts),
        ConfirmOutcome::Blocked => Err(ConfirmError::Blocked),
        ConfirmOutcome::SessionLimitExceeded => Err(ConfirmError::SessionLimitExceeded),
        ConfirmOutcome::NeedUser { .. } => Err(ConfirmError::Unexpected(anyhow::anyhow!(
            "the store asked for a user although one was given"
        ))),
    }
}

#[cfg(test)]
mod truncation_tests {
    use super::truncated;

    #[test]
    fn a_user_agent_is_cut_to_a_byte_budget_on_a_character_boundary() {
        // Review finding: 512 characters could be 2 KB of a multi-byte agent.
        assert_eq!(truncated("abc", 512), "abc");
        assert_eq!(truncated(&"a".repeat(600), 512).len(), 512);
        let wide = "é".repeat(600);
        let cut = truncated(&wide, 512);
        assert_eq!(cut.len(), 512);
        assert_eq!(cut.chars().count(), 256);
        let odd = format!("a{}", "é".repeat(600));
        assert_eq!(truncated(&odd, 512).len(), 511);
    }
}
