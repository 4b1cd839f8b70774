//! The public HTTP edge: strict request parsing, JSON responses, and the one place where
//! use-case errors become public errors ([`crate::public_errors`] holds the table).
//!
//! Body checks, in order: method, `Content-Type: application/json`, size (declared
//! `Content-Length` first, then the bytes actually read), JSON with no unknown fields.
//! Each failure has its own documented code and changes no state.

use edge_auth_domain::client::ClientHops;
use edge_auth_domain::error::PublicError;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::http::{
    Fields, IncomingRequest, Method, OutgoingResponse, Response, ResponseOutparam,
};

/// The largest request body the public routes accept.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// What the edge knows about the caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The TCP peer as Spin saw it (`spin-client-addr`) and what proxies reported.
    pub client: ClientHops,
    pub user_agent: String,
    /// First language tag of `Accept-Language`, or `en`.
    pub locale: String,
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

/// Reads a JSON body of type `T` from a `POST`, with every edge check.
///
/// # Errors
/// The public error to answer with: `method_not_allowed` 405, `unsupported_media_type`
/// 415, `payload_too_large` 413, `invalid_request` 400.
pub async fn read_json<T: DeserializeOwned>(
    req: IncomingRequest,
) -> Result<(T, Caller), PublicError> {
    if req.method() != Method::Post {
        return Err(PublicError::new(
            405,
            "method_not_allowed",
            "this route accepts POST only",
        ));
    }
    let (body, caller) = read_body(req).await?;
    Ok((parse_json(&body)?, caller))
}

/// Parses a JSON body with no unknown fields.
///
/// # Errors
/// `invalid_request`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, PublicError> {
    serde_json::from_slice(body)
        .map_err(|e| invalid_request(format!("the body is not the expected JSON: {e}")))
}

/// Reads a JSON body (content type and size checked) and the caller's details.
///
/// # Errors
/// `unsupported_media_type` 415, `payload_too_large` 413, `invalid_request` 400.
pub async fn read_body(req: IncomingRequest) -> Result<(Vec<u8>, Caller), PublicError> {
    // Spin appends its own value after any the client sent: the last one is Spin's.
    let caller = Caller {
        client: ClientHops {
            peer: header(&req, "spin-client-addr").pop().unwrap_or_default(),
            forwarded: header(&req, "forwarded"),
            x_forwarded_for: header(&req, "x-forwarded-for"),
        },
        user_agent: header(&req, "user-agent").pop().unwrap_or_default(),
        locale: locale_of(header(&req, "accept-language").first().map(String::as_str)),
    };
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
    Ok((body, caller))
}

/// Sends a JSON response through `out`. Afterwards the caller may keep working: the
/// client already has its answer.
pub async fn respond(
    out: ResponseOutparam,
    status: u16,
    body: &impl Serialize,
    retry_after: Option<u64>,
) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut headers = vec![
        ("content-type".to_string(), b"application/json".to_vec()),
        ("cache-control".to_string(), b"no-store".to_vec()),
        (
            "content-length".to_string(),
            bytes.len().to_string().into_bytes(),
        ),
    ];
    if let Some(seconds) = retry_after {
        headers.push(("retry-after".to_string(), seconds.to_string().into_bytes()));
    }
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

/// Sends a public error.
pub async fn respond_error(out: ResponseOutparam, err: &PublicError) {
    respond(out, err.status, &err.body(), err.retry_after).await;
}

/// A JSON response with `status` (for simple handlers).
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
            Response::builder().status(500).build()
        }
    }
}

/// 405 with `Allow`, for a simple handler called with the wrong method.
pub fn method_not_allowed(allow: &str) -> Response {
    let err = PublicError::new(
        405,
        "method_not_allowed",
        format!("this route accepts {allow} only"),
    );
    let mut response = json(err.status, &err.body());
    response.set_header("allow", allow);
    response
}

/// Logs an unexpected error with its whole cause chain (to the component log).
pub fn log_cause(context: &str, err: &anyhow::Error) {
    eprintln!("{context}: {err:#}");
}

#[cfg(test)]
mod tests {
    use super::locale_of;

    #[test]
    fn the_locale_is_the_first_clean_language_tag() {
        assert_eq!(locale_of(Some("de-CH, de;q=0.9")), "de-CH");
        assert_eq!(locale_of(Some("fr;q=0.8")), "fr");
        assert_eq!(locale_of(Some("<script>")), "en");
        assert_eq!(locale_of(None), "en");
    }
}
