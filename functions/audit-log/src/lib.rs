//! `GET /api/v1/internal/audit?user_id=&cursor=&limit=` → `{"records": [...], "next_cursor"}`,
//! newest first at each of the user's addresses. Each record: `id` (stream id), `action`, `at` (RFC 3339) and the
//! fields of the change (`device_session_id`, `user_id`, `reason_code`, `actor`, ...).

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::sessions::usecases::audit;
use edge_auth_spin::http::{Answer, Route, serve};
use edge_auth_spin::internal::{AuditJson, audit_json, fail};
use edge_auth_spin::request_log;
use edge_auth_spin::session_store::RedisSessionStore;
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::internal(false, &[]);

/// The page (fields in the order the API writes them).
#[derive(Serialize)]
struct AuditResponse<'a> {
    next_cursor: Option<&'a str>,
    records: Vec<AuditJson<'a>>,
}

#[http_component]
async fn handle_audit_log(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        // The user this call names is in its query, where the log does not look.
        if let Some(user_id) = call.query("user_id") {
            request_log::note_user_id(user_id);
        }
        let run = || {
            let store = RedisSessionStore::connecting();
            audit(
                &store,
                call.query("user_id"),
                call.query("cursor"),
                call.query("limit"),
            )
        };
        let page = run().map_err(|e| fail("audit-log failed", &e))?;
        Answer::ok(&AuditResponse {
            next_cursor: page.next_cursor.as_deref(),
            records: page.items.iter().map(audit_json).collect(),
        })
    })
    .await;
}
