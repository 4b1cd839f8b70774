//! `POST /api/v1/internal/config/session-limit` `{"session_limit": n | null}` →
//! `{"session_limit": n | null}`. The most active sessions one user may have; `null`
//! removes the limit. Confirms read it at once (every client shard keeps a copy).

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::error::PublicError;
use edge_auth_domain::sessions::usecases::set_session_limit;
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

fn limit(raw: &Value) -> Result<Option<u32>, PublicError> {
    match raw {
        Value::Null => Ok(None),
        // JSON Schema's `integer` admits `3.0`: a number with no fraction is whole.
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().and_then(whole))
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

/// `x` if it is a whole number in `u32`'s range.
fn whole(x: f64) -> Option<u64> {
    (x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&x)).then_some(
        // In range and whole: the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        {
            x as u64
        },
    )
}

fn invalid() -> PublicError {
    PublicError::new(
        400,
        "invalid_request",
        "session_limit must be a non-negative whole number or null",
    )
}

#[http_component]
async fn handle_set_session_limit(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let body: LimitBody = call.json()?;
        let limit = limit(&body.session_limit)?;
        let run = || {
            let store = RedisSessionStore::new(SpinRedis::connect()?);
            set_session_limit(&store, limit)
        };
        run().map_err(|e| fail("set-session-limit failed", &e))?;
        Answer::ok(&json!({ "session_limit": limit }))
    })
    .await;
}
