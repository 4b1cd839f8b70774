//! `POST /api/v1/internal/push/events` `{"user_id","device_session_id"?,"event_type","payload"}`
//! → `{"event_id","streams"}`: appends the event to the push stream of every address slot
//! of the user (one Redis round trip each), or of one device session's slot.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::json::present_string;
use edge_auth_domain::push::publish::{Publication, PublishError, publish};
use edge_auth_domain::push::settings::MAX_EVENT_PAYLOAD_BYTES;
use edge_auth_domain::random::OsRandom;
use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::metrics::{self, Counter};
use edge_auth_spin::public_errors;
use edge_auth_spin::push_store::{RedisPushStore, push_settings};
use edge_auth_spin::redis::SpinRedis;
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

/// The payload at its largest, and the other fields.
const ROUTE: Route = Route::internal(true, &[]).max_body(MAX_EVENT_PAYLOAD_BYTES + 1024);

/// The request body (a DTO: the domain checks it into a [`Publication`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    user_id: String,
    #[serde(default, deserialize_with = "present_string")]
    device_session_id: Option<String>,
    event_type: String,
    /// Any JSON value, kept as the caller wrote it: devices get these very bytes (a
    /// parsed value written out again would reorder its keys and respell its numbers).
    payload: Box<serde_json::value::RawValue>,
}

#[http_component]
async fn handle_publish_event(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let fail = |e: PublishError| {
            if let PublishError::Unexpected(cause) = &e {
                log_cause("publish-event failed", cause);
            }
            public_errors::publish(&e)
        };
        let body: PublishBody = call.json()?;
        let publication = Publication::parse(
            &body.user_id,
            body.device_session_id.as_deref(),
            &body.event_type,
            body.payload.get().as_bytes().to_vec(),
        )
        .map_err(fail)?;
        call.note("user_id", publication.user.as_str());
        if let Some(device) = &publication.device {
            call.note("device_session_id", device.as_str());
        }
        let settings = push_settings().map_err(|e| fail(e.into()))?;
        let store = RedisPushStore::new(SpinRedis::connect().map_err(|e| fail(e.into()))?);
        let published = publish(&store, &OsRandom, &settings, &publication).map_err(fail)?;
        call.note("event_id", published.event_id.clone());
        let target = if publication.device.is_some() {
            "device"
        } else {
            "user"
        };
        metrics::count(&Counter::PushEventPublished { target });
        Answer::ok(&json!({ "event_id": published.event_id, "streams": published.streams }))
    })
    .await;
}
