//! The REST adapter for an external user directory (`user_directory = rest`).
//!
//! Contract (also in the OpenAPI file, under `webhooks`), every call with
//! `Authorization: Bearer <user_service_token>`:
//! - `GET {user_service_url}/users/by-email?email=<address>` → `200 {"user_id","blocked"}`
//!   or `404` (no such user). Reads are retried twice on a transport error, a timeout or
//!   a 5xx.
//! - `POST {user_service_url}/users` `{"email"}` → `200`/`201 {"user_id","blocked"}`;
//!   the service makes it idempotent per address. Not retried: on failure the confirm
//!   answers `service_unavailable` and the challenge stays usable.
//!
//! - `PUT {user_service_url}/users/{user_id}/blocked` `{"blocked": bool}` → any 2xx, or
//!   `404` (no such user). Idempotent, so retried like reads. Used by the internal block
//!   and unblock routes.
//!
//! Anything else (another status, a body that is not the JSON above) is an error and the
//! call fails closed with `service_unavailable`.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use edge_auth_domain::email::EmailAddress;
use edge_auth_domain::login::ports::{DirectoryUser, UserDirectory};
use edge_auth_domain::login::settings::DirectoryKind;
use serde::Deserialize;
use spin_sdk::http::Method;

use crate::metrics::{self, Counter, Directory, Resolution};
use crate::outbound::{self, Call};
use crate::request_log;
use crate::settings::optional;

/// Retries of an idempotent read after the first try.
const READ_RETRIES: u32 = 2;

/// The REST user directory.
pub struct RestUserDirectory {
    base: String,
    token: String,
    timeout: Duration,
}

impl std::fmt::Debug for RestUserDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestUserDirectory")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct UserBody {
    user_id: String,
    blocked: bool,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The external directory `user_directory` names: `None` for `redis` (the default),
/// the REST adapter for `rest`.
///
/// # Errors
/// Any other value (named in the message, never a silent fallback), or a REST directory
/// missing its variables.
pub fn configured() -> anyhow::Result<Option<RestUserDirectory>> {
    let raw = optional("user_directory")?;
    match DirectoryKind::parse(raw.as_deref()).context("invalid user_directory")? {
        DirectoryKind::Redis => Ok(None),
        DirectoryKind::Rest => RestUserDirectory::from_variables().map(Some),
    }
}

impl RestUserDirectory {
    /// Builds the adapter from `user_service_url`, `user_service_token` and
    /// `user_service_timeout_ms` (default 2000).
    ///
    /// # Errors
    /// A missing URL or token, a plain-`http://` URL to another machine
    /// ([`outbound::require_tls`]), or a timeout that is not a whole number of ms in
    /// 1–60000.
    pub fn from_variables() -> anyhow::Result<Self> {
        let base = optional("user_service_url")?
            .context("user_directory = rest needs user_service_url")?;
        outbound::require_tls("user_service_url", &base)?;
        let token = optional("user_service_token")?
            .context("user_directory = rest needs user_service_token")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            timeout: crate::settings::timeout("user_service_timeout_ms", 2_000)?,
        })
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        outbound::send(&Call {
            method,
            url: &format!("{}{path}", self.base),
            bearer: &self.token,
            json_body: body,
            timeout: self.timeout,
        })
    }
}

