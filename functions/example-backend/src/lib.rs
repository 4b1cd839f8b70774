//! A demo of a team's backend behind the gateway, and the default `backend_url`: a
//! private component (no public route), reached by Spin service chaining at
//! `http://example-backend.spin.internal`. It trusts the `x-edge-auth-*` headers because
//! only the gateway can reach it (and checks `backend_token` when one is set).
//!
//! - `POST /echo`: the payload back, unchanged.
//! - `GET /profile`: the caller's profile (`{}` until one is stored).
//! - `PUT /profile`: stores a JSON object (at most 4 KiB) as the caller's profile and
//!   returns it; anything else is `422`.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_spin::http::{Answer, Call, Route, log_cause, serve};
use edge_auth_spin::keys::example_profile;
use edge_auth_spin::public_errors;
use edge_auth_spin::redis::{Arg, SpinRedis};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::redis::RedisResult;

const ROUTE: Route = Route::chained(1024 * 1024);

/// The largest profile stored.
const MAX_PROFILE: usize = 4 * 1024;

/// `status` with `body`, an error whose code is `code` when given (for the request's line).
fn json_answer(status: u16, body: &str, code: Option<&'static str>) -> Answer {
    let answer = Answer::bytes(status, "application/json", body.as_bytes().to_vec());
    match code {
        Some(code) => answer.error_code(code),
        None => answer,
    }
}

fn profile(call: &Call, user: &str) -> anyhow::Result<Answer> {
    let redis = SpinRedis::connect()?;
    let key = example_profile(user);
    if call.method == "GET" {
        let stored = redis.command("GET", &[Arg::from(key)])?;
        return Ok(match stored.into_iter().next() {
            Some(RedisResult::Binary(bytes)) => Answer::bytes(200, "application/json", bytes),
            _ => json_answer(200, "{}", None),
        });
    }
    let is_object = call.body().len() <= MAX_PROFILE
        && serde_json::from_slice::<serde_json::Value>(call.body()).is_ok_and(|v| v.is_object());
    if !is_object {
        return Ok(json_answer(
            422,
            r#"{"error":{"code":"invalid_profile","message":"a profile is a JSON object of at most 4 KiB"}}"#,
            Some("invalid_profile"),
        ));
    }
    let text = String::from_utf8_lossy(call.body()).into_owned();
    redis.command("SET", &[Arg::from(key), Arg::from(text)])?;
    Ok(Answer::bytes(200, "application/json", call.body().to_vec()))
}

#[http_component]
async fn handle_example_backend(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let user = call.param("x-edge-auth-user-id").to_string();
        if user.is_empty() {
            return Ok(json_answer(
                400,
                r#"{"error":{"code":"invalid_request","message":"x-edge-auth-user-id is missing"}}"#,
                Some("invalid_request"),
            ));
        }
        match (call.method.as_str(), call.path.as_str()) {
            ("POST", "/echo") => Ok(Answer::bytes(
                200,
                "application/octet-stream",
                call.body().to_vec(),
            )),
            ("GET" | "PUT", "/profile") => profile(&call, &user).map_err(|e| {
                log_cause("example-backend: profile", &e);
                public_errors::unavailable()
            }),
            _ => Ok(json_answer(
                404,
                r#"{"error":{"code":"not_found","message":"the example backend has no such route"}}"#,
                Some("not_found"),
            )),
        }
    })
    .await;
}
