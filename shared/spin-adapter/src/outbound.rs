//! Outgoing HTTP with timeouts, over `wasi:http` (spin-sdk's `send` has no timeouts).

use std::time::Duration;

use anyhow::{Context, bail};
use spin_sdk::http::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::RequestOptions;

/// The largest response body read (larger bodies are an error).
const MAX_RESPONSE: usize = 64 * 1024;

/// An outgoing request.
#[derive(Debug)]
pub struct Call<'a> {
    pub method: Method,
    pub url: &'a str,
    pub bearer: &'a str,
    pub json_body: Option<&'a [u8]>,
    /// Connect, first-byte and between-bytes timeout.
    pub timeout: Duration,
}

/// Sends `call` and returns the status and body.
///
/// # Errors
/// A malformed URL, a transport error, a timeout, or a body over 64 KiB. Errors never
/// contain the bearer token or the request body.
pub fn send(call: &Call<'_>) -> anyhow::Result<(u16, Vec<u8>)> {
    let uri: http::Uri = call.url.parse().context("not a URL")?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        _ => bail!("the URL must be http:// or https://"),
    };
    let authority = uri.authority().context("the URL has no host")?.to_string();
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());

    let mut headers = vec![
        ("accept".to_string(), b"application/json".to_vec()),
        (
            "authorization".to_string(),
            format!("Bearer {}", call.bearer).into_bytes(),
        ),
    ];
    if let Some(body) = call.json_body {
        headers.push(("content-type".to_string(), b"application/json".to_vec()));
        headers.push((
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ));
    }
    let fields =
        Fields::from_list(&headers).map_err(|e| anyhow::anyhow!("building headers: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    let fail = |what: &str| anyhow::anyhow!("building the request: {what}");
    request
        .set_method(&call.method)
        .map_err(|()| fail("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| fail("scheme"))?;
    request
        .set_authority(Some(&authority))
        .map_err(|()| fail("authority"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| fail("path"))?;
    let outgoing = request.body().map_err(|()| fail("body"))?;
    if let Some(body) = call.json_body {
        let stream = outgoing.write().map_err(|()| fail("body stream"))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| anyhow::anyhow!("writing the request body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing, None)
        .map_err(|e| anyhow::anyhow!("finishing the request body: {e:?}"))?;

    let nanos = u64::try_from(call.timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    // A host that cannot honour a timeout refuses it; the request still goes out.
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let future = outgoing_handler::handle(request, Some(options))
        .map_err(|e| anyhow::anyhow!("sending the request: {e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .context("the response was not ready")?
        .map_err(|()| anyhow::anyhow!("the response was already taken"))?
        .map_err(|e| anyhow::anyhow!("the request failed: {e:?}"))?;
    let status = response.status();

    let body = response
        .consume()
        .map_err(|()| anyhow::anyhow!("the response body was already taken"))?;
    let stream = body
        .stream()
        .map_err(|()| anyhow::anyhow!("the response body stream was already taken"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(16 * 1024) {
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_RESPONSE {
                    bail!("the response body is larger than {MAX_RESPONSE} bytes");
                }
            }
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(e) => bail!("reading the response body: {e:?}"),
        }
    }
    Ok((status, bytes))
}
