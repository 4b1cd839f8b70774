//! The HTTP edge every function serves through: one typed entry, [`serve`].
//!
//! A function crate names its [`Route`] (public or internal, method, path parameters) and
//! gives a handler from a parsed [`Call`] to an [`Answer`] or a [`PublicError`] (the error
//! table is [`crate::public_errors`]). `serve` does everything before and after:
//!
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

use std::collections::HashMap;

use edge_auth_domain::client::ClientHops;
use edge_auth_domain::error::PublicError;
use edge_auth_domain::sessions::auth::InternalApiToken;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use spin_sdk::http::{Fields, IncomingRequest, Method, OutgoingResponse, ResponseOutparam};

use crate::public_errors;
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
}

/// What a function serves.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub access: Access,
    /// `GET` or `POST`.
    pub post: bool,
    /// The `:name` segments of the route, read from Spin's `spin-path-match-*` headers.
    pub params: &'static [&'static str],
}

impl Route {
    /// A public route.
    pub const fn public(post: bool) -> Self {
        Self {
            access: Access::Public,
            post,
            params: &[],
        }
    }

    /// An internal route with its path parameters.
    pub const fn internal(post: bool, params: &'static [&'static str]) -> Self {
        Self {
            access: Access::Internal,
            post,
            params,
        }
    }

    fn method_name(self) -> &'static str {
        if self.post { "POST" } else { "GET" }
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

/// A request, checked and read.
#[derive(Debug, Default)]
pub struct Call {
    params: HashMap<String, String>,
    query: Vec<(String, String)>,
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

    /// The JSON body as `T` (unknown fields refused when `T` says so).
    ///
    /// # Errors
    /// `400 invalid_request`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PublicError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| invalid_request(format!("the body is not the expected JSON: {e}")))
    }
}

/// What a handler answers: a status and a JSON body, and work to run once the client has
/// the response.
pub struct Answer {
    status: u16,
    body: Value,
    then: Option<Box<dyn FnOnce()>>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body", &self.body)
            .field("then", &self.then.is_some())
            .finish()
    }
}

impl Answer {
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
            body,
            then: None,
        })
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
    let call = match read_call(req, route).await {
        Ok(call) => call,
        Err(err) => return send(out, err.status, &err.body(), &error_headers(&err, route)).await,
    };
    match handler(call) {
        Ok(answer) => {
            send(out, answer.status, &answer.body, &[]).await;
            if let Some(work) = answer.then {
                work();
            }
        }
        Err(err) => send(out, err.status, &err.body(), &error_headers(&err, route)).await,
    }
}

/// Every check before the handler, in order; reads what the handler needs.
async fn read_call(req: IncomingRequest, route: Route) -> Result<Call, PublicError> {
    if route.access == Access::Internal {
        authorize(&req)?;
    }
    let method = if route.post {
        Method::Post
    } else {
        Method::Get
    };
    if req.method() != method {
        return Err(PublicError::new(
            405,
            "method_not_allowed",
            format!("this route accepts {} only", route.method_name()),
        ));
    }
    // Spin appends its own `spin-*` values after any a client sent: the last one is Spin's.
    let mut call = Call {
        query: query_pairs(&req.path_with_query().unwrap_or_default()),
        caller: Caller {
            client: ClientHops {
                peer: header(&req, "spin-client-addr").pop().unwrap_or_default(),
                forwarded: header(&req, "forwarded"),
                x_forwarded_for: header(&req, "x-forwarded-for"),
            },
            user_agent: header(&req, "user-agent").pop().unwrap_or_default(),
            locale: locale_of(header(&req, "accept-language").first().map(String::as_str)),
        },
        ..Call::default()
    };
    for name in route.params {
        // Spin names the header with hyphens only: `:device_session_id` arrives as
        // `spin-path-match-device-session-id`.
        let header_name = format!("spin-path-match-{}", name.replace('_', "-"));
        if let Some(value) = header(&req, &header_name).pop() {
            call.params.insert((*name).to_string(), decode(&value));
        }
    }
    if route.post {
        call.body = read_json_body(req).await?;
    }
    Ok(call)
}

/// The internal API's token check. A missing or weak configured token locks the whole
/// internal API (Spin has no start-up hook for components, so every request says why in
/// the log).
fn authorize(req: &IncomingRequest) -> Result<(), PublicError> {
    let token = match optional("internal_api_token") {
        Ok(token) => InternalApiToken::parse(&token.unwrap_or_default())
            .map_err(|weak| anyhow::Error::new(weak).context("the internal API is locked")),
        Err(e) => Err(e.context("reading internal_api_token")),
    };
    let token = token.map_err(|e| {
        log_cause("internal_api_token", &e);
        public_errors::unavailable()
    })?;
    if token.authorizes(header(req, "authorization").pop().as_deref()) {
        Ok(())
    } else {
        Err(public_errors::unauthorized())
    }
}

/// A JSON body: content type and size checked.
async fn read_json_body(req: IncomingRequest) -> Result<Vec<u8>, PublicError> {
    let content_type = header(&req, "content-type");
    let is_json = content_type.len() == 1
        && content_type[0]
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(PublicError::new(
            415,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let too_large = || {
        PublicError::new(
            413,
            "payload_too_large",
            format!("the body must be at most {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = header(&req, "content-length");
    if declared.iter().any(|v| {
        v.trim()
            .parse::<usize>()
            .map_or(true, |n| n > MAX_BODY_BYTES)
    }) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| invalid_request(format!("could not read the body: {e:?}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
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
        headers.push(("allow".to_string(), route.method_name().as_bytes().to_vec()));
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
    let mut headers = vec![
        ("content-type".to_string(), b"application/json".to_vec()),
        ("cache-control".to_string(), b"no-store".to_vec()),
        (
            "content-length".to_string(),
            bytes.len().to_string().into_bytes(),
        ),
    ];
    headers.extend_from_slice(extra);
    let Ok(fields) = Fields::from_list(&headers) else {
        eprintln!("could not build response headers");
        return;
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(status).is_err() {
        eprintln!("invalid status code {status}");
    }
    let mut sink = response.take_body();
    out.set(response);
    if let Err(e) = sink.send(bytes).await {
        eprintln!("could not write the response body: {e:?}");
    }
    // Dropping the sink finishes the body.
    drop(sink);
}

/// Every value of a request header, in order.
pub fn header(req: &IncomingRequest, name: &str) -> Vec<String> {
    req.headers()
        .get(name)
        .into_iter()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect()
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

fn invalid_request(message: impl Into<String>) -> PublicError {
    PublicError::new(400, "invalid_request", message)
}

/// Percent-decodes (`+` stays `+`); invalid escapes stay as written.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
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

fn query_pairs(path_with_query: &str) -> Vec<(String, String)> {
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
    eprintln!("{context}: {err:#}");
}

#[cfg(test)]
mod tests {
    use super::{locale_of, query_pairs};

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
}
