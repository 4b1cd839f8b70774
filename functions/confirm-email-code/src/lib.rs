//! `POST /api/v1/public/auth/confirm-email-code` `{"challenge_id","code","client_public_key"}`
//! → `200 {"device_session_id"}`.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::login::confirm::{
    ConfirmError, ConfirmRequest, Directory, confirm_email_code,
};
use edge_auth_domain::random::OsRandom;
use edge_auth_spin::http::{log_cause, read_json, respond, respond_error};
use edge_auth_spin::login_store::RedisLoginStore;
use edge_auth_spin::public_errors;
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::settings::{login_settings, optional};
use edge_auth_spin::user_directory::RestUserDirectory;
use serde::{Deserialize, Serialize};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

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
    let (body, caller) = match read_json::<ConfirmBody>(req).await {
        Ok(parsed) => parsed,
        Err(err) => return respond_error(out, &err).await,
    };
    let request = ConfirmRequest {
        challenge_id: body.challenge_id,
        code: body.code,
        client_public_key: body.client_public_key,
        client: caller.client,
        user_agent: caller.user_agent,
    };
    let run = || -> Result<_, ConfirmError> {
        let settings = login_settings()?;
        let store = RedisLoginStore::new(SpinRedis::connect()?);
        match optional("user_directory")?.as_deref() {
            None | Some("redis") => {
                confirm_email_code(&settings, &store, Directory::Redis, &OsRandom, &request)
            }
            Some("rest") => {
                let users = RestUserDirectory::from_variables()?;
                confirm_email_code(
                    &settings,
                    &store,
                    Directory::External(&users),
                    &OsRandom,
                    &request,
                )
            }
            Some(other) => Err(ConfirmError::Unexpected(anyhow::anyhow!(
                "user_directory must be `redis` or `rest`, got {other:?}"
            ))),
        }
    };
    match run() {
        Ok(confirmed) => {
            let id = confirmed.device_session_id.to_string();
            respond(
                out,
                200,
                &ConfirmResponse {
                    device_session_id: &id,
                },
                None,
            )
            .await;
        }
        Err(err) => {
            match &err {
                ConfirmError::Unexpected(cause) => log_cause("confirm-email-code failed", cause),
                ConfirmError::BadSessionLimit(reason) => eprintln!(
                    "confirm-email-code refused: invalid Redis setting `{}`: {reason}",
                    edge_auth_spin::keys::session_limit()
                ),
                _ => {}
            }
            respond_error(out, &public_errors::confirm(&err)).await;
        }
    }
}
