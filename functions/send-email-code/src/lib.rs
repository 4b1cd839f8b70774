//! `POST /api/v1/public/auth/send-email-code` `{"email"}` → `200 {"challenge_id"}`.
//!
//! Answers before delivering: the response is identical in shape and timing for new,
//! known and blocked addresses; the mail goes out (or not) after the client has its answer.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::login::send::{SendError, SendRequest, deliver, send_email_code};
use edge_auth_domain::random::OsRandom;
use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::login_store::RedisLoginStore;
use edge_auth_spin::mail::Mailer;
use edge_auth_spin::public_errors;
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::request_log;
use edge_auth_spin::settings::login_settings;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::public(true);

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
    serve(req, out, ROUTE, |call| {
        let body: SendBody = call.json()?;
        let request = SendRequest {
            email: body.email,
            client: call.caller.client,
            locale: call.caller.locale,
        };
        let run = || -> Result<_, SendError> {
            let settings = login_settings()?;
            // Before anything is stored: a mailer that cannot send is a 503 that changed
            // nothing, not a challenge that is never mailed.
            let mailer = Mailer::from_variables()?;
            let store = RedisLoginStore::new(SpinRedis::connect()?);
            let outcome = send_email_code(&settings, &store, &OsRandom, &request)?;
            Ok((store, mailer, outcome))
        };
        let (store, mailer, outcome) = run().map_err(|err| {
            if let SendError::Unexpected(cause) = &err {
                log_cause("send-email-code failed", cause);
            }
            public_errors::send(&err)
        })?;
        let challenge_id = outcome.challenge_id.to_string();
        request_log::note("challenge_id", challenge_id.clone());
        let answer = Answer::ok(&SendResponse {
            challenge_id: &challenge_id,
        })?;
        // Suppressed and throttled challenges have no delivery; a new one is delivered
        // once the client has its answer.
        let Some(message) = outcome.delivery else {
            return Ok(answer);
        };
        // The request's log line, written once this has run, says how delivery went.
        Ok(
            answer.then(move || match deliver(&store, &mailer, &message) {
                Ok((state, cause)) => {
                    request_log::note("delivery", state.as_str());
                    if let Some(cause) = cause {
                        log_cause(
                            &format!("challenge {challenge_id}: delivery failed"),
                            &cause,
                        );
                    }
                }
                Err(cause) => {
                    request_log::note("delivery", "not_recorded");
                    log_cause(
                        &format!("challenge {challenge_id}: delivery not recorded"),
                        &cause,
                    );
                }
            }),
        )
    })
    .await;
}
