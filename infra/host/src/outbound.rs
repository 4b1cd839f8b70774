//! A guest's outgoing HTTP, under Spin's rules: `allowed_outbound_hosts`, service chaining
//! to `http://<component>.spin.internal`, requests back to the app itself (`self`), and
//! the `Host` header Spin's client sends.
//!
//! Nothing here knows about instances: running a component for a chained request is the
//! app's job, reached through the [`Chain`] trait it implements.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::allowed_hosts::{AllowedHosts, default_port};
use crate::http_client::HttpClient;
use crate::logs::Logs;
use crate::routes::SpinHeaders;

/// The response of a component run for a chained request.
pub(crate) type Chained = Pin<Box<dyn Future<Output = Response<WasiBody>> + Send>>;

/// The app's side of service chaining.
pub(crate) trait Chain: Send + Sync {
    /// Whether the app has a component `id` that requests can be chained to.
    fn has_component(&self, id: &str) -> bool;

    /// Runs component `id` (one [`Chain::has_component`] accepts) for `request` in a fresh
    /// instance. Never fails: a failure is logged and becomes Spin's empty 500.
    fn serve_chained(
        self: Arc<Self>,
        id: String,
        request: Request<WasiBody>,
        spin: SpinHeaders,
    ) -> Chained;
}

/// What sending a guest's request needs from the app; one clone per instance.
#[derive(Clone)]
pub(crate) struct Outbound {
    /// The app's components, for service chaining.
    chain: Arc<dyn Chain>,
    /// The address the listener got: self-requests are sent there.
    listen: Option<SocketAddr>,
    logs: Logs,
    /// Requests to this `scheme://host:port` are Redis commands (REST transport).
    redis_rest_origin: Option<Arc<str>>,
    /// Sends what the rules above let through; shared by the app's instances.
    client: HttpClient,
}

