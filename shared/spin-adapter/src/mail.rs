//! Mail delivery adapters, chosen by the `mail_delivery` variable.
//!
//! - `webhook` (default): `POST <mail_webhook_url>` with `Authorization: Bearer
//!   <mail_webhook_token>` and JSON `{"to","code","challenge_id","expires_at","locale"}`.
//!   Any 2xx is `sent`; another status, a transport error or a timeout
//!   (`mail_webhook_timeout_ms`, default 5000) is `delivery_failed`.
//! - `log`: local development only. Prints the code and the address to the component log.

use std::time::Duration;

use anyhow::{Context, bail};
use edge_auth_domain::login::ports::{MailMessage, MailSender};
use serde::Serialize;
use spin_sdk::http::Method;

use crate::outbound::{self, Call};
use crate::settings::optional;

/// The configured mail adapter.
#[derive(Debug)]
pub enum Mailer {
    Webhook(WebhookMailer),
    Log,
}

impl Mailer {
    /// Builds the adapter named by `mail_delivery`. Send builds it before it answers, so
    /// a misconfigured mailer is a 503 that changed nothing, not a challenge nobody mails.
    ///
    /// # Errors
    /// An unknown adapter name, a webhook without its URL or token, a plain-`http://`
    /// URL to another machine ([`crate::outbound::require_tls`]), or unreadable variables.
    pub fn from_variables() -> anyhow::Result<Self> {
        match optional("mail_delivery")?.as_deref() {
            None | Some("webhook") => Ok(Self::Webhook(WebhookMailer {
                url: optional("mail_webhook_url")?
                    .context("mail_delivery is webhook, and mail_webhook_url is not set")
                    .and_then(|url| {
                        crate::outbound::require_tls("mail_webhook_url", &url)?;
                        Ok(url)
                    })?,
                token: optional("mail_webhook_token")?
                    .context("mail_delivery is webhook, and mail_webhook_token is not set")?,
                timeout: crate::settings::timeout("mail_webhook_timeout_ms", 5_000)?,
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
    url: String,
    token: String,
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
        let body = serde_json::to_vec(&WebhookBody {
            to: message.to.as_str(),
            code: message.code.expose(),
            challenge_id: message.challenge_id.as_str(),
            expires_at: message.expires_at.to_rfc3339(),
            locale: &message.locale,
        })?;
        // The status decides: a 2xx whose body is large or slow still sent the mail.
        let status = outbound::send_for_status(&Call {
            method: Method::Post,
            url: &self.url,
            bearer: &self.token,
            json_body: Some(&body),
            timeout: self.timeout,
        })
        .context("calling the mail webhook")?;
        if !(200..300).contains(&status) {
            bail!("the mail webhook answered {status}");
        }
        Ok(())
    }
}
