//! `POST /api/v1/internal/config/session-limit` `{"session_limit": n | null}` →
//! `{"session_limit": n | null}`. The most active sessions one user may have; `null`
//! removes the limit. Confirms read it at once (every client shard keeps a copy).

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::sessions::input::session_limit;
use edge_auth_domain::sessions::usecases::{SessionError, set_session_limit};
use edge_auth_spin::http::{Answer, Route, serve};
use edge_auth_spin::internal::fail;
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::session_store::RedisSessionStore;
use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::internal(true, &[]);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    /// Required (an empty body must not clear the limit): a non-negative whole number,
    /// or null for no limit.
    session_limit: Value,
}

#[http_component]
async fn handle_set_session_limit(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let body: LimitBody = call.json()?;
        let run = || -> Result<_, SessionError> {
            let limit = session_limit(&body.session_limit)?;
            // The setting is the whole change: its log line keeps what it was set to.
            call.note(
                "session_limit",
                limit.map_or_else(|| "none".to_string(), |n| n.to_string()),
            );
            let store = RedisSessionStore::new(SpinRedis::connect()?);
            set_session_limit(&store, limit)?;
            Ok(limit)
        };
        let limit = run().map_err(|e| fail("set-session-limit failed", &e))?;
        Answer::ok(&json!({ "session_limit": limit }))
    })
    .await;
}
