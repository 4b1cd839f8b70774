//! What operators send, parsed.

use crate::email::{EmailAddress, EmailError};
use crate::ids::InvalidId;
use crate::sessions::model::MAX_PAGE;

/// A machine-readable reason, e.g. `user_request`, `fraud.suspected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonCode(String);

/// Who did it, e.g. `admin:alice` or `service:billing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

/// An input that is not acceptable; every variant maps to `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("reason_code must be 1-64 characters of a-z, 0-9, '_', '.', '-'")]
    ReasonCode,
    #[error("actor must be 1-128 printable ASCII characters without surrounding spaces")]
    Actor,
    #[error("user_id is malformed")]
    UserId,
    #[error("user_id is required")]
    MissingUserId,
    #[error("device_session_id is malformed: {0}")]
    SessionId(#[source] InvalidId),
    #[error("email is invalid: {0}")]
    Email(#[source] EmailError),
    #[error("give exactly one of email and user_id")]
    BlockTarget,
    #[error("status must be active, revoked, expired or all")]
    StatusFilter,
    #[error("limit must be an integer from 1 to {MAX_PAGE}")]
    Limit,
    #[error("cursor is malformed")]
    Cursor,
    #[error("session_limit must be a non-negative whole number or null")]
    SessionLimit,
    #[error(
        "actor must not be `user`, `device` or `system`: the gateway records its own changes with them"
    )]
    ReservedActor,
}

/// The operator's session limit as sent: `null` for no limit, or a whole number that
/// fits `u32` (JSON Schema's `integer` admits `3.0`, so a number without a fraction is
/// whole).
///
/// # Errors
/// Anything else: a fraction, a negative or too large number, a string, a boolean.
pub fn session_limit(raw: &serde_json::Value) -> Result<Option<u32>, InvalidInput> {
    use serde_json::Value;
    /// `x` if it is a whole number in `u32`'s range.
    fn whole(x: f64) -> Option<u64> {
        (x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&x)).then_some(
            // In range and whole: the cast is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            {
                x as u64
            },
        )
    }
    match raw {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().and_then(whole))
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or(InvalidInput::SessionLimit),
        _ => Err(InvalidInput::SessionLimit),
    }
}

impl ReasonCode {
    /// 1–64 characters of `a-z 0-9 _ . -`.
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidInput::ReasonCode)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Actor {
    /// 1–128 printable ASCII characters, no surrounding spaces.
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw.trim() == raw
            && raw.bytes().all(|b| (0x20..0x7f).contains(&b));
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidInput::Actor)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why and by whom a change is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeReason {
    pub reason_code: ReasonCode,
    pub actor: Actor,
}

/// A user id as the API receives it: ours (`u_<tag>_…`) or an external directory's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef(String);

impl UserRef {
    /// 1–128 characters of `A-Z a-z 0-9 . _ : -`.
    ///
    /// # Errors
    /// Anything else.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidInput::UserId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whom a block or unblock is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockTarget {
    Email(EmailAddress),
    User(UserRef),
}

impl BlockTarget {
    /// Exactly one of `email` and `user_id`, parsed.
    ///
    /// # Errors
    /// Both, neither, or a malformed one.
    pub fn parse(email: Option<&str>, user_id: Option<&str>) -> Result<Self, InvalidInput> {
        match (email, user_id) {
            (Some(email), None) => EmailAddress::parse(email)
                .map(Self::Email)
                .map_err(InvalidInput::Email),
            (None, Some(user)) => UserRef::parse(user).map(Self::User),
            _ => Err(InvalidInput::BlockTarget),
        }
    }
}

/// The actors the gateway records for the changes it makes itself: `user` (a login),
/// `device` (a logout by signed command) and `system` (an expiry, an eviction by the
/// session limit, a login withdrawn for a block). The internal API refuses them, in any
/// case, so that no audit record of the gateway's own can be forged through it.
pub const GATEWAY_ACTORS: [&str; 3] = ["user", "device", "system"];

impl ChangeReason {
    /// Parses both parts as the internal API receives them.
    ///
    /// # Errors
    /// Either part is malformed, or the actor is one of [`GATEWAY_ACTORS`].
    pub fn parse(reason_code: &str, actor: &str) -> Result<Self, InvalidInput> {
        if GATEWAY_ACTORS
            .iter()
            .any(|reserved| reserved.eq_ignore_ascii_case(actor))
        {
            return Err(InvalidInput::ReservedActor);
        }
        Self::by_gateway(reason_code, actor)
    }

    /// A change the gateway makes itself, by one of [`GATEWAY_ACTORS`].
    ///
    /// # Errors
    /// Either part is malformed.
    pub fn by_gateway(reason_code: &str, actor: &str) -> Result<Self, InvalidInput> {
        Ok(Self {
            reason_code: ReasonCode::parse(reason_code)?,
            actor: Actor::parse(actor)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_and_actors_are_checked() {
        assert!(ReasonCode::parse("user_request").is_ok());
        assert!(ReasonCode::parse("fraud.suspected-2").is_ok());
        for bad in ["", "Upper", "has space", &"x".repeat(65)] {
            assert!(ReasonCode::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Actor::parse("admin:alice@example.com").is_ok());
        for reserved in ["system", "user", "device", "System", "DEVICE"] {
            assert_eq!(
                ChangeReason::parse("fraud", reserved),
                Err(InvalidInput::ReservedActor),
                "{reserved:?}"
            );
            assert!(Actor::parse(reserved).is_ok(), "stored records keep them");
        }
        assert!(ChangeReason::by_gateway("logout", "device").is_ok());
        assert!(ChangeReason::parse("fraud", "system:cron").is_ok());
        for bad in ["", " padded", "tab\there", &"a".repeat(129), "naïve"] {
            assert!(Actor::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_refs_are_url_safe_words() {
        assert!(UserRef::parse("u_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA").is_ok());
        assert!(UserRef::parse("ext-42").is_ok());
        for bad in ["", "a/b", "a b", "%2F"] {
            assert!(UserRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_session_limit_is_null_or_a_whole_number_that_fits_u32() {
        use serde_json::json;
        for (raw, limit) in [
            (json!(null), None),
            (json!(0), Some(0)),
            (json!(3), Some(3)),
            (json!(2.0), Some(2)),
            (json!(4_294_967_295_u64), Some(u32::MAX)),
        ] {
            assert_eq!(session_limit(&raw), Ok(limit), "{raw}");
        }
        for raw in [
            json!(-1),
            json!(1.5),
            json!(4_294_967_296_u64),
            json!(4_294_967_296.0),
            json!("3"),
            json!(true),
            json!([3]),
            json!({}),
        ] {
            assert_eq!(
                session_limit(&raw),
                Err(InvalidInput::SessionLimit),
                "{raw}"
            );
        }
    }
}
