//! What the internal API's functions share beyond the edge ([`crate::http::serve`] checks
//! the token first): the revoke body, the block/unblock context, error mapping with the
//! cause logged, and session records as JSON.

use edge_auth_domain::error::PublicError;
use edge_auth_domain::sessions::model::{AuditRecord, SessionRecord};
use edge_auth_domain::sessions::usecases::SessionError;
use serde_json::{Map, Value, json};

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

/// Maps a use-case error, logging the cause of an unexpected one.
pub fn fail(context: &str, err: &SessionError) -> PublicError {
    if let SessionError::Unexpected(cause) = err {
        log_cause(context, cause);
    }
    public_errors::session(err)
}

/// The API form of an audit record: present fields only, times in RFC 3339 UTC.
pub fn audit_json(record: &AuditRecord) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), json!(record.id));
    object.insert("action".into(), json!(record.action.as_str()));
    object.insert("at".into(), json!(record.at.to_rfc3339()));
    let optional = [
        ("device_session_id", record.device_session_id.as_deref()),
        ("user_id", record.user_id.as_deref()),
        ("reason_code", record.reason_code.as_deref()),
        ("actor", record.actor.as_deref()),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            object.insert(name.into(), json!(value));
        }
    }
    if let Some(n) = record.revoked_count {
        object.insert("revoked_count".into(), json!(n));
    }
    Value::Object(object)
}

/// The API form of a session record (times in RFC 3339 UTC).
pub fn session_json(record: &SessionRecord) -> Value {
    json!({
        "device_session_id": record.device_session_id.as_str(),
        "user_id": record.user_id.as_str(),
        "client_public_key": record.client_public_key.as_str(),
        "status": record.status.as_str(),
        "created_at": record.created_at.to_rfc3339(),
        "revoked_at": record.revocation.as_ref().map(|r| r.at.to_rfc3339()),
        "revoke_reason_code": record.revocation.as_ref().map(|r| r.reason_code.as_str()),
        "revoke_actor": record.revocation.as_ref().map(|r| r.actor.as_str()),
        "client_addr": record.client_addr,
        "user_agent": record.user_agent,
        "expires_at": record.lifetime.map(|l| l.expires_at.to_rfc3339()),
        "last_used_at": record.lifetime.map(|l| l.last_used_at.to_rfc3339()),
        "idle_expires_at": record.lifetime.map(|l| l.idle_deadline().to_rfc3339()),
        "expired_at": record.expired.map(|(at, _)| at.to_rfc3339()),
        "expire_reason": record.expired.map(|(_, why)| why.as_str()),
    })
}
