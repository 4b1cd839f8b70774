//! The public error table: every use-case error, and every refusal of a request before
//! its use case runs (method, token, content type, size, JSON), → status, stable code,
//! human message. This is the one place errors become responses; causes of unexpected
//! errors are logged by the caller, never sent.

use edge_auth_domain::error::PublicError;
use edge_auth_domain::gateway::execute::{CommandError, Refusal};
use edge_auth_domain::login::confirm::ConfirmError;
use edge_auth_domain::login::send::SendError;
use edge_auth_domain::push::publish::PublishError;
use edge_auth_domain::sessions::usecases::SessionError;

fn retry_after(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

fn rate_limited(ms: u64) -> PublicError {
    PublicError {
        retry_after: Some(retry_after(ms)),
        ..PublicError::new(429, "rate_limited", "too many requests; retry later")
    }
}

/// Anything the caller cannot fix: retry later (the cause is in the log).
pub fn unavailable() -> PublicError {
    PublicError::new(
        503,
        "service_unavailable",
        "the service is temporarily unavailable; retry later",
    )
}

/// A request the route cannot read: `message` says what is wrong with it.
pub fn invalid_request(message: impl Into<String>) -> PublicError {
    PublicError::new(400, "invalid_request", message)
}

/// A method other than the route's (`method`: `GET` or `POST`).
pub fn method_not_allowed(method: &str) -> PublicError {
    PublicError::new(
        405,
        "method_not_allowed",
        format!("this route accepts {method} only"),
    )
}

/// A route the backend calls, without the backend token.
pub fn backend_token_required() -> PublicError {
    PublicError::new(401, "unauthorized", "a valid backend token is required")
}

/// A body that is not declared `application/json`.
pub fn not_json() -> PublicError {
    PublicError::new(
        415,
        "unsupported_media_type",
        "send the body as Content-Type: application/json",
    )
}

/// A body over the route's `max` bytes (declared or read).
pub fn payload_too_large(max: usize) -> PublicError {
    PublicError::new(
        413,
        "payload_too_large",
        format!("the body must be at most {max} bytes"),
    )
}

/// A health check the route does not know (`?check=`).
pub fn health_check() -> PublicError {
    invalid_request("unknown health check: leave `check` out, or give `push`")
}

/// `send-email-code` errors.
pub fn send(err: &SendError) -> PublicError {
    match err {
        SendError::InvalidEmail(e) => PublicError::new(400, "invalid_email", e.to_string()),
        SendError::RateLimited { retry_after_ms } => rate_limited(*retry_after_ms),
        SendError::Unexpected(_) => unavailable(),
    }
}

/// `confirm-email-code` errors.
pub fn confirm(err: &ConfirmError) -> PublicError {
    use ConfirmError as E;
    match err {
        E::MalformedChallengeId(_) | E::MalformedCode(_) => invalid_request(err.to_string()),
        E::InvalidPublicKey(e) => PublicError::new(400, "invalid_client_public_key", e.to_string()),
        E::RateLimited { retry_after_ms } => rate_limited(*retry_after_ms),
        E::NotFound => PublicError::new(404, "challenge_not_found", "no such challenge"),
        E::Expired | E::Superseded | E::Consumed => {
            PublicError::new(410, "challenge_expired", err.to_string())
        }
        E::SessionRevoked => PublicError::new(410, "session_revoked", err.to_string()),
        E::SessionExpired => PublicError::new(410, "session_expired", err.to_string()),
        E::InvalidCode { .. } => PublicError::new(401, "invalid_code", err.to_string()),
        E::TooManyAttempts => PublicError::new(429, "too_many_attempts", err.to_string()),
        E::Locked { retry_after_ms } => PublicError {
            retry_after: Some(retry_after(*retry_after_ms)),
            ..PublicError::new(
                429,
                "login_locked",
                "too many wrong codes for this address; retry later",
            )
        },
        // One answer for all three: a client is not told whether the address or the user
        // is blocked, or the address may not sign up.
        E::Blocked | E::UserBlocked | E::SignUpRefused => PublicError::new(
            403,
            "blocked_by_policy",
            "this account cannot sign in; contact support",
        ),
        E::SessionLimitExceeded => PublicError::new(
            409,
            "session_limit_exceeded",
            "this account has reached its limit of active sessions",
        ),
        E::BadSessionLimit(_) | E::Unexpected(_) => unavailable(),
    }
}

/// Internal session API errors.
pub fn session(err: &SessionError) -> PublicError {
    match err {
        SessionError::InvalidRequest(e) => invalid_request(e.to_string()),
        SessionError::SessionNotFound => {
            PublicError::new(404, "session_not_found", "no such device session")
        }
        SessionError::UserNotFound => PublicError::new(404, "user_not_found", "no such user"),
        SessionError::BlockedMeanwhile { .. } => PublicError::new(
            409,
            "blocked_meanwhile",
            "a block of this user ran while this unblock did, and either may have won; \
             repeat the unblock if it should",
        ),
        SessionError::Unexpected(_) => unavailable(),
    }
}

/// Publish route errors.
pub fn publish(err: &PublishError) -> PublicError {
    match err {
        PublishError::InvalidRequest(m) => invalid_request(m.clone()),
        PublishError::UserNotFound => PublicError::new(404, "user_not_found", err.to_string()),
        PublishError::SessionNotFound => {
            PublicError::new(404, "session_not_found", err.to_string())
        }
        PublishError::Unexpected(_) => unavailable(),
    }
}

/// The internal API without a valid token: nothing else is revealed.
pub fn unauthorized() -> PublicError {
    PublicError::new(
        401,
        "unauthorized",
        "a valid internal API token is required",
    )
}

/// `execute-command` errors found before the session is proven (plain JSON errors).
pub fn command(err: &CommandError) -> PublicError {
    use CommandError as E;
    let status = match err {
        E::InvalidRequest(_) => return invalid_request(err.to_string()),
        E::UnsupportedVersion(_) => 400,
        E::PayloadTooLarge { .. } => 413,
        E::PayloadHashMismatch => 400,
        E::InvalidSignature(_) => 401,
        E::Stale { server_time_ms, .. } => {
            return PublicError {
                server_time_ms: Some(*server_time_ms),
                ..PublicError::new(401, "stale_request", err.to_string())
            };
        }
        E::UnknownSession | E::KeyMismatch => 401,
        E::RateLimited { retry_after_ms } => return rate_limited(*retry_after_ms),
        E::NotConfigured(_) | E::Unexpected(_) => return unavailable(),
    };
    let code = match err {
        E::UnsupportedVersion(_) => "unsupported_protocol_version",
        E::PayloadTooLarge { .. } => "payload_too_large",
        E::PayloadHashMismatch => "payload_hash_mismatch",
        E::InvalidSignature(_) => "invalid_signature",
        E::UnknownSession => "unknown_session",
        _ => "key_mismatch",
    };
    let message = match err {
        // The reason a signature failed is for the log, not for a forger.
        E::InvalidSignature(_) => {
            "the signature does not verify for this envelope and client_public_key".to_string()
        }
        other => other.to_string(),
    };
    PublicError::new(status, code, message)
}

/// The HTTP status of a signed refusal, and its `Retry-After` in seconds. Chosen so a
/// client can act: 401 → log in again, 403 → contact support, 409 → sign again with a
/// new request id, 429 → wait, 502/504 → retry later, 422 → the backend said no. Clients
/// read the status from the signed code (`edge_auth_protocol::rules::signed_status`,
/// which a test holds to this).
pub fn refusal(refusal: &Refusal) -> (u16, Option<u64>) {
    match refusal {
        Refusal::SessionRevoked | Refusal::SessionExpired => (401, None),
        Refusal::UserBlocked => (403, None),
        Refusal::Replayed => (409, None),
        Refusal::RateLimited { retry_after_ms, .. }
        | Refusal::TooManyStreams { retry_after_ms } => (429, Some(retry_after(*retry_after_ms))),
        Refusal::UnknownMessageType => (404, None),
        Refusal::BackendRejected { .. } => (422, None),
        Refusal::BackendUnavailable => (502, None),
        Refusal::BackendTimeout => (504, None),
    }
}

#[cfg(test)]
mod tests {
    use edge_auth_domain::gateway::ports::BudgetKind;
    use edge_auth_protocol::rules::signed_status;

    use super::*;

    #[test]
    fn every_signed_refusal_has_the_status_clients_read_from_its_code() {
        let every = [
            Refusal::SessionRevoked,
            Refusal::SessionExpired,
            Refusal::UserBlocked,
            Refusal::Replayed,
            Refusal::RateLimited {
                retry_after_ms: 1,
                budget: BudgetKind::Session,
            },
            Refusal::TooManyStreams { retry_after_ms: 1 },
            Refusal::UnknownMessageType,
            Refusal::BackendRejected { status: 404 },
            Refusal::BackendTimeout,
            Refusal::BackendUnavailable,
        ];
        for each in &every {
            // A new refusal must be listed above: this match has no wildcard.
            match each {
                Refusal::SessionRevoked
                | Refusal::SessionExpired
                | Refusal::UserBlocked
                | Refusal::Replayed
                | Refusal::RateLimited { .. }
                | Refusal::TooManyStreams { .. }
                | Refusal::UnknownMessageType
                | Refusal::BackendRejected { .. }
                | Refusal::BackendTimeout
                | Refusal::BackendUnavailable => {}
            }
            assert_eq!(
                signed_status(each.code()),
                Some(refusal(each).0),
                "{each:?}"
            );
        }
        assert_eq!(signed_status("ok"), Some(200));
        assert_eq!(signed_status("made_up"), None);
    }
}
