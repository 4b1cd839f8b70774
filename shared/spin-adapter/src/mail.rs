//! Mail delivery adapters, chosen by the `mail_delivery` variable.
//!
//! - `webhook` (default): `POST <mail_webhook_url>` with `Authorization: Bearer
//!   <mail_webhook_token>` and JSON `{"to","code","challenge_id","expires_at","locale"}`.
//!   Any 2xx is `sent`; another status, a transport error or a timeout
//!   (`mail_webhook_timeout_ms`, default 5000) is `delivery_failed`.
//! - `log`: local development only. Prints the code to the component log.

use std::time::Duration;

use anyhow::{Context, bail};
use edge_auth_domain::login::ports::{MailMessage, MailSender};
use serde::Serialize;
use spin_sdk::http::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::RequestOptions;

use crate::settings::optional;

/// The configured mail adapter.
#[derive(Debug)]
pub enum Mailer {
    Webhook(WebhookMailer),
    Log,
}

impl Mailer {
    /// Builds the adapter named by `mail_delivery`.
    ///
    /// # Errors
    /// An unknown adapter name or unreadable variables.
    pub fn from_variables() -> anyhow::Result<Self> {
        match optional("mail_delivery")?.as_deref() {
            None | Some("webhook") => Ok(Self::Webhook(WebhookMailer {
                url: optional("mail_webhook_url")?,
                token: optional("mail_webhook_token")?,
                timeout: Duration::from_millis(
                    optional("mail_webhook_timeout_ms")?
                        .map(|v| v.parse::<u64>())
                        .transpose()
                        .context("mail_webhook_timeout_ms must be an integer")?
                        .unwrap_or(5_000),
                ),
            })),
            Some("log") => Ok(Self::Log),
            Some(other) => bail!("mail_delivery must be `webhook` or `log`, got {other:?}"),
        }
    }
}

impl MailSender for Mailer {
    fn send(&self, message: &MailMessage) -> anyhow::Result<()> {
        match self {
            Self::Webhook(webhook) => webhook.send(message),
            Self::Log => {
                println!(
                    "[dev mail: mail_delivery=log] to={} challenge_id={} code={} expires_at={}",
                    message.to.as_str(),
                    message.challenge_id,
                    message.code.expose(),
                    message.expires_at.to_rfc3339()
                );
                Ok(())
            }
        }
    }
}

/// The webhook adapter.
pub struct WebhookMailer {
    url: Option<String>,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMailer")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    to: &'a str,
    code: &'a str,
    challenge_id: &'a str,
    expires_at: String,
    locale: &'a str,
}

impl WebhookMailer {
    fn send(&self, message: &MailMessage) -> anyhow::Result<()> {
        let url = self.url.as_deref().context("mail_webhook_url is not set")?;
        let token = self
            .token
            .as_deref()
            .context("mail_webhook_token is not set")?;
        let body = serde_json::to_vec(&WebhookBody {
            to: message.to.as_str(),
            code: message.code.expose(),
            challenge_id: message.challenge_id.as_str(),
            expires_at: message.expires_at.to_rfc3339(),
            locale: &message.locale,
        })?;
        let status = post_json(url, token, &body, self.timeout)?;
        if !(200..300).contains(&status) {
            bail!("the mail webhook answered {status}");
        }
        Ok(())
    }
}

/// POSTs `body` and returns the status, with connect and first-byte timeouts.
fn post_json(url: &str, token: &str, body: &[u8], timeout: Duration) -> anyhow::Result<u16> {
    let uri: http::Uri = url.parse().context("mail_webhook_url is not a URL")?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        _ => bail!("mail_webhook_url must be http:// or https://"),
    };
    let authority = uri
        .authority()
        .context("mail_webhook_url has no host")?
        .to_string();
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());

    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "authorization".to_string(),
            format!("Bearer {token}").into_bytes(),
        ),
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .map_err(|e| anyhow::anyhow!("building webhook headers: {e:?}"))?;
    let request = OutgoingRequest::new(headers);
    let fail = |what: &str| anyhow::anyhow!("building the webhook request: {what}");
    request
        .set_method(&Method::Post)
        .map_err(|()| fail("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| fail("scheme"))?;
    request
        .set_authority(Some(&authority))
        .map_err(|()| fail("authority"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| fail("path"))?;
    let outgoing = request.body().map_err(|()| fail("body"))?;
    {
        let stream = outgoing.write().map_err(|()| fail("body stream"))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| anyhow::anyhow!("writing the webhook body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing, None)
        .map_err(|e| anyhow::anyhow!("finishing the webhook body: {e:?}"))?;

    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let future = outgoing_handler::handle(request, Some(options))
        .map_err(|e| anyhow::anyhow!("sending the webhook request: {e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .context("the webhook response was not ready")?
        .map_err(|()| anyhow::anyhow!("the webhook response was already taken"))?
        .map_err(|e| anyhow::anyhow!("the webhook request failed: {e:?}"))?;
    Ok(response.status())
}
