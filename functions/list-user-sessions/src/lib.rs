//! `GET /api/v1/internal/users/:user_id/sessions?status=&cursor=&limit=` →
//! `{"sessions": [...], "next_cursor": ...}`, oldest first; follow `next_cursor` until null.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::sessions::usecases::list_sessions;
use edge_auth_spin::http::{Answer, Route, serve};
use edge_auth_spin::internal::{SessionJson, fail, session_json};
use edge_auth_spin::session_store::RedisSessionStore;
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::internal(false, &["user_id"]);

/// The page (fields in the order the API writes them).
#[derive(Serialize)]
struct ListResponse<'a> {
    next_cursor: Option<&'a str>,
    sessions: Vec<SessionJson<'a>>,
}

#[http_component]
async fn handle_list_user_sessions(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let run = || {
            let store = RedisSessionStore::connecting();
            list_sessions(
                &store,
                call.param("user_id"),
                call.query("status"),
                call.query("cursor"),
                call.query("limit"),
            )
        };
        let page = run().map_err(|e| fail("list-user-sessions failed", &e))?;
        Answer::ok(&ListResponse {
            next_cursor: page.next_cursor.as_deref(),
            sessions: page.items.iter().map(session_json).collect(),
        })
    })
    .await;
}
