//! `GET /api/v1/health`: 200 `{"status":"ok"}` after one Redis PING, else 503.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::health::{self, Health};
use edge_auth_spin::http::{json, log_cause, method_not_allowed};
use edge_auth_spin::redis::SpinRedis;
use serde_json::json;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle_health(req: Request) -> Response {
    if *req.method() != Method::Get {
        return method_not_allowed("GET");
    }
    let outcome = match SpinRedis::connect() {
        Ok(redis) => health::check(&redis),
        Err(e) => Health::StoreUnreachable(e),
    };
    match outcome {
        Health::Ok => json(200, &json!({ "status": "ok" })),
        Health::StoreUnreachable(e) => {
            log_cause("health: Redis unreachable", &e);
            json(
                503,
                &json!({ "status": "degraded", "redis": "unreachable" }),
            )
        }
    }
}
