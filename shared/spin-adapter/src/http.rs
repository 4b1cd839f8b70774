//! The HTTP edge every function serves through: one typed entry, [`serve`].
//!
//! A function crate names its [`Route`] (public or internal, method, path parameters) and
//! gives a handler from a parsed [`Call`] to an [`Answer`] or a [`PublicError`] (the error
//! table is [`crate::public_errors`]). `serve` does everything before and after:
//!
//! 0. public routes only: CORS. A preflight (`OPTIONS`) is answered `204`, with the
//!    `access-control-*` headers when the `Origin` is one of `cors_allowed_origins`
//!    (no credentials, ever); every answer to an allowed origin carries
//!    `access-control-allow-origin`;
//! 1. internal routes only: the bearer token (`internal_api_token`, constant time) before
//!    anything else, so without it every internal request answers `401` and nothing more;
//! 2. the method (`405` with `Allow`);
//! 3. for `POST`: `Content-Type: application/json` (`415`), size (declared
//!    `Content-Length` first, then the bytes read: `413`); JSON parsing with no unknown
//!    fields happens in the handler through [`Call::json`] (`400 invalid_request`);
//! 4. the handler, then the response (`Retry-After` where the error carries it), then
//!    any work the answer deferred until the client has it ([`Answer::then`]).
//!
//! Each failure has its own documented code and changes no state.
//!
//! Every request gets a request id (echoed as `x-request-id`) and one JSON log line once
//! its response is out ([`crate::request_log`]).

use std::collections::HashMap;

use anyhow::Context;
use edge_auth_domain::client::ClientHops;
use edge_auth_domain::error::PublicError;
use edge_auth_domain::sessions::auth::InternalApiToken;
use edge_auth_domain::sessions::input::UserRef;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use spin_sdk::http::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::OutputStream;

use crate::public_errors;
use crate::request_log;
use crate::settings::optional;

/// The largest request body a route accepts.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the public login API, health).
    Public,
    /// Holders of `internal_api_token` only.
    Internal,
    /// A private component reached by service chaining (the example backend): any
    /// method and content type, the raw body; `backend_token` checked when set.
    Chained,
}

/// What a function serves.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub access: Access,
    /// `GET` or `POST`.
    pub post: bool,
    /// The `:name` segments of the route, read from Spin's `spin-path-match-*` headers.
    pub params: &'static [&'static str],
    /// The largest body accepted (`413` above it).
    pub max_body: usize,
    /// A lower limit read per request, from settings (`None`: `max_body` alone). Asked
    /// once the request's content type is known to be right, before the body is read; its
    /// error is the answer.
    pub body_limit: Option<fn() -> Result<usize, PublicError>>,
}

impl Route {
    /// A public route.
    pub const fn public(post: bool) -> Self {
        Self {
            access: Access::Public,
            post,
            params: &[],
            max_body: MAX_BODY_BYTES,
            body_limit: None,
        }
    }

    /// A private route reached by service chaining (see [`Access::Chained`]).
    pub const fn chained(max_body: usize) -> Self {
        Self {
            access: Access::Chained,
            post: true,
            params: &[],
            max_body,
            body_limit: None,
        }
    }

    /// The same route with a larger (or smaller) body limit.
    pub const fn max_body(self, bytes: usize) -> Self {
        Self {
            max_body: bytes,
            ..self
        }
    }

    /// The same route with a body limit read per request (see [`Route::body_limit`]).
    pub const fn body_limit(self, limit: fn() -> Result<usize, PublicError>) -> Self {
        Self {
            body_limit: Some(limit),
            ..self
        }
    }

    /// An internal route with its path parameters.
    pub const fn internal(post: bool, params: &'static [&'static str]) -> Self {
        Self {
            access: Access::Internal,
            post,
            params,
            max_body: MAX_BODY_BYTES,
            body_limit: None,
        }
    }

    fn method_name(self) -> &'static str {
        if self.post { "POST" } else { "GET" }
    }

    /// The methods the route answers, for `Allow` and the preflight's
    /// `access-control-allow-methods`: a public route also answers `OPTIONS` (the CORS
    /// preflight).
    fn allowed_methods(self) -> &'static str {
        match (self.access, self.post) {
            (Access::Public, true) => "POST, OPTIONS",
            (Access::Public, false) => "GET, OPTIONS",
            _ => self.method_name(),
        }
    }
}

