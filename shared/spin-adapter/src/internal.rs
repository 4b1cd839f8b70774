//! What the internal API's functions share beyond the edge ([`crate::http::serve`] checks
//! the token first): the revoke body, the block/unblock context, error mapping with the
//! cause logged, and session records as JSON.

use edge_auth_domain::error::PublicError;
use edge_auth_domain::sessions::model::SessionRecord;
use edge_auth_domain::sessions::usecases::SessionError;
use serde_json::{Value, json};

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
        let key = edge_auth_domain::crypto::ServerKey::new(
            crate::config::variable("code_hmac_key")?.as_bytes(),
        )?;
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

/// The API form of a session record (times in RFC 3339 UTC).
pub fn session_json(record: &SessionRecord) -> Value {
    json!({
        "device_session_id": record.device_session_id,
        "user_id": record.user_id,
        "client_public_key": record.client_public_key,
        "status": record.status.as_str(),
        "created_at": record.created_at.to_rfc3339(),
        "revoked_at": record.revoked_at.map(|t| t.to_rfc3339()),
        "revoke_reason_code": record.revoke_reason_code,
        "revoke_actor": record.revoke_actor,
        "client_addr": record.client_addr,
        "user_agent": record.user_agent,
        "expires_at": record.lifetime.map(|l| l.expires_at.to_rfc3339()),
        "last_used_at": record.lifetime.map(|l| l.last_used_at.to_rfc3339()),
        "idle_expires_at": record.lifetime.map(|l| l.idle_deadline().to_rfc3339()),
        "expired_at": record.expired.map(|(at, _)| at.to_rfc3339()),
        "expire_reason": record.expired.map(|(_, why)| why.as_str()),
    })
}
