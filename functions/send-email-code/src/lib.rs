//! `POST /api/v1/public/auth/send-email-code` `{"email"}` → `200 {"challenge_id"}`.
//!
//! Answers before delivering: the response is identical in shape and timing for new,
//! known and blocked addresses; the mail goes out (or not) after the client has its answer.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::login::send::{SendRequest, deliver, send_email_code};
use edge_auth_domain::random::OsRandom;
use edge_auth_spin::http::{log_cause, read_json, respond, respond_error};
use edge_auth_spin::login_store::RedisLoginStore;
use edge_auth_spin::mail::Mailer;
use edge_auth_spin::public_errors;
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::settings::login_settings;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    email: String,
}

#[derive(Serialize)]
struct SendResponse<'a> {
    challenge_id: &'a str,
}

#[http_component]
async fn handle_send_email_code(req: IncomingRequest, out: ResponseOutparam) {
    let (body, caller) = match read_json::<SendBody>(req).await {
        Ok(parsed) => parsed,
        Err(err) => return respond_error(out, &err).await,
    };
    let request = SendRequest {
        email: body.email,
        client: caller.client,
        locale: caller.locale,
    };
    let run = || -> Result<_, edge_auth_domain::login::send::SendError> {
        let settings = login_settings()?;
        let store = RedisLoginStore::new(SpinRedis::connect()?);
        let outcome = send_email_code(&settings, &store, &OsRandom, &request)?;
        Ok((store, outcome))
    };
    let (store, outcome) = match run() {
        Ok(done) => done,
        Err(err) => {
            if let edge_auth_domain::login::send::SendError::Unexpected(cause) = &err {
                log_cause("send-email-code failed", cause);
            }
            return respond_error(out, &public_errors::send(&err)).await;
        }
    };
    let challenge_id = outcome.challenge_id.to_string();
    respond(
        out,
        200,
        &SendResponse {
            challenge_id: &challenge_id,
        },
        None,
    )
    .await;

    // The client has its answer; now deliver (or not: suppressed and throttled
    // challenges have no delivery).
    let Some(message) = outcome.delivery else {
        return;
    };
    let result = Mailer::from_variables().and_then(|mailer| deliver(&store, &mailer, &message));
    match result {
        Ok((state, None)) => println!("challenge {challenge_id}: {}", state.as_str()),
        Ok((state, Some(cause))) => {
            log_cause(
                &format!("challenge {challenge_id}: {}", state.as_str()),
                &cause,
            );
        }
        Err(cause) => log_cause(
            &format!("challenge {challenge_id}: delivery not recorded"),
            &cause,
        ),
    }
}