/// What the edge knows about the caller.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The TCP peer as Spin saw it (`spin-client-addr`) and what proxies reported.
    pub client: ClientHops,
    pub user_agent: String,
    /// First language tag of `Accept-Language`, or `en`.
    pub locale: String,
}

/// A request, checked and read. Its `Debug` shows the body's length only, and no
/// credential header's value.
#[derive(Default)]
pub struct Call {
    /// The method, upper case (`GET`, `POST`, …).
    pub method: String,
    /// The path as requested, without the query.
    pub path: String,
    params: HashMap<String, String>,
    query: Vec<(String, String)>,
    headers: RequestHeaders,
    body: Vec<u8>,
    /// Who is calling.
    pub caller: Caller,
}

impl Call {
    /// A `:name` route segment, decoded (empty when absent).
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }

    /// A query parameter, decoded; the first one if repeated.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A request header (names are lower case), the last one if repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.last(name)
    }

    /// Notes a safe identifier for this request's log line (see [`crate::request_log`]).
    pub fn note(&self, key: &'static str, value: impl Into<String>) {
        request_log::note(key, value);
    }

    /// The raw body (for a handler that parses it itself).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The JSON body as `T` (unknown fields refused when `T` says so).
    ///
    /// # Errors
    /// `400 invalid_request`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PublicError> {
        // A struct would also take an array of its fields in order (see the domain's
        // `json` module); every route's body is an object.
        if !edge_auth_domain::json::starts_an_object(&self.body) {
            return Err(public_errors::invalid_request(
                "the body is not a JSON object",
            ));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            public_errors::invalid_request(format!("the body is not the expected JSON: {e}"))
        })
    }
}

/// What a handler answers: a status and a JSON body, and work to run once the client has
/// the response.
pub struct Answer {
    status: u16,
    body: Body,
    headers: Vec<(String, Vec<u8>)>,
    /// The code the request's line gives an answer that is an error (a signed refusal).
    error_code: Option<&'static str>,
    then: Option<Box<dyn FnOnce()>>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body", &self.body)
            .field("headers", &self.headers)
            .field("error_code", &self.error_code)
            .field("then", &self.then.is_some())
            .finish()
    }
}

/// What an answer carries.
enum Body {
    Json(Value),
    /// Bytes as they are, with their content type.
    Raw(String, Vec<u8>),
    /// A body written as it is produced, with its content type.
    Stream(String, Box<dyn FnOnce(&mut BodyWriter<'_>)>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Self::Raw(t, b) => f.debug_tuple("Raw").field(t).field(&b.len()).finish(),
            Self::Stream(t, _) => f.debug_tuple("Stream").field(t).finish(),
        }
    }
}

/// The client is gone: a streamed body cannot be written any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientGone;

/// Writes a streamed body (see [`Answer::stream`]); every write is flushed to the
/// client before it returns, within [`STREAM_WRITE_TIMEOUT_MS`] and, once
/// [`BodyWriter::end_by`] has set one, before the body's deadline.
pub struct BodyWriter<'a> {
    /// Writes and flushes the bytes, by the deadline given (WASI monotonic ns) if any.
    write: &'a mut dyn FnMut(&[u8], Option<u64>) -> bool,
    deadline: Option<u64>,
}

impl std::fmt::Debug for BodyWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyWriter")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl BodyWriter<'_> {
    /// Writes and flushes `bytes`.
    ///
    /// # Errors
    /// `ClientGone` when the connection is closed, or the client did not take the bytes
    /// in time (nothing more is written after that).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ClientGone> {
        if (self.write)(bytes, self.deadline) {
            Ok(())
        } else {
            Err(ClientGone)
        }
    }

    /// No write completes later than `after` from now: one that would counts as the
    /// client gone. A stream that must not outlive something (its place in a count) sets
    /// this, so a client that reads slowly cannot stretch it.
    pub fn end_by(&mut self, after: std::time::Duration) {
        let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        self.deadline = Some(wasi::clocks::monotonic_clock::now().saturating_add(after));
    }
}

impl Answer {
    /// `status` with `bytes` as they are (a chained backend's answer).
    pub fn bytes(status: u16, content_type: &str, bytes: Vec<u8>) -> Self {
        Self {
            status,
            body: Body::Raw(content_type.to_string(), bytes),
            headers: Vec::new(),
            error_code: None,
            then: None,
        }
    }

