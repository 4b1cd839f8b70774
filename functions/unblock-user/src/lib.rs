//! `POST /api/v1/internal/users/unblock` `{"email"|"user_id","reason_code","actor"}` →
//! `{"blocked":false}`. Confirm and mail work again; revoked sessions stay revoked.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::json::present_string;
use edge_auth_domain::sessions::input::{BlockTarget, ChangeReason};
use edge_auth_domain::sessions::usecases::{SessionError, unblock};
use edge_auth_spin::http::{Answer, Route, serve};
use edge_auth_spin::internal::{BlockContext, fail, note_change};
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::internal(true, &[]);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnblockBody {
    #[serde(default, deserialize_with = "present_string")]
    email: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    user_id: Option<String>,
    reason_code: String,
    actor: String,
}

#[http_component]
async fn handle_unblock_user(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let body: UnblockBody = call.json()?;
        let run = || -> Result<_, SessionError> {
            let target = BlockTarget::parse(body.email.as_deref(), body.user_id.as_deref())?;
            let reason = ChangeReason::parse(&body.reason_code, &body.actor)?;
            note_change(&call, &reason, Some(&target));
            let ctx = BlockContext::open()?;
            unblock(&ctx.store, ctx.directory(), &ctx.key, &target, &reason)
        };
        run().map_err(|e| fail("unblock-user failed", &e))?;
        Answer::ok(&json!({ "blocked": false }))
    })
    .await;
}