type SendResult = wasmtime_wasi_http::Result<(
    Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl Outbound {
    pub(crate) fn new(
        chain: Arc<dyn Chain>,
        listen: Option<SocketAddr>,
        logs: Logs,
        redis_rest_origin: Option<Arc<str>>,
        client: HttpClient,
    ) -> Self {
        Self {
            chain,
            listen,
            logs,
            redis_rest_origin,
            client,
        }
    }

    /// The `wasi:http` hooks of one instance of component `caller`; requests to the Redis
    /// REST origin made before the response count in `redis_round_trips`.
    pub(crate) fn hooks(
        self,
        caller: &str,
        allowed: Arc<AllowedHosts>,
        redis_round_trips: Arc<AtomicU64>,
    ) -> OutboundHooks {
        OutboundHooks {
            outbound: self,
            caller: caller.to_string(),
            allowed,
            redis_round_trips,
            before_response: true,
        }
    }

    /// Whether `uri` is on the Redis REST origin.
    fn is_redis_rest(&self, uri: &http::Uri) -> bool {
        let Some(origin) = &self.redis_rest_origin else {
            return false;
        };
        let scheme = uri.scheme_str().unwrap_or("https");
        match (uri.host(), uri.port_u16().or_else(|| default_port(scheme))) {
            (Some(host), Some(port)) => **origin == *format!("{scheme}://{host}:{port}"),
            _ => false,
        }
    }

    /// Sends a guest's outgoing HTTP request under Spin's rules.
    async fn send(
        &self,
        caller: &str,
        allowed: &AllowedHosts,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> SendResult {
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        // A port that is no number is no URL to Spin: denied, not defaulted.
        if uri.authority().is_some_and(|a| bad_port(a.as_str())) {
            self.logs.denied(caller, &format!("{scheme}://{host}"));
            return Err(Error::HttpRequestDenied);
        }
        let port = uri.port_u16().or_else(|| default_port(&scheme));
        let path_and_query = uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());

        // One label before `.spin.internal`, as Spin parses a chaining target; any other
        // name under it is an ordinary host.
        if let Some(target) = host
            .strip_suffix(".spin.internal")
            .filter(|t| !t.is_empty() && !t.contains('.'))
        {
            let known = self.chain.has_component(target);
            if !allowed.allows_chaining(target, &scheme, port.unwrap_or(80), known) {
                self.logs.denied(caller, &format!("{scheme}://{host}"));
                return Err(Error::HttpRequestDenied);
            }
            // Allowed by an entry other than the wildcard (`*://*:*`, a literal one). Spin
            // traps the caller here (an empty 500); wasi-http gives a host no way to trap
            // from a request, so the guest gets this error instead.
            if !known {
                self.logs.host(&format!(
                    "`{caller}`: unknown routing destination '{target}'"
                ));
                return Err(Error::InternalError(Some(format!(
                    "unknown routing destination '{target}'"
                ))));
            }
            let (mut parts, body) = request.into_parts();
            parts.headers.remove(http::header::HOST);
            let spin = SpinHeaders::chained(uri.path(), &path_and_query);
            parts.uri = http::Uri::builder()
                .scheme("http")
                .authority(format!("{target}.spin.internal"))
                .path_and_query(path_and_query.as_str())
                .build()
                .map_err(|e| Error::InternalError(Some(e.to_string())))?;
            let response = self
                .chain
                .clone()
                .serve_chained(target.to_string(), Request::from_parts(parts, body), spin)
                .await;
            return Ok((response, Box::new(async { Ok(()) })));
        }

        let mut request = request;
        request.headers_mut().remove(http::header::HOST);
        if host.is_empty() || host == "self.alt" {
            if !allowed.allows_self() {
                self.logs.denied(caller, &format!("{scheme}://self"));
                return Err(Error::HttpRequestDenied);
            }
            let Some(listen) = self.listen else {
                return Err(Error::InternalError(Some("no listen address".into())));
            };
            *request.uri_mut() = http::Uri::builder()
                .scheme("http")
                .authority(listen.to_string())
                .path_and_query(path_and_query.as_str())
                .build()
                .map_err(|e| Error::InternalError(Some(e.to_string())))?;
        } else {
            let Some(port) = port else {
                return Err(Error::HttpRequestUriInvalid);
            };
            if !allowed.allows(&scheme, &host, port) {
                // host:port only: an authority may carry credentials.
                self.logs
                    .denied(caller, &format!("{scheme}://{host}:{port}"));
                return Err(Error::HttpRequestDenied);
            }
        }
        let response = self.client.send(request, options).await?;
        Ok((response, Box::new(async { Ok(()) })))
    }
}

/// One instance's outgoing `wasi:http`: who is calling and what it may reach.
pub(crate) struct OutboundHooks {
    outbound: Outbound,
    caller: String,
    allowed: Arc<AllowedHosts>,
    redis_round_trips: Arc<AtomicU64>,
    /// Whether the guest has not set its response yet, as of its latest `wasi:http` call
    /// (kept current by [`crate::state::RequestState`]).
    pub(crate) before_response: bool,
}

impl WasiHttpHooks for OutboundHooks {
    /// Spin never forwards a guest's `host` header.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        if self.before_response && self.outbound.is_redis_rest(request.uri()) {
            self.redis_round_trips.fetch_add(1, Ordering::Relaxed);
        }
        let outbound = self.outbound.clone();
        let caller = self.caller.clone();
        let allowed = self.allowed.clone();
        Box::new(async move { outbound.send(&caller, &allowed, request, options).await })
    }
}

/// Whether `authority` (`[user@]host[:port]`) has a port that is not a number from 0 to
/// 65535: `http` keeps such an authority and reads no port from it.
fn bad_port(authority: &str) -> bool {
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, rest)| rest),
        None => host_port.find(':').map_or("", |i| &host_port[i..]),
    };
    after_host
        .strip_prefix(':')
        .is_some_and(|port| !port.is_empty() && port.parse::<u16>().is_err())
}

#[cfg(test)]
mod tests {
    use super::bad_port;

    #[test]
    fn a_port_must_be_a_number_that_fits() {
        for ok in [
            "a.example",
            "a.example:80",
            "a.example:",
            "[::1]:8080",
            "[::1]",
            "u@h:1",
        ] {
            assert!(!bad_port(ok), "{ok}");
        }
        for bad in ["a.example:99999", "a.example:abc", "[::1]:x", "u@h:65536"] {
            assert!(bad_port(bad), "{bad}");
        }
    }
}