    /// `200` with a body that `produce` writes as it goes (a stream of events): the
    /// status and headers are sent first, and the request's log line is written when
    /// `produce` returns.
    pub fn stream(content_type: &str, produce: impl FnOnce(&mut BodyWriter<'_>) + 'static) -> Self {
        Self {
            status: 200,
            body: Body::Stream(content_type.to_string(), Box::new(produce)),
            headers: Vec::new(),
            error_code: None,
            then: None,
        }
    }

    /// `status` with `body` as JSON.
    ///
    /// # Errors
    /// The body does not serialise (a bug): the client gets `503 service_unavailable`,
    /// never an empty or half-made body.
    pub fn json(status: u16, body: &impl Serialize) -> Result<Self, PublicError> {
        let body = serde_json::to_value(body).map_err(|e| {
            log_cause(
                "serialising a response body",
                &anyhow::Error::new(e).context(format!("status {status}")),
            );
            public_errors::unavailable()
        })?;
        Ok(Self {
            status,
            body: Body::Json(body),
            headers: Vec::new(),
            error_code: None,
            then: None,
        })
    }

    /// Adds a response header (replacing the default `cache-control: no-store` when it
    /// is `cache-control`).
    #[must_use]
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers
            .push((name.to_string(), value.into().into_bytes()));
        self
    }

    /// Names the error this answer is, for the request's line (`error_code`): an answer
    /// built here rather than from a [`PublicError`] (a signed refusal, a backend's
    /// error) says its code so.
    #[must_use]
    pub fn error_code(mut self, code: &'static str) -> Self {
        self.error_code = Some(code);
        self
    }

    /// `200` with `body`.
    ///
    /// # Errors
    /// As [`Answer::json`].
    pub fn ok(body: &impl Serialize) -> Result<Self, PublicError> {
        Self::json(200, body)
    }

    /// Runs `work` after the response has been sent (e.g. delivering a mail).
    #[must_use]
    pub fn then(mut self, work: impl FnOnce() + 'static) -> Self {
        self.then = Some(Box::new(work));
        self
    }
}

/// Serves one request of `route` with `handler` (see the module docs).
pub async fn serve(
    req: IncomingRequest,
    out: ResponseOutparam,
    route: Route,
    handler: impl FnOnce(Call) -> Result<Answer, PublicError>,
) {
    let started = std::time::Instant::now();
    crate::redis::forget_connections();
    crate::metrics::begin();
    // Every header in one host call: a lookup each would cost three (fields, get, drop).
    let headers = RequestHeaders::of(&req);
    let request_id = request_log::begin(headers.last("x-request-id"), headers.last("traceparent"));
    let route_name = headers
        .last("spin-component-route")
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            req.path_with_query()
                .unwrap_or_default()
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string()
        });
    let method = method_name(&req.method());
    // What the line says of the response, taken as it is sent; the line itself is written
    // once the request's work is done (see `request_log`).
    let answered = |status: u16, error_code: Option<&'static str>| request_log::Outcome {
        route: &route_name,
        method: &method,
        status,
        error_code,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        round_trips: request_log::round_trips(),
    };
    let log = |outcome: request_log::Outcome<'_>| println!("{}", request_log::line(&outcome));
    let cors = [
        cors_headers(&headers, route),
        vec![("x-request-id".to_string(), request_id.into_bytes())],
    ]
    .concat();
    if route.access == Access::Public && req.method() == Method::Options {
        preflight(out, route, cors).await;
        return log(answered(204, None));
    }
    let call = match read_call(req, headers, route).await {
        Ok(call) => call,
        Err(err) => {
            let headers = [error_headers(&err, route), cors].concat();
            send(out, err.status, &err.body(), &headers).await;
            return log(answered(err.status, Some(err.code)));
        }
    };
    let outcome = match handler(call) {
        Ok(answer) => {
            let headers = [answer.headers, cors].concat();
            match answer.body {
                Body::Json(body) => send(out, answer.status, &body, &headers).await,
                Body::Raw(content_type, bytes) => {
                    send_bytes(out, answer.status, &content_type, bytes, &headers).await;
                }
                Body::Stream(content_type, produce) => {
                    stream(out, answer.status, &content_type, &headers, produce);
                }
            }
            let outcome = answered(answer.status, answer.error_code);
            if let Some(work) = answer.then {
                work();
            }
            outcome
        }
        Err(err) => {
            let headers = [error_headers(&err, route), cors].concat();
            send(out, err.status, &err.body(), &headers).await;
            answered(err.status, Some(err.code))
        }
    };
    // What the request counted and no script carried: after the response, so it adds
    // no latency (see `metrics`).
    crate::metrics::flush();
    log(outcome);
}

