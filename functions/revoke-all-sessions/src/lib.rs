//! `POST /api/v1/internal/users/:user_id/sessions/revoke-all` `{"reason_code","actor"}` →
//! `{"revoked_count"}`. Runs in bounded batches; sessions created after the call began
//! are new logins and stay.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::sessions::input::ChangeReason;
use edge_auth_domain::sessions::usecases::{SessionError, revoke_all};
use edge_auth_spin::http::{Answer, Route, serve};
use edge_auth_spin::internal::{ReasonBody, fail, note_change};
use edge_auth_spin::session_store::RedisSessionStore;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::internal(true, &["user_id"]);

#[http_component]
async fn handle_revoke_all_sessions(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let body: ReasonBody = call.json()?;
        let run = || -> Result<_, SessionError> {
            let reason = ChangeReason::parse(&body.reason_code, &body.actor)?;
            note_change(&call, &reason, None);
            let store = RedisSessionStore::connecting();
            revoke_all(&store, call.param("user_id"), &reason)
        };
        let count = run().map_err(|e| fail("revoke-all-sessions failed", &e))?;
        Answer::ok(&json!({ "revoked_count": count }))
    })
    .await;
}
