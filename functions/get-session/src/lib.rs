//! `GET /api/v1/internal/sessions/:device_session_id` → the session record.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::sessions::usecases::get_session;
use edge_auth_spin::http::{Answer, Route, serve};
use edge_auth_spin::internal::{fail, session_json};
use edge_auth_spin::session_store::RedisSessionStore;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::internal(false, &["device_session_id"]);

#[http_component]
async fn handle_get_session(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let run = || {
            let store = RedisSessionStore::connecting();
            get_session(&store, call.param("device_session_id"))
        };
        let record = run().map_err(|e| fail("get-session failed", &e))?;
        Answer::ok(&session_json(&record))
    })
    .await;
}
