//! `POST /api/v1/internal/sessions/:device_session_id/revoke` `{"reason_code","actor"}` →
//! `{"device_session_id","status":"revoked","already_revoked"}`. Idempotent: a second
//! revoke keeps the first one's metadata. A session whose life is over is not revoked: it
//! answers `"status":"expired"`, `"already_revoked":false`.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::sessions::input::ChangeReason;
use edge_auth_domain::sessions::usecases::{SessionError, revoke_session};
use edge_auth_spin::http::{Answer, Route, serve};
use edge_auth_spin::internal::{ReasonBody, fail, note_change};
use edge_auth_spin::session_store::RedisSessionStore;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::internal(true, &["device_session_id"]);

#[http_component]
async fn handle_revoke_session(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let body: ReasonBody = call.json()?;
        let run = || -> Result<_, SessionError> {
            let reason = ChangeReason::parse(&body.reason_code, &body.actor)?;
            note_change(&call, &reason, None);
            let store = RedisSessionStore::connecting();
            revoke_session(&store, call.param("device_session_id"), &reason)
        };
        let (record, already) = run().map_err(|e| fail("revoke-session failed", &e))?;
        Answer::ok(&json!({
            "device_session_id": record.device_session_id.as_str(),
            "status": record.status.as_str(),
            "already_revoked": already,
        }))
    })
    .await;
}
