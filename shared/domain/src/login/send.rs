//! `send-email-code`: create a challenge and answer success-shaped, whatever the address.
//!
//! The answer never depends on whether the address is new, known or blocked: every path
//! spends the same budgets, runs the same store calls and answers before any mail is sent.
//! (An address that is a variant of another's inbox costs one more call, whatever its
//! state: it spends the budget the inbox's variants share.)
//! Delivery ([`deliver`]) runs after the response has gone out, so its latency cannot
//! tell addresses apart either.

use crate::challenge::ChallengeState;
use crate::client::ClientHops;
use crate::code::VerificationCode;
use crate::email::{EmailAddress, EmailError};
use crate::ids::ChallengeId;
use crate::login::ports::{
    CreateOutcome, GuardOutcome, GuardRequest, LoginStore, MailMessage, MailSender, NewChallenge,
};
use crate::login::settings::{DirectoryKind, LoginSettings};
use crate::random::Random;
use crate::time::millis;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub email: String,
    /// Where the request came from (peer and proxy headers).
    pub client: ClientHops,
    pub locale: String,
}

/// The success answer, plus the delivery to run after it (if any).
#[derive(Debug)]
pub struct SendOutcome {
    pub challenge_id: ChallengeId,
    pub delivery: Option<MailMessage>,
}

/// Why `send-email-code` failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    InvalidEmail(#[from] EmailError),
    #[error("rate limited; retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Runs the use case up to the response.
///
/// # Errors
/// See [`SendError`]; no error leaves a stored challenge behind.
pub fn send_email_code(
    settings: &LoginSettings,
    store: &impl LoginStore,
    random: &impl Random,
    request: &SendRequest,
) -> Result<SendOutcome, SendError> {
    let email = EmailAddress::parse(&request.email)?;
    let address_mac = settings.key.address_mac(&email);
    let tag = address_mac.tag();
    let guard = store.guard(&GuardRequest {
        budgets: vec![
            settings.limits.client_budget(
                "send",
                settings
                    .clients
                    .budget_key(&settings.clients.resolve(&request.client)),
            ),
        ],
        held: Vec::new(),
        read_session_limit: false,
    })?;
    if let GuardOutcome::Limited { retry_after_ms } = guard {
        return Err(SendError::RateLimited { retry_after_ms });
    }
    // Variants of one inbox (`ada+1@…`, `a.da@gmail.com`) are addresses of their own,
    // each with its own budget, but one person reads their mail: they also share one
    // budget, or anyone could mail a victim without bound by making up variants. Not the
    // budget of the inbox's own address: spending that, anyone who knows the inbox could
    // keep its owner from logging in without knowing any variant. One more round trip,
    // for such addresses only.
    if let Some(mailbox) = email.mailbox() {
        let budget = settings.limits.per_address;
        if let Some(retry_after_ms) =
            store.spend_send_budget(settings.key.address_tag(&mailbox), budget)?
        {
            return Err(SendError::RateLimited { retry_after_ms });
        }
    }

    let policy = &settings.policy;
    let id = ChallengeId::generate(tag, random)?;
    let code = VerificationCode::generate(policy.code_length, random)?;
    let challenge = NewChallenge {
        id: id.clone(),
        email: (settings.directory == DirectoryKind::Rest).then(|| email.clone()),
        address_mac,
        code_mac: settings.key.code_mac(&id, code.expose()),
        lifetime_ms: millis(policy.lifetime),
        address_budget: settings.limits.per_address,
        max_attempts: policy.max_attempts,
        resend_interval_ms: millis(policy.resend_interval),
        keep_ms: millis(policy.lifetime + policy.idempotency_window),
    };
    Ok(match store.create_challenge(&challenge)? {
        CreateOutcome::Created { state, expires_at } => SendOutcome {
            challenge_id: id.clone(),
            delivery: (state == ChallengeState::Pending).then(|| MailMessage {
                to: email,
                code,
                challenge_id: id,
                expires_at,
                locale: request.locale.clone(),
            }),
        },
        // Same shape as a new challenge: the newest one stays the one to confirm.
        CreateOutcome::Throttled { latest } => SendOutcome {
            challenge_id: latest,
            delivery: None,
        },
        CreateOutcome::RateLimited { retry_after_ms } => {
            return Err(SendError::RateLimited { retry_after_ms });
        }
    })
}

/// Delivers a code and hands the store its outcome (`sent` or `delivery_failed`; a store
/// may keep a mailed challenge `pending`, see [`LoginStore::record_delivery`]).
///
/// # Errors
/// Only a store failure while recording, with the mail's own failure, if any, in its
/// context; a mail failure is an outcome, returned as `Ok(ChallengeState::DeliveryFailed)`
/// with the cause for the log.
pub fn deliver(
    store: &impl LoginStore,
    mailer: &impl MailSender,
    message: &MailMessage,
) -> anyhow::Result<(ChallengeState, Option<anyhow::Error>)> {
    let (state, cause) = match mailer.send(message) {
        Ok(()) => (ChallengeState::Sent, None),
        Err(e) => (ChallengeState::DeliveryFailed, Some(e)),
    };
    if let Err(record) = store.record_delivery(&message.challenge_id, state) {
        // Both causes reach the log: the mail's, then why its outcome was not stored.
        return Err(match cause {
            Some(mail) => record.context(format!("the mail failed ({mail:#}); recording that")),
            None => record,
        });
    }
    Ok((state, cause))
}