/// The request headers a browser may send to a public route (`last-event-id`: a
/// subscribe may repeat its signed position there, and one that does not gets a clear
/// `400`, not a failed preflight).
const CORS_REQUEST_HEADERS: &str = "content-type, x-request-id, traceparent, last-event-id";

/// `vary: origin` for every answer of a public route, and `access-control-allow-origin`
/// (with the exposed headers) when it is called from an allowed origin; nothing for other
/// routes. Origins are compared exactly (`*` allows any). An entry of
/// `cors_allowed_origins` that is no origin could never match: it is left out, and the log
/// names it on every browser request (one with `Origin`), so that a typo does not turn
/// CORS off without a word, nor take the other entries with it.
fn cors_headers(headers: &RequestHeaders, route: Route) -> Vec<(String, Vec<u8>)> {
    if route.access != Access::Public {
        return Vec::new();
    }
    // Answers differ by origin: caches must key on it (the JWKS is cacheable).
    let vary = vec![("vary".to_string(), b"origin".to_vec())];
    let Some(origin) = headers.last("origin") else {
        return vary;
    };
    let list = match optional("cors_allowed_origins") {
        Ok(list) => list.unwrap_or_default(),
        Err(e) => {
            log_cause("cors_allowed_origins", &e);
            String::new()
        }
    };
    let (allowed, unfit) = allowed_origins(&list);
    for entry in unfit {
        request_log::error(&format!(
            "cors_allowed_origins: the entry {entry:?} is left out: it is not an origin as \
             browsers send it (`*`, `null`, or scheme://host[:port] in lower case, without a \
             path, not even `/`, and without :80 on http or :443 on https)"
        ));
    }
    if !allowed.iter().any(|&o| o == "*" || o == origin) {
        return vary;
    }
    vec![
        (
            "access-control-allow-origin".to_string(),
            origin.as_bytes().to_vec(),
        ),
        ("vary".to_string(), b"origin".to_vec()),
        (
            "access-control-expose-headers".to_string(),
            b"retry-after, x-request-id".to_vec(),
        ),
    ]
}

/// The entries of `cors_allowed_origins` (comma-separated, blanks ignored), split into
/// those a browser's `Origin` can equal (`*`, `null`, or a serialized origin) and those
/// it never can.
fn allowed_origins(list: &str) -> (Vec<&str>, Vec<&str>) {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .partition(|&e| e == "*" || e == "null" || is_serialized_origin(e))
}

/// An origin in the form browsers serialize it (RFC 6454 section 6.2): a lower-case
/// scheme (`https`, `http`, or an app's own, such as `capacitor` or `chrome-extension`),
/// `://`, a lower-case host, and a port unless it is http's 80 or https's 443.
fn is_serialized_origin(entry: &str) -> bool {
    let Some((scheme, rest)) = entry.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        });
    let default_port = match scheme {
        "https" => Some("443"),
        "http" => Some("80"),
        _ => None,
    };
    // An IPv6 literal keeps its colons inside brackets.
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b':' || b == b'.')
    } else {
        host.bytes().any(|b| b != b'.')
            && host.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
            })
    };
    let port_ok = port.is_none_or(|p| {
        p.bytes().all(|b| b.is_ascii_digit())
            && !p.starts_with('0')
            && Some(p) != default_port
            && p.parse::<u16>().is_ok()
    });
    scheme_ok && host_ok && port_ok
}

