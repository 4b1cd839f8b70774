//! `GET /api/v1/health`: 200 `{"status":"ok"}` after one Redis PING, else 503.
//! `?check=push` (the push group's readiness) also PINGs the RESP connection push streams
//! wait on, when commands go over Upstash REST (`redis_rest_url`); otherwise that is the
//! same connection.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::health::{self, Health};
use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::public_errors;
use edge_auth_spin::redis::SpinRedis;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::public(false);

#[http_component]
async fn handle_health(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let push = match call.query("check") {
            None => false,
            Some("push") => true,
            Some(_) => return Err(public_errors::health_check()),
        };
        let outcome = match SpinRedis::connect() {
            Ok(redis) => match health::check(&redis) {
                // A push stream waits in XREAD BLOCK on redis_url, which REST cannot do.
                Health::Ok if push && redis.over_rest() => match SpinRedis::connect_resp() {
                    Ok(resp) => health::check(&resp),
                    Err(e) => Health::StoreUnreachable(e),
                },
                checked => checked,
            },
            Err(e) => Health::StoreUnreachable(e),
        };
        match outcome {
            Health::Ok => Answer::ok(&json!({ "status": "ok" })),
            Health::StoreUnreachable(e) => {
                log_cause("health: Redis unreachable", &e);
                // The request's line says why it is 503.
                call.note("redis", "unreachable");
                Ok(Answer::json(
                    503,
                    &json!({ "status": "degraded", "redis": "unreachable" }),
                )?
                .error_code("degraded"))
            }
        }
    })
    .await;
}
