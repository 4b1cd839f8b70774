//! The team's backend over Spin's outbound HTTP (pooled by Spin since 3.4): the payload
//! as the body, the bearer token, and who is calling in `x-edge-auth-*` headers.

use std::time::Duration;

use edge_auth_domain::gateway::ports::{Backend, BackendReply, BackendRequest};
use edge_auth_domain::gateway::settings::{BackendMethod, BackendTarget};
use spin_sdk::http::Method;

use crate::outbound::{self, OutboundError, Request};

/// The largest backend answer passed on (the same bound as a command payload).
const MAX_ANSWER: usize = 1024 * 1024;

/// The configured backend (`None`: none configured, every call is unavailable).
#[derive(Debug)]
pub struct HttpBackend<'a> {
    pub target: Option<&'a BackendTarget>,
}

fn method(m: BackendMethod) -> Method {
    match m {
        BackendMethod::Get => Method::Get,
        BackendMethod::Post => Method::Post,
        BackendMethod::Put => Method::Put,
        BackendMethod::Patch => Method::Patch,
        BackendMethod::Delete => Method::Delete,
    }
}

impl Backend for HttpBackend<'_> {
    fn call(&self, r: &BackendRequest<'_>) -> BackendReply {
        let Some(target) = self.target else {
            return BackendReply::Unavailable {
                status: None,
                cause: anyhow::anyhow!("backend_url is not set"),
            };
        };
        let url = format!("{}{}", target.url, r.route.path);
        let headers = [
            ("x-edge-auth-user-id", r.user_id),
            ("x-edge-auth-device-session-id", r.session.as_str()),
            ("x-edge-auth-request-id", r.request_id.as_str()),
            ("x-edge-auth-message-type", r.message_type.as_str()),
        ];
        let request = Request {
            method: method(r.route.method),
            url: &url,
            bearer: target.token.as_deref(),
            headers: &headers,
            // A GET with nothing to send goes without a body.
            body: (!(r.route.method == BackendMethod::Get && r.payload.is_empty()))
                .then_some(("application/octet-stream", r.payload)),
            connect_timeout: Duration::from_millis(target.connect_timeout_ms),
            first_byte_timeout: Duration::from_millis(target.first_byte_timeout_ms),
            max_response: Some(MAX_ANSWER),
        };
        let started = std::time::Instant::now();
        let sent = outbound::send_request(&request);
        crate::metrics::observe_backend(started.elapsed());
        // The backend's origin, not its URL (which may carry secrets), and the route's
        // path from backend_routes.
        let calling = || {
            format!(
                "calling the backend at {} ({})",
                outbound::origin(&target.url),
                r.route.path
            )
        };
        match sent {
            Ok((status, body)) => BackendReply::Answered { status, body },
            Err(OutboundError::Timeout { what, answered }) => BackendReply::Timeout {
                status: answered,
                cause: anyhow::anyhow!("timed out: {what}").context(calling()),
            },
            Err(OutboundError::Failed {
                cause, answered, ..
            }) => BackendReply::Unavailable {
                status: answered,
                cause: cause.context(calling()),
            },
        }
    }
}
