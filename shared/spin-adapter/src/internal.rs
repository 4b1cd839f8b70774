//! The trusted internal API's edge: token check first, then method and body checks, then
//! the handler; session records as JSON.
//!
//! Without `Authorization: Bearer <internal_api_token>` (compared in constant time) every
//! internal route answers `401 unauthorized`, whatever the method, path or body, so
//! nothing about the route or its data leaks.

use std::collections::HashMap;

use edge_auth_domain::error::PublicError;
use edge_auth_domain::sessions::auth::InternalApiToken;
use edge_auth_domain::sessions::model::SessionRecord;
use edge_auth_domain::sessions::usecases::SessionError;
use serde_json::{Value, json};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};

use crate::http::{header, log_cause, read_body, respond, respond_error};
use crate::public_errors;
use crate::settings::optional;

/// The `{"reason_code","actor"}` body of the revoke routes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub reason_code: String,
    pub actor: String,
}

/// What a handler gets from the request.
#[derive(Debug, Default)]
pub struct Call {
    params: HashMap<String, String>,
    query: Vec<(String, String)>,
    /// The JSON body of a `POST` (empty for `GET`).
    pub body: Vec<u8>,
}

impl Call {
    /// A `:name` route segment (as Spin passes it in `spin-path-match-<name>`), decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A query parameter, decoded; the first one if repeated.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decodes (`+` stays `+`); invalid escapes stay as written.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(path_with_query: &str) -> Vec<(String, String)> {
    path_with_query
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// Serves one internal request: authorise, check the method, read the body of a `POST`,
/// run `handler`, answer with its status and JSON.
pub async fn serve(
    req: IncomingRequest,
    out: ResponseOutparam,
    method: Method,
    path_params: &[&str],
    handler: impl FnOnce(Call) -> Result<(u16, Value), PublicError>,
) {
    // A missing or weak token locks the whole internal API (Spin has no start-up hook
    // for components, so every request says so in the log).
    let token = match optional("internal_api_token") {
        Ok(token) => InternalApiToken::parse(&token.unwrap_or_default())
            .map_err(|weak| anyhow::Error::new(weak).context("the internal API is locked")),
        Err(e) => Err(e.context("reading internal_api_token")),
    };
    let token = match token {
        Ok(token) => token,
        Err(e) => {
            log_cause("internal_api_token", &e);
            return respond_error(out, &public_errors::unavailable()).await;
        }
    };
    let authorization = header(&req, "authorization").pop();
    if !token.authorizes(authorization.as_deref()) {
        return respond_error(out, &public_errors::unauthorized()).await;
    }
    if req.method() != method {
        let allowed = if method == Method::Get { "GET" } else { "POST" };
        let err = PublicError::new(
            405,
            "method_not_allowed",
            format!("this route accepts {allowed} only"),
        );
        return respond_error(out, &err).await;
    }
    let mut call = Call {
        query: query_pairs(&req.path_with_query().unwrap_or_default()),
        ..Call::default()
    };
    for name in path_params {
        // Spin names the header with hyphens only (`:device_session_id` arrives as
        // `spin-path-match-device-session-id`), and appends its own value after any a
        // client sent: the last one is Spin's.
        let header_name = format!("spin-path-match-{}", name.replace('_', "-"));
        if let Some(value) = header(&req, &header_name).pop() {
            call.params.insert((*name).to_string(), decode(&value));
        }
    }
    if method == Method::Post {
        match read_body(req).await {
            Ok((body, _)) => call.body = body,
            Err(err) => return respond_error(out, &err).await,
        }
    }
    match handler(call) {
        Ok((status, body)) => respond(out, status, &body, None).await,
        Err(err) => respond_error(out, &err).await,
    }
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
        let directory = match optional("user_directory")?.as_deref() {
            Some("rest") => Some(crate::user_directory::RestUserDirectory::from_variables()?),
            _ => None,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let pairs = query_pairs("/x?status=all&cursor=0001%7Cs_a&limit=5&flag");
        assert_eq!(
            pairs,
            vec![
                ("status".into(), "all".into()),
                ("cursor".into(), "0001|s_a".into()),
                ("limit".into(), "5".into()),
                ("flag".into(), String::new()),
            ]
        );
    }
}
