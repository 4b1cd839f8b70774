//! `GET /api/v1/internal/metrics` → the gateway's counters and histograms in Prometheus'
//! text format (version 0.0.4), added up over every metrics shard (see
//! `edge_auth_spin::metrics`). Costs one Redis round trip per shard (16).

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::metrics::scrape;
use edge_auth_spin::public_errors;
use edge_auth_spin::redis::SpinRedis;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::internal(false, &[]);

/// The content type Prometheus asks for and parses.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[http_component]
async fn handle_metrics(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |_call| {
        // A scrape has no error of its own: anything failing is the store.
        let text = SpinRedis::connect()
            .and_then(|redis| scrape(&redis))
            .map_err(|cause| {
                log_cause("metrics failed", &cause);
                public_errors::unavailable()
            })?;
        Ok(Answer::bytes(200, TEXT_FORMAT, text.into_bytes()))
    })
    .await;
}
