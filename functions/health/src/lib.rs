//! `GET /api/v1/health`: 200 `{"status":"ok"}` after one Redis PING, else 503.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::health::{self, Health};
use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::redis::SpinRedis;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::public(false);

#[http_component]
async fn handle_health(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |_| {
        let outcome = match SpinRedis::connect() {
            Ok(redis) => health::check(&redis),
            Err(e) => Health::StoreUnreachable(e),
        };
        match outcome {
            Health::Ok => Answer::ok(&json!({ "status": "ok" })),
            Health::StoreUnreachable(e) => {
                log_cause("health: Redis unreachable", &e);
                Answer::json(
                    503,
                    &json!({ "status": "degraded", "redis": "unreachable" }),
                )
            }
        }
    })
    .await;
}
