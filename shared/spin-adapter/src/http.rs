//! JSON responses, and the one place domain errors become HTTP responses.

use edge_auth_domain::error::PublicError;
use serde::Serialize;
use spin_sdk::http::Response;

/// A JSON response with `status`.
pub fn json(status: u16, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(bytes)
            .build(),
        Err(e) => {
            eprintln!("failed to serialise a response body: {e}");
            error(&PublicError::new(500, "internal_error", "internal error"))
        }
    }
}

/// The public JSON error response, with `Retry-After` when the error has one.
pub fn error(err: &PublicError) -> Response {
    let body = serde_json::to_vec(&err.body()).unwrap_or_default();
    let mut builder = Response::builder();
    builder
        .status(err.status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store");
    if let Some(seconds) = err.retry_after {
        builder.header("retry-after", seconds.to_string());
    }
    builder.body(body).build()
}

/// 405 with `Allow`, for a route called with the wrong method.
pub fn method_not_allowed(allow: &str) -> Response {
    let mut response = error(&PublicError::new(
        405,
        "method_not_allowed",
        format!("this route accepts {allow} only"),
    ));
    response.set_header("allow", allow);
    response
}

/// Logs an unexpected error with its whole cause chain (to the component log).
pub fn log_cause(context: &str, err: &anyhow::Error) {
    eprintln!("{context}: {err:#}");
}