fn user(status: u16, body: &[u8]) -> anyhow::Result<DirectoryUser> {
    let parsed: UserBody = serde_json::from_slice(body).map_err(|e| {
        // serde's message can quote a value of the body (`invalid type: string
        // "alice@example.com"`), and this error is logged: its kind and place only.
        anyhow::anyhow!(
            "the user service answered {status} with an unexpected body: a JSON {:?} error at line {}, column {}",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    Ok(DirectoryUser {
        user_id: parsed.user_id,
        blocked: parsed.blocked,
    })
}

impl RestUserDirectory {
    /// An idempotent call, retried on a transport error, a timeout or a 5xx.
    fn idempotent(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        what: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut last_error = None;
        for _ in 0..=READ_RETRIES {
            match self.call(method.clone(), path, body) {
                Ok((status, _)) if status >= 500 => {
                    last_error = Some(anyhow::anyhow!("the user service answered {status}"));
                }
                Ok(answer) => return Ok(answer),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no attempt was made"))
            .context(format!("{what}, {} tries", READ_RETRIES + 1)))
    }
}

impl UserDirectory for RestUserDirectory {
    fn resolve(&self, email: &EmailAddress) -> anyhow::Result<Option<DirectoryUser>> {
        let path = format!("/users/by-email?email={}", encode(email.as_str()));
        let found = match self.idempotent(Method::Get, &path, None, "looking the user up") {
            Ok((200, body)) => user(200, &body).map(Some),
            Ok((404, _)) => Ok(None),
            Ok((status, _)) => Err(anyhow!("the user service answered {status} to a lookup")),
            Err(e) => Err(e),
        };
        let resolution = match &found {
            Ok(Some(user)) if user.blocked => Resolution::Blocked,
            Ok(Some(_)) => Resolution::Existing,
            Ok(None) => Resolution::NotFound,
            Err(_) => Resolution::Failed,
        };
        metrics::count(&Counter::UserResolution(Directory::Rest, resolution));
        found
    }

    fn set_blocked(&self, user_id: &str, blocked: bool) -> anyhow::Result<bool> {
        let path = format!("/users/{}/blocked", encode(user_id));
        let body = serde_json::to_vec(&serde_json::json!({ "blocked": blocked }))?;
        match self.idempotent(Method::Put, &path, Some(&body), "setting the block")? {
            (200..=299, _) => Ok(true),
            (404, _) => {
                // A deleted user, or a misconfigured block route (then every change
                // answers so): the request's log line says which answer it got.
                request_log::note("user_service", "user_unknown");
                Ok(false)
            }
            (status, _) => bail!("the user service answered {status} to a block change"),
        }
    }

    fn create(&self, email: &EmailAddress) -> anyhow::Result<Option<DirectoryUser>> {
        let body = serde_json::to_vec(&serde_json::json!({ "email": email.as_str() }))?;
        let created = match self
            .call(Method::Post, "/users", Some(&body))
            .context("creating the user")
        {
            Ok((status @ (200 | 201), body)) => user(status, &body).map(Some),
            // The service refuses a user for this address (closed sign-ups), and says so:
            // a bare 403 is more likely a token without the right to create users, which
            // must not quietly close sign-ups.
            Ok((403, body)) if sign_up_refused(&body) => Ok(None),
            Ok((403, _)) => Err(anyhow!(
                "the user service answered 403 to a create without {{\"error\":\"sign_up_refused\"}} \
                 (does user_service_token allow creating users?)"
            )),
            Ok((status, _)) => Err(anyhow!("the user service answered {status} to a create")),
            Err(e) => Err(e),
        };
        let resolution = match &created {
            Ok(Some(_)) => Resolution::Created,
            Ok(None) => Resolution::Refused,
            Err(_) => Resolution::Failed,
        };
        metrics::count(&Counter::UserResolution(Directory::Rest, resolution));
        created
    }
}

/// Whether a create's 403 body is the refusal of a new user: `{"error": "sign_up_refused"}`.
fn sign_up_refused(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v.get("error").and_then(serde_json::Value::as_str) == Some("sign_up_refused")
    })
}

#[cfg(test)]
mod tests {
    use super::{encode, user};

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("a.b+c@x-y.com"), "a.b%2Bc%40x-y.com");
    }

    #[test]
    fn an_unexpected_user_body_is_described_without_quoting_it() {
        for body in [
            &br#""alice@example.com""#[..],
            br#"{"user_id": ["alice@example.com"], "blocked": false}"#,
            br#"{"user_id": "u1", "blocked": "alice@example.com"}"#,
            br#"{"alice@example.com": 1}"#,
        ] {
            let err = format!("{:#}", user(200, body).expect_err("unexpected"));
            assert!(!err.contains("alice"), "{err}");
            assert!(
                err.contains("answered 200 with an unexpected body"),
                "{err}"
            );
        }
        assert_eq!(
            user(200, br#"{"user_id": "u1", "blocked": true}"#)
                .expect("a user")
                .user_id,
            "u1"
        );
    }
}
