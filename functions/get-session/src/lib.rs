//! `GET /api/v1/internal/sessions/:device_session_id` → the session record.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::sessions::usecases::get_session;
use edge_auth_spin::internal::{fail, serve, session_json};
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::session_store::RedisSessionStore;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle_get_session(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, Method::Get, &["device_session_id"], |call| {
        let run = || {
            let store = RedisSessionStore::new(SpinRedis::connect()?);
            get_session(&store, call.param("device_session_id").unwrap_or_default())
        };
        run()
            .map(|record| (200, session_json(&record)))
            .map_err(|e| fail("get-session failed", &e))
    })
    .await;
}