/// Answers a CORS preflight: `204`, with the CORS headers for an allowed origin.
async fn preflight(out: ResponseOutparam, route: Route, cors: Vec<(String, Vec<u8>)>) {
    let allowed = cors.iter().any(|(n, _)| n == "access-control-allow-origin");
    let mut headers = cors;
    if allowed {
        headers.push((
            "access-control-allow-methods".to_string(),
            route.allowed_methods().as_bytes().to_vec(),
        ));
        headers.push((
            "access-control-allow-headers".to_string(),
            CORS_REQUEST_HEADERS.as_bytes().to_vec(),
        ));
        headers.push(("access-control-max-age".to_string(), b"600".to_vec()));
    }
    headers.push(("content-length".to_string(), b"0".to_vec()));
    let Ok(fields) = Fields::from_list(&headers) else {
        request_log::error("could not build preflight headers");
        return;
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(204).is_err() {
        request_log::error("invalid status code 204");
    }
    let sink = response.take_body();
    out.set(response);
    drop(sink);
}

/// Every check before the handler, in order; reads what the handler needs.
async fn read_call(
    req: IncomingRequest,
    headers: RequestHeaders,
    route: Route,
) -> Result<Call, PublicError> {
    if route.access == Access::Internal {
        authorize(&headers)?;
    }
    let path_with_query = req.path_with_query().unwrap_or_default();
    if route.access == Access::Chained {
        authorize_chained(&headers)?;
        let mut call = Call {
            method: method_name(&req.method()),
            path: path_with_query
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string(),
            query: query_pairs(&path_with_query),
            ..Call::default()
        };
        for (name, value) in &headers.0 {
            if name.starts_with("x-edge-auth-") {
                call.params.insert(name.clone(), value.clone());
            }
        }
        call.body = read_body(req, &headers, route.max_body).await?;
        return Ok(call);
    }
    let method = if route.post {
        Method::Post
    } else {
        Method::Get
    };
    if req.method() != method {
        return Err(public_errors::method_not_allowed(route.method_name()));
    }
    // Spin appends its own `spin-*` values after any a client sent: the last one is Spin's.
    let caller = Caller {
        client: ClientHops {
            peer: headers
                .last("spin-client-addr")
                .unwrap_or_default()
                .to_string(),
            forwarded: headers.all("forwarded"),
            x_forwarded_for: headers.all("x-forwarded-for"),
        },
        user_agent: headers.last("user-agent").unwrap_or_default().to_string(),
        locale: locale_of(headers.all("accept-language").first().map(String::as_str)),
    };
    let mut params = HashMap::new();
    for name in route.params {
        // Spin names the header with hyphens only: `:device_session_id` arrives as
        // `spin-path-match-device-session-id`.
        let header_name = format!("spin-path-match-{}", name.replace('_', "-"));
        if let Some(value) = headers.last(&header_name) {
            let value = decode(value);
            // Path parameters are ids (device sessions, users), logged only when they are
            // in a user id's alphabet (session ids are within it): a wrong value, such as
            // an e-mail address given as a user id, never reaches the log.
            if UserRef::parse(&value).is_ok() {
                request_log::note(name, value.clone());
            }
            params.insert((*name).to_string(), value);
        }
    }
    let body = if route.post {
        read_json_body(req, &headers, route).await?
    } else {
        Vec::new()
    };
    Ok(Call {
        method: route.method_name().to_string(),
        params,
        query: query_pairs(&path_with_query),
        headers,
        body,
        caller,
        ..Call::default()
    })
}

/// The internal API's token check. A missing or weak configured token locks the whole
/// internal API (Spin has no start-up hook for components, so every request says why in
/// the log).
fn authorize(headers: &RequestHeaders) -> Result<(), PublicError> {
    // No token presented: 401 whatever the configuration (the OpenAPI promises only that),
    // so an anonymous caller neither learns that the API is locked nor fills the log.
    let Some(presented) = headers.last("authorization") else {
        return Err(public_errors::unauthorized());
    };
    let configured = || -> anyhow::Result<InternalApiToken> {
        let current = optional("internal_api_token").context("reading internal_api_token")?;
        let next =
            optional("internal_api_next_token").context("reading internal_api_next_token")?;
        let token = InternalApiToken::parse(&current.unwrap_or_default())
            .map_err(|weak| anyhow::Error::new(weak).context("the internal API is locked"))?;
        match next {
            Some(next) => token
                .with_next(&next)
                .map_err(|weak| anyhow::Error::new(weak).context("the internal API is locked")),
            None => Ok(token),
        }
    };
    let token = configured();
    let token = token.map_err(|e| {
        log_cause("internal_api_token", &e);
        public_errors::unavailable()
    })?;
    if token.authorizes(Some(presented)) {
        Ok(())
    } else {
        Err(public_errors::unauthorized())
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.to_ascii_uppercase(),
    }
}

/// A chained call must carry `backend_token` when one is set.
fn authorize_chained(headers: &RequestHeaders) -> Result<(), PublicError> {
    let expected = optional("backend_token").map_err(|e| {
        log_cause("backend_token", &e);
        public_errors::unavailable()
    })?;
    match expected {
        Some(token)
            if !edge_auth_domain::sessions::auth::bearer_matches(
                &token,
                headers.last("authorization"),
            ) =>
        {
            Err(public_errors::backend_token_required())
        }
        _ => Ok(()),
    }
}

/// A JSON body: content type and size checked.
async fn read_json_body(
    req: IncomingRequest,
    headers: &RequestHeaders,
    route: Route,
) -> Result<Vec<u8>, PublicError> {
    let content_type = headers.all("content-type");
    let is_json = content_type.len() == 1
        && content_type[0]
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(public_errors::not_json());
    }
    let max = match route.body_limit {
        Some(limit) => limit()?.min(route.max_body),
        None => route.max_body,
    };
    read_body(req, headers, max).await
}

