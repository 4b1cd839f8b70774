//! `POST /api/v1/internal/users/unblock` `{"email"|"user_id","reason_code","actor"}` →
//! `{"blocked":false}`. Confirm and mail work again; revoked sessions stay revoked.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::crypto::ServerKey;
use edge_auth_domain::login::ports::UserDirectory;
use edge_auth_domain::sessions::input::{BlockTarget, ChangeReason};
use edge_auth_domain::sessions::usecases::{SessionError, unblock};
use edge_auth_domain::time::Timestamp;
use edge_auth_spin::config::variable;
use edge_auth_spin::http::parse_json;
use edge_auth_spin::internal::{fail, serve};
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::session_store::RedisSessionStore;
use edge_auth_spin::settings::optional;
use edge_auth_spin::user_directory::RestUserDirectory;
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnblockBody {
    email: Option<String>,
    user_id: Option<String>,
    reason_code: String,
    actor: String,
}

#[http_component]
async fn handle_unblock_user(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, Method::Post, &[], |call| {
        let body: UnblockBody = parse_json(&call.body)?;
        let run = || -> Result<_, SessionError> {
            let target = BlockTarget::parse(body.email.as_deref(), body.user_id.as_deref())?;
            let reason = ChangeReason::parse(&body.reason_code, &body.actor)?;
            let key = ServerKey::new(variable("code_hmac_key")?.as_bytes())
                .map_err(anyhow::Error::from)?;
            let store = RedisSessionStore::new(SpinRedis::connect()?);
            let rest = match optional("user_directory")?.as_deref() {
                Some("rest") => Some(RestUserDirectory::from_variables()?),
                _ => None,
            };
            let directory = rest.as_ref().map(|d| d as &dyn UserDirectory);
            unblock(&store, directory, &key, &target, &reason, Timestamp::now())
        };
        run()
            .map(|()| (200, json!({ "blocked": false })))
            .map_err(|e| fail("unblock-user failed", &e))
    })
    .await;
}
