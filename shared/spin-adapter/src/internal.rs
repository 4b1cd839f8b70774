//! What the internal API's functions share beyond the edge ([`crate::http::serve`] checks
//! the token first): the revoke body, the block/unblock context, error mapping with the
//! cause logged, and session records as JSON.

use edge_auth_domain::error::PublicError;
use edge_auth_domain::ids::DeviceSessionId;
use edge_auth_domain::sessions::input::{Actor, ReasonCode, UserRef};
use edge_auth_domain::sessions::model::{AuditRecord, SessionRecord};
use edge_auth_domain::sessions::usecases::SessionError;
use serde::Serialize;

use crate::http::log_cause;
use crate::public_errors;

/// The `{"reason_code","actor"}` body of the revoke routes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub reason_code: String,
    pub actor: String,
}

/// What the block and unblock routes need: the store, the external directory when
/// `user_directory = rest`, and the server key (an address's tag comes from it).
#[derive(Debug)]
pub struct BlockContext {
    pub store: crate::session_store::RedisSessionStore,
    pub directory: Option<crate::user_directory::RestUserDirectory>,
    pub key: edge_auth_domain::crypto::ServerKey,
}

impl BlockContext {
    /// Reads the variables and opens Redis.
    ///
    /// # Errors
    /// A missing or invalid variable, or Redis unreachable.
    pub fn open() -> anyhow::Result<Self> {
        let key = crate::settings::tag_key()?;
        let directory = crate::user_directory::configured()?;
        Ok(Self {
            store: crate::session_store::RedisSessionStore::new(crate::redis::SpinRedis::connect()?),
            directory,
            key,
        })
    }

    /// The directory as the use cases take it.
    pub fn directory(&self) -> Option<&dyn edge_auth_domain::login::ports::UserDirectory> {
        self.directory
            .as_ref()
            .map(|d| d as &dyn edge_auth_domain::login::ports::UserDirectory)
    }
}

/// Notes a change's reason code, and the user a block or unblock names by id, for the
/// request's log line: both are checked (never an e-mail address; the actor, which may
/// name a person, is left out).
pub fn note_change(
    call: &crate::http::Call,
    reason: &edge_auth_domain::sessions::input::ChangeReason,
    target: Option<&edge_auth_domain::sessions::input::BlockTarget>,
) {
    call.note("reason_code", reason.reason_code.as_str());
    if let Some(edge_auth_domain::sessions::input::BlockTarget::User(user)) = target {
        call.note("user_id", user.as_str());
    }
}

/// Maps a use-case error, logging the cause of an unexpected one.
pub fn fail(context: &str, err: &SessionError) -> PublicError {
    match err {
        SessionError::Unexpected(cause) => log_cause(context, cause),
        SessionError::BlockedMeanwhile {
            unrecorded: Some(cause),
        } => log_cause(
            &format!("{context}: its audit record of a racing block"),
            cause,
        ),
        _ => {}
    }
    public_errors::session(err)
}

/// The API form of an audit record: present fields only, times in RFC 3339 UTC, fields in
/// alphabetical order (the order the API has always written them in).
#[derive(Debug, Serialize)]
pub struct AuditJson<'a> {
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_session_id: Option<&'a str>,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

/// The API form of `record`.
pub fn audit_json(record: &AuditRecord) -> AuditJson<'_> {
    AuditJson {
        action: record.action.as_str(),
        actor: record.actor.as_ref().map(Actor::as_str),
        at: record.at.to_rfc3339(),
        device_session_id: record
            .device_session_id
            .as_ref()
            .map(DeviceSessionId::as_str),
        id: &record.id,
        reason_code: record.reason_code.as_ref().map(ReasonCode::as_str),
        revoked_count: record.revoked_count,
        user_id: record.user_id.as_ref().map(UserRef::as_str),
    }
}

/// The API form of a session record (times in RFC 3339 UTC), serialized as it stands:
/// no JSON tree is built first, which cost a map insert and allocations per field of every
/// session on a list page. Fields in alphabetical order, the order the API has always
/// written them in.
#[derive(Debug, Serialize)]
pub struct SessionJson<'a> {
    client_addr: &'a str,
    client_public_key: &'a str,
    created_at: String,
    device_session_id: &'a str,
    expire_reason: Option<&'static str>,
    expired_at: Option<String>,
    expires_at: Option<String>,
    idle_expires_at: Option<String>,
    last_used_at: Option<String>,
    revoke_actor: Option<&'a str>,
    revoke_reason_code: Option<&'a str>,
    revoked_at: Option<String>,
    status: &'static str,
    user_agent: &'a str,
    user_id: &'a str,
}