/// The body, at most `max` bytes (`413` above).
async fn read_body(
    req: IncomingRequest,
    headers: &RequestHeaders,
    max: usize,
) -> Result<Vec<u8>, PublicError> {
    let too_large = || public_errors::payload_too_large(max);
    let declared = headers.all("content-length");
    if declared
        .iter()
        .any(|v| v.trim().parse::<usize>().map_or(true, |n| n > max))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        // The runtime's text of the failure is for the operator, not the client.
        let chunk = chunk.map_err(|e| {
            request_log::error(&format!(
                "could not read the request body: {}",
                e.to_debug_string()
            ));
            public_errors::invalid_request(
                "could not read the body: the request broke off or was malformed",
            )
        })?;
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` and (for a 405) `Allow`.
fn error_headers(err: &PublicError, route: Route) -> Vec<(String, Vec<u8>)> {
    let mut headers = Vec::new();
    if let Some(seconds) = err.retry_after {
        headers.push(("retry-after".to_string(), seconds.to_string().into_bytes()));
    }
    if err.status == 405 {
        headers.push((
            "allow".to_string(),
            route.allowed_methods().as_bytes().to_vec(),
        ));
    }
    // A missing or wrong bearer token (the internal API, a backend's route). The signed
    // command's 401s prove a key, not a token: no scheme to name.
    if err.status == 401 && err.code == "unauthorized" {
        headers.push(("www-authenticate".to_string(), b"Bearer".to_vec()));
    }
    headers
}

/// Sends a JSON response through `out`; the caller may keep working afterwards.
async fn send(
    out: ResponseOutparam,
    status: u16,
    body: &impl Serialize,
    extra: &[(String, Vec<u8>)],
) {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(e) => {
            log_cause("serialising a response body", &anyhow::Error::new(e));
            let err = public_errors::unavailable();
            let fallback = format!(
                r#"{{"error":{{"code":"{}","message":"{}"}}}}"#,
                err.code, err.message
            );
            (err.status, fallback.into_bytes())
        }
    };
    send_bytes(out, status, "application/json", bytes, extra).await;
}

/// Sends `bytes` as they are.
async fn send_bytes(
    out: ResponseOutparam,
    status: u16,
    content_type: &str,
    bytes: Vec<u8>,
    extra: &[(String, Vec<u8>)],
) {
    let mut headers = vec![
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        (
            "content-length".to_string(),
            bytes.len().to_string().into_bytes(),
        ),
    ];
    // Answers are per request unless the handler says otherwise (the JWKS).
    if !extra.iter().any(|(name, _)| name == "cache-control") {
        headers.push(("cache-control".to_string(), b"no-store".to_vec()));
    }
    headers.extend_from_slice(extra);
    let Ok(fields) = Fields::from_list(&headers) else {
        request_log::error("could not build response headers");
        return;
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status).is_err() {
        request_log::error(&format!("invalid status code {status}"));
    }
    let mut sink = response.take_body();
    out.set(response);
    if let Err(e) = sink.send(bytes).await {
        request_log::error(&format!("could not write the response body: {e:?}"));
    }
    // Dropping the sink finishes the body.
    drop(sink);
}

/// Sends the status and headers, then lets `produce` write the body with flushed writes
/// (so each event reaches the client as it is written), each within
/// [`STREAM_WRITE_TIMEOUT_MS`], then finishes it.
fn stream(
    out: ResponseOutparam,
    status: u16,
    content_type: &str,
    extra: &[(String, Vec<u8>)],
    produce: Box<dyn FnOnce(&mut BodyWriter<'_>)>,
) {
    let mut headers = vec![
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        ("cache-control".to_string(), b"no-store".to_vec()),
    ];
    headers.extend_from_slice(extra);
    let fields = match Fields::from_list(&headers) {
        Ok(fields) => fields,
        Err(e) => {
            return unwritable(produce, &format!("could not build response headers: {e:?}"));
        }
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status).is_err() {
        request_log::error(&format!("invalid status code {status}"));
    }
    let Ok(body) = response.body() else {
        return unwritable(produce, "the response body was already taken");
    };
    out.set(response);
    let Ok(output) = body.write() else {
        return unwritable(produce, "the response body is not writable");
    };
    // After a failed write nothing more is written: a timeout may have cut a frame.
    let mut failed = false;
    let mut write = |bytes: &[u8], end_by: Option<u64>| {
        let ok = !failed && write_within(&output, bytes, STREAM_WRITE_TIMEOUT_NS, end_by);
        failed = !ok;
        ok
    };
    produce(&mut BodyWriter {
        write: &mut write,
        deadline: None,
    });
    drop(output);
    // Finished even after a failed write: a body dropped unfinished is aborted (Spin and
    // our host cut the connection), while a finished one ends cleanly, so the bytes
    // already queued still reach a client that reads again.
    if let Err(e) = OutgoingBody::finish(body, None) {
        request_log::error(&format!("could not finish the streamed body: {e:?}"));
    }
}

/// The body cannot be written: `produce` still runs, against a client that is gone at
/// its first write, so what it holds (a push stream's claim) is let go as at any end.
fn unwritable(produce: Box<dyn FnOnce(&mut BodyWriter<'_>)>, why: &str) {
    request_log::error(why);
    produce(&mut BodyWriter {
        write: &mut |_: &[u8], _| false,
        deadline: None,
    });
}

/// How long one write of a streamed body may wait for the client to take it: a client
/// that stops reading (its buffers and ours full) counts as gone after this, so its
/// stream ends instead of holding an instance and a Redis connection for ever.
pub const STREAM_WRITE_TIMEOUT_MS: u64 = 10_000;
const STREAM_WRITE_TIMEOUT_NS: u64 = STREAM_WRITE_TIMEOUT_MS * 1_000_000;

/// Writes and flushes `bytes`, waiting for room and for the flush at most `timeout_ns`
/// in all, and never past `end_by` (WASI monotonic clock); `false` when the stream
/// failed or the time ran out (a failure or a timeout is logged; a closed stream, the
/// usual way a client leaves, is not).
fn write_within(output: &OutputStream, bytes: &[u8], timeout_ns: u64, end_by: Option<u64>) -> bool {
    use wasi::clocks::monotonic_clock;
    use wasi::io::streams::StreamError;
    let now = monotonic_clock::now();
    if end_by.is_some_and(|d| now >= d) {
        request_log::error("streamed body: past the body's deadline; letting the client go");
        return false;
    }
    let deadline = end_by
        .unwrap_or(u64::MAX)
        .min(now.saturating_add(timeout_ns));
    let report = |e: StreamError| {
        if let StreamError::LastOperationFailed(error) = e {
            request_log::error(&format!(
                "streamed body: the write failed: {}",
                error.to_debug_string()
            ));
        }
    };
    // Until the stream can take bytes again (`check-write` above 0), or the deadline.
    let room = || -> Option<usize> {
        loop {
            match output.check_write() {
                Ok(0) => {}
                Ok(n) => return Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(e) => {
                    report(e);
                    return None;
                }
            }
            if monotonic_clock::now() >= deadline {
                request_log::error("streamed body: the client took nothing in time; letting it go");
                return None;
            }
            let ready = output.subscribe();
            let timer = monotonic_clock::subscribe_instant(deadline);
            // Woken by the stream (index 0) or the timer: the loop looks again.
            let _woken = wasi::io::poll::poll(&[&ready, &timer]);
        }
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(n) = room() else { return false };
        let (now, later) = rest.split_at(n.min(rest.len()));
        if let Err(e) = output.write(now) {
            report(e);
            return false;
        }
        rest = later;
    }
    // A flush is done when the stream has room again.
    if let Err(e) = output.flush() {
        report(e);
        return false;
    }
    room().is_some()
}

/// A request's headers, read once: names lower case, values as text (lossy), in order.
#[derive(Default)]
struct RequestHeaders(Vec<(String, String)>);

/// Headers whose values are credentials: never in a `Debug` output (a log line).
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

impl std::fmt::Debug for RequestHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if CREDENTIAL_HEADERS.contains(&name.as_str()) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name, shown)
            }))
            .finish()
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("params", &self.params)
            .field("query", &self.query)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .field("caller", &self.caller)
            .finish()
    }
}

impl RequestHeaders {
    fn of(req: &IncomingRequest) -> Self {
        Self(
            req.headers()
                .entries()
                .into_iter()
                .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                .collect(),
        )
    }

    /// Every value of `name`, in order.
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The last value of `name` (Spin appends its own `spin-*` values after a client's).
    fn last(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn locale_of(accept_language: Option<&str>) -> String {
    accept_language
        .and_then(|v| v.split(',').next())
        .map(|tag| tag.split(';').next().unwrap_or_default().trim())
        .filter(|tag| {
            !tag.is_empty()
                && tag.len() <= 35
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .unwrap_or("en")
        .to_string()
}

/// Percent-decodes (`+` stays `+`); invalid escapes stay as written.
///
/// Works on bytes: a query may carry raw UTF-8 (Spin passes it on as sent), and an escape
/// cut short by a multi-byte character is simply not an escape.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|pair| Some((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?))
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one hexadecimal digit (`u8::from_str_radix` would also take a sign).
fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The decoded `name=value` pairs of a request target's query, in order (public for the
/// fuzz target, `tests/fuzz`).
pub fn query_pairs(path_with_query: &str) -> Vec<(String, String)> {
    path_with_query
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// Logs an unexpected error with its whole cause chain (to the component log).
pub fn log_cause(context: &str, err: &anyhow::Error) {
    request_log::error(&format!("{context}: {err:#}"));
}

#[cfg(test)]
mod tests {
    use super::{Call, RequestHeaders, allowed_origins, locale_of, query_pairs};

    #[test]
    fn cors_entries_that_no_browser_origin_can_equal_are_told_apart() {
        let good = [
            "https://app.example.com",
            "http://localhost:5173",
            "*",
            "null",
            "http://[::1]:8080",
            "https://10.0.0.1",
            "http://web_app:3000",
            "capacitor://localhost",
            "chrome-extension://abcdefghijklmnopabcdefghijklmnop",
            "https://xn--bcher-kva.example",
        ];
        let bad = [
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://App.example.com",
            "app.example.com",
            "HTTPS://app.example.com",
            "https://app.example.com:443",
            "http://app.example.com:80",
            "https://app.example.com:0",
            "https://app.example.com:+8443",
            "https://app.example.com:99999",
            "https://app.example.com:",
            "https://user@app.example.com",
            "https://app.example.com?x",
            "http://[::G]",
            "https://",
            "https://.",
        ];
        let list = format!(" {} ,, {} ", good.join(","), bad.join(" , "));
        let (allowed, unfit) = allowed_origins(&list);
        assert_eq!(allowed, good);
        assert_eq!(unfit, bad);
        assert_eq!(allowed_origins(""), (vec![], vec![]));
    }

    #[test]
    fn a_calls_debug_shows_no_credential_and_no_body() {
        let call = Call {
            headers: RequestHeaders(vec![
                ("authorization".into(), "Bearer internal-secret".into()),
                ("cookie".into(), "sid=cookie-secret".into()),
                ("x-request-id".into(), "req-1".into()),
            ]),
            body: br#"{"email":"ada@example.com","code":"123456"}"#.to_vec(),
            ..Call::default()
        };
        let shown = format!("{call:?}");
        for secret in [
            "internal-secret",
            "cookie-secret",
            "ada@example.com",
            "123456",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("req-1") && shown.contains("body_bytes"),
            "{shown}"
        );
    }

    #[test]
    fn the_locale_is_the_first_clean_language_tag() {
        assert_eq!(locale_of(Some("de-CH, de;q=0.9")), "de-CH");
        assert_eq!(locale_of(Some("fr;q=0.8")), "fr");
        assert_eq!(locale_of(Some("<script>")), "en");
        assert_eq!(locale_of(None), "en");
    }

    #[test]
    fn query_values_are_decoded() {
        let pairs = query_pairs("/x?status=all&cursor=0001%7Cs_a&limit=5&flag");
        assert_eq!(
            pairs,
            vec![
                ("status".into(), "all".into()),
                ("cursor".into(), "0001|s_a".into()),
                ("limit".into(), "5".into()),
                ("flag".into(), String::new()),
            ]
        );
    }

    #[test]
    fn a_cut_short_or_signed_escape_stays_as_written_and_raw_utf8_passes() {
        let pairs =
            query_pairs("/x?a=%a\u{20ac}&b=%\u{20ac}&c=%+1&d=%4&e=caf\u{e9}%21&f=%F0%9F%94%91");
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "%a\u{20ac}".into()),
                ("b".into(), "%\u{20ac}".into()),
                ("c".into(), "%+1".into()),
                ("d".into(), "%4".into()),
                ("e".into(), "caf\u{e9}!".into()),
                ("f".into(), "\u{1f511}".into()),
            ]
        );
    }
}
