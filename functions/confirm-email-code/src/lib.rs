//! `POST /api/v1/public/auth/confirm-email-code` `{"challenge_id","code","client_public_key"}`
//! → `200 {"device_session_id"}`.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::login::confirm::{
    ConfirmError, ConfirmRequest, Directory, confirm_email_code,
};
use edge_auth_domain::random::OsRandom;
use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::login_store::RedisLoginStore;
use edge_auth_spin::metrics::{self, Counter};
use edge_auth_spin::public_errors;
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::request_log;
use edge_auth_spin::settings::login_settings;
use edge_auth_spin::user_directory;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::public(true);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    challenge_id: String,
    code: String,
    client_public_key: String,
}

#[derive(Serialize)]
struct ConfirmResponse<'a> {
    device_session_id: &'a str,
}

#[http_component]
async fn handle_confirm_email_code(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let body: ConfirmBody = call.json()?;
        if edge_auth_domain::ids::ChallengeId::parse(body.challenge_id.trim()).is_ok() {
            request_log::note("challenge_id", body.challenge_id.trim());
        }
        let request = ConfirmRequest {
            challenge_id: body.challenge_id,
            code: body.code,
            client_public_key: body.client_public_key,
            client: call.caller.client,
            user_agent: call.caller.user_agent,
        };
        let run = || -> Result<_, ConfirmError> {
            let settings = login_settings()?;
            let store = RedisLoginStore::new(SpinRedis::connect()?);
            let users = user_directory::configured()?;
            let directory = match &users {
                Some(users) => Directory::External(users),
                None => Directory::Redis,
            };
            confirm_email_code(&settings, &store, directory, &OsRandom, &request)
        };
        let confirmed = run().map_err(|err| {
            match &err {
                ConfirmError::Unexpected(cause) => log_cause("confirm-email-code failed", cause),
                // Refused after the store's script, which counted only what it decided.
                ConfirmError::UserBlocked | ConfirmError::SignUpRefused => {
                    metrics::count(&Counter::ConfirmResult("blocked_by_policy"));
                }
                ConfirmError::BadSessionLimit(reason) => request_log::error(&format!(
                    "confirm-email-code refused: invalid Redis setting `{}`: {reason} \
                     (set it with POST /api/v1/internal/config/session-limit)",
                    edge_auth_spin::keys::SESSION_LIMIT_KEYS
                )),
                _ => {}
            }
            let answer = public_errors::confirm(&err);
            // A 503 is the login's result, whatever a step before it counted.
            if answer.status == 503 {
                metrics::uncount_confirmed();
                metrics::count(&Counter::ConfirmResult(answer.code));
            }
            answer
        })?;
        let id = confirmed.device_session_id.to_string();
        request_log::note("device_session_id", id.clone());
        Answer::ok(&ConfirmResponse {
            device_session_id: &id,
        })
    })
    .await;
}