/// The API form of `record`.
pub fn session_json(record: &SessionRecord) -> SessionJson<'_> {
    let revocation = record.revocation.as_ref();
    SessionJson {
        client_addr: &record.client_addr,
        client_public_key: record.client_public_key.as_str(),
        created_at: record.created_at.to_rfc3339(),
        device_session_id: record.device_session_id.as_str(),
        expire_reason: record.expired.map(|(_, why)| why.as_str()),
        expired_at: record.expired.map(|(at, _)| at.to_rfc3339()),
        expires_at: record.lifetime.map(|l| l.expires_at.to_rfc3339()),
        idle_expires_at: record.lifetime.map(|l| l.idle_deadline().to_rfc3339()),
        last_used_at: record.lifetime.map(|l| l.last_used_at.to_rfc3339()),
        revoke_actor: revocation.map(|r| r.actor.as_str()),
        revoke_reason_code: revocation.map(|r| r.reason_code.as_str()),
        revoked_at: revocation.map(|r| r.at.to_rfc3339()),
        status: record.status.as_str(),
        user_agent: &record.user_agent,
        user_id: record.user_id.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_auth_domain::ids::DeviceSessionId;
    use edge_auth_domain::public_key::StoredPublicKey;
    use edge_auth_domain::sessions::input::{Actor, ReasonCode, UserRef};
    use edge_auth_domain::sessions::model::AuditAction;
    use edge_auth_domain::sessions::model::{ExpireReason, Lifetime, Revocation, SessionStatus};
    use edge_auth_domain::time::Timestamp;
    use serde_json::Value;

    fn record() -> SessionRecord {
        SessionRecord {
            device_session_id: DeviceSessionId::parse("s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA")
                .expect("an id"),
            user_id: UserRef::parse("u_42").expect("a user"),
            client_public_key: StoredPublicKey::from_store(
                "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA=",
            )
            .expect("a key's shape"),
            status: SessionStatus::Revoked,
            created_at: Timestamp(1_700_000_000_000),
            revocation: Some(Revocation {
                at: Timestamp(1_700_000_100_000),
                reason_code: ReasonCode::parse("fraud.suspected").expect("a code"),
                actor: Actor::parse("admin:alice").expect("an actor"),
            }),
            client_addr: "203.0.113.7".into(),
            user_agent: "tests \"quoted\"".into(),
            lifetime: Some(Lifetime {
                expires_at: Timestamp(1_700_086_400_000),
                last_used_at: Timestamp(1_700_000_050_000),
                idle_timeout_ms: 3_600_000,
            }),
            expired: Some((Timestamp(1_700_003_650_000), ExpireReason::IdleTimeout)),
        }
    }

    #[test]
    fn a_session_is_written_with_every_field_in_alphabetical_order() {
        // The order serde_json's map gave the API before the DTO: clients see no change.
        let text = serde_json::to_string(&session_json(&record())).expect("serializes");
        assert_eq!(
            text,
            concat!(
                r#"{"client_addr":"203.0.113.7","#,
                r#""client_public_key":"ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA=","#,
                r#""created_at":"2023-11-14T22:13:20.000Z","#,
                r#""device_session_id":"s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA","#,
                r#""expire_reason":"idle_timeout","expired_at":"2023-11-14T23:14:10.000Z","#,
                r#""expires_at":"2023-11-15T22:13:20.000Z","#,
                r#""idle_expires_at":"2023-11-14T23:14:10.000Z","#,
                r#""last_used_at":"2023-11-14T22:14:10.000Z","#,
                r#""revoke_actor":"admin:alice","revoke_reason_code":"fraud.suspected","#,
                r#""revoked_at":"2023-11-14T22:15:00.000Z","status":"revoked","#,
                r#""user_agent":"tests \"quoted\"","user_id":"u_42"}"#,
            )
        );
    }

    #[test]
    fn a_session_without_revocation_or_lifetime_writes_nulls() {
        let mut plain = record();
        plain.revocation = None;
        plain.lifetime = None;
        plain.expired = None;
        plain.status = SessionStatus::Active;
        let value = serde_json::to_value(session_json(&plain)).expect("serializes");
        for field in [
            "revoked_at",
            "revoke_reason_code",
            "revoke_actor",
            "expires_at",
            "last_used_at",
            "idle_expires_at",
            "expired_at",
            "expire_reason",
        ] {
            assert_eq!(value[field], Value::Null, "{field}");
        }
        assert_eq!(value["status"], "active");
    }

    #[test]
    fn an_audit_record_is_written_with_its_present_fields_in_alphabetical_order() {
        let full = AuditRecord {
            id: "1700000000000-0".into(),
            action: AuditAction::BlockRevoke,
            at: Timestamp(1_700_000_000_000),
            device_session_id: Some(
                DeviceSessionId::parse("s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA").expect("id"),
            ),
            user_id: Some(UserRef::parse("u_42").expect("user")),
            reason_code: Some(ReasonCode::parse("fraud.suspected").expect("reason")),
            actor: Some(Actor::parse("admin:alice").expect("actor")),
            revoked_count: Some(3),
        };
        // The order serde_json's map gave the API before the DTO: clients see no change.
        assert_eq!(
            serde_json::to_string(&audit_json(&full)).expect("serializes"),
            concat!(
                r#"{"action":"block_revoke","actor":"admin:alice","#,
                r#""at":"2023-11-14T22:13:20.000Z","#,
                r#""device_session_id":"s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA","#,
                r#""id":"1700000000000-0","reason_code":"fraud.suspected","#,
                r#""revoked_count":3,"user_id":"u_42"}"#,
            )
        );
        let bare = AuditRecord {
            device_session_id: None,
            user_id: None,
            reason_code: None,
            actor: None,
            revoked_count: None,
            ..full
        };
        assert_eq!(
            serde_json::to_string(&audit_json(&bare)).expect("serializes"),
            r#"{"action":"block_revoke","at":"2023-11-14T22:13:20.000Z","id":"1700000000000-0"}"#
        );
    }
}
