//! Outgoing HTTP with timeouts, over `wasi:http` (spin-sdk's `send` has no timeouts).
//!
//! The runtime applies the connect, first-byte and between-bytes timeouts of a call over
//! the network. A call by service chaining (`*.spin.internal`) gets none from Spin, so
//! the guest keeps its own deadline too: the wait for room in the request body and for
//! the response headers ends there, and so does the body after the headers.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use spin_sdk::http::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{ErrorCode, RequestOptions};
use wasi::clocks::monotonic_clock;
use wasi::io::poll::Pollable;

/// The largest response body read by [`send`] (larger bodies are an error).
const MAX_RESPONSE: usize = 64 * 1024;

/// An outgoing JSON request. Its `Debug` shows neither the token nor the body.
pub struct Call<'a> {
    pub method: Method,
    pub url: &'a str,
    pub bearer: &'a str,
    pub json_body: Option<&'a [u8]>,
    /// Connect, first-byte and between-bytes timeout, and how long the whole body may
    /// take after the headers.
    pub timeout: Duration,
}

/// An outgoing request of any content type, with its own headers and timeouts. Its
/// `Debug` shows neither the token nor the body.
pub struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    /// `Authorization: Bearer`, when set.
    pub bearer: Option<&'a str>,
    /// More headers (never `authorization`).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body and its content type.
    pub body: Option<(&'a str, &'a [u8])>,
    pub connect_timeout: Duration,
    /// First byte of the response; also the between-bytes timeout, and how long the whole
    /// body may take after the headers. For a target called by service chaining, it also
    /// bounds the whole wait for the headers, request body included (network targets:
    /// twice the connect timeout plus the first byte, a backstop behind the runtime's own).
    pub first_byte_timeout: Duration,
    /// The largest response body read; `None`: only the status matters (the body is
    /// read, up to 64 KiB, so that the connection can be reused, and its size, pace or
    /// failure fail nothing).
    pub max_response: Option<usize>,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("url", &origin(self.url))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &origin(self.url))
            .field("body_bytes", &self.body.map(|(_, b)| b.len()))
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]` of `url`: no credentials, path or query (which can carry a
/// token, as Upstash's `?_token=` does).
pub fn origin(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.host(), uri.port_u16()) {
            (Some(scheme), Some(host), Some(port)) => format!("{scheme}://{host}:{port}"),
            (Some(scheme), Some(host), None) => format!("{scheme}://{host}"),
            _ => "<no origin>".to_string(),
        },
        Err(_) => "<unparseable URL>".to_string(),
    }
}

/// Whether `host` (as a URI gives it, IPv6 in brackets) is this machine: `localhost` or
/// a loopback address.
pub fn loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a plain-`http://` `url` (the value of `variable`) to anything but this machine
/// or a component called by service chaining: what goes there (a login code, a bearer
/// token) would cross a network in clear. The message names the variable, never the
/// value.
///
/// # Errors
/// `url` starts with `http://` and its host is neither loopback nor
/// `<component>.spin.internal`.
pub fn require_tls(variable: &str, url: &str) -> anyhow::Result<()> {
    let Ok(uri) = url.trim().parse::<http::Uri>() else {
        // Not a URL: the call itself says so.
        return Ok(());
    };
    let local = uri
        .host()
        .is_some_and(|host| loopback_host(host) || chained_host(host));
    if uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
        && !local
    {
        bail!(
            "`{variable}` must start with https:// (http:// only to a loopback address or a \
             <component>.spin.internal one): its token and what it carries would travel in clear"
        );
    }
    Ok(())
}

/// How a request failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// A connect, first-byte or between-bytes timeout, or a body that took too long
    /// (`answered`: the status, when the headers had come).
    #[error("timed out: {what}")]
    Timeout { what: String, answered: Option<u16> },
    /// Anything else (`answered` as above: a body that broke off or passed its limit).
    /// `sent`: the request was handed whole to the host before the exchange failed (a
    /// connection that broke before any answer, even as the last bytes were flushed), so
    /// the target may have acted on it all the same.
    #[error("{cause:#}")]
    Failed {
        cause: anyhow::Error,
        answered: Option<u16>,
        sent: bool,
    },
}

/// Sends `call` and returns the status and body.
///
/// # Errors
/// A malformed URL, a transport error, a timeout, or a body over 64 KiB. Errors never
/// contain the bearer token or the request body.
pub fn send(call: &Call<'_>) -> anyhow::Result<(u16, Vec<u8>)> {
    call_with(call, Some(MAX_RESPONSE))
}

/// Sends `call` and returns its status alone: nothing about the response body (its size,
/// pace or failure) can turn an answered call into a failure.
///
/// # Errors
/// As [`send`], but for the body.
pub fn send_for_status(call: &Call<'_>) -> anyhow::Result<u16> {
    call_with(call, None).map(|(status, _)| status)
}

fn call_with(call: &Call<'_>, max_response: Option<usize>) -> anyhow::Result<(u16, Vec<u8>)> {
    let accept = [("accept", "application/json")];
    let request = Request {
        method: call.method.clone(),
        url: call.url,
        bearer: Some(call.bearer),
        headers: &accept,
        body: call.json_body.map(|b| ("application/json", b)),
        connect_timeout: call.timeout,
        first_byte_timeout: call.timeout,
        max_response,
    };
    send_request(&request).map_err(|e| match e {
        OutboundError::Timeout { what, .. } => anyhow::anyhow!("the request timed out: {what}"),
        OutboundError::Failed { cause, .. } => cause,
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until one of `ready` is ready, or the monotonic clock reaches `deadline`.
/// Returns the index of one that is ready, or `None` when the deadline came first.
fn wait_any(ready: &[&Pollable], deadline: u64) -> Option<usize> {
    if let Some(index) = ready.iter().position(|p| p.ready()) {
        return Some(index);
    }
    let timer = monotonic_clock::subscribe_instant(deadline);
    let mut all = ready.to_vec();
    all.push(&timer);
    wasi::io::poll::poll(&all)
        .into_iter()
        .filter_map(|index| usize::try_from(index).ok())
        .find(|&index| index < ready.len())
}

/// A request body the host did not take whole and flushed (`handed`: every byte had been
/// written to the host's stream, and only the flush failed or took too long: the target
/// may have had the whole request, say one that answered, or closed the connection, as
/// the last bytes went out).
#[derive(Debug)]
struct BodyNotWritten {
    cause: anyhow::Error,
    handed: bool,
}

/// Writes `body` to the request's body stream (dropped before the body is finished, as
/// wasi:http requires), waiting for room no later than `deadline`: a target that reads
/// nothing (a component called by service chaining need not) cannot hold the call. A
/// target that answers early and keeps the exchange open without reading the rest would
/// hold the call until the deadline (its answer is taken then); Spin 4.0.2 and our host
/// take a whole command body (up to 1 MiB) without a reader, so there it does not (an
/// e2e test says so). Writing is not cut short when the answer comes: a target may read
/// the body after it has sent its headers.
///
/// # Errors
/// [`BodyNotWritten`], saying whether every byte had been handed to the host.
fn write_body(outgoing: &OutgoingBody, body: &[u8], deadline: u64) -> Result<(), BodyNotWritten> {
    let partly = |cause: anyhow::Error| BodyNotWritten {
        cause,
        handed: false,
    };
    let stream = outgoing
        .write()
        .map_err(|()| partly(anyhow::anyhow!("building the request: body stream")))?;
    let failed =
        |e: wasi::io::streams::StreamError| anyhow::anyhow!("writing the request body: {e:?}");
    let room = |stream: &wasi::io::streams::OutputStream| -> anyhow::Result<usize> {
        loop {
            let room = stream.check_write().map_err(failed)?;
            if room > 0 {
                return Ok(usize::try_from(room).unwrap_or(usize::MAX));
            }
            if wait_any(&[&stream.subscribe()], deadline).is_none() {
                return Err(anyhow::Error::new(TimedOut(
                    "the target took no more of the request body before the deadline".to_string(),
                )));
            }
        }
    };
    let mut rest = body;
    while !rest.is_empty() {
        let n = room(&stream)
            .map_err(partly)?
            .min(rest.len())
            .min(16 * 1024);
        stream.write(&rest[..n]).map_err(|e| partly(failed(e)))?;
        rest = &rest[n..];
    }
    // The flush is done when the stream has room again.
    let handed = |cause: anyhow::Error| BodyNotWritten {
        cause,
        handed: true,
    };
    stream.flush().map_err(|e| handed(failed(e)))?;
    room(&stream).map_err(handed)?;
    Ok(())
}

/// What to do about a request the host refused to send: the component's
/// `allowed_outbound_hosts` come from one `*_allowed_host` variable per target, which
/// must hold the URL's `scheme://host:port`.
fn denied_hint(e: &ErrorCode) -> &'static str {
    match e {
        ErrorCode::HttpRequestDenied => {
            " (the URL's scheme://host:port is not among the component's allowed hosts: set \
             the target's `*_allowed_host` variable to it)"
        }
        _ => "",
    }
}

/// Whether a call to `host` is one by service chaining, run in-process without the
/// runtime's timeouts: `<component>.spin.internal`, the component's id one DNS label (any
/// case). Anything else, `spin.internal` itself and `a.b.spin.internal` included, goes
/// over the network.
fn chained_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.strip_suffix(".spin.internal")
        .is_some_and(|component| !component.is_empty() && !component.contains('.'))
}

/// A timeout reported by the host (inside [`exchange`]'s errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TimedOut(String);

/// A request handed whole to the host (its body written, even if its flush or end then
/// failed), its exchange failed before any answer (the context of [`exchange`]'s error):
/// the target may have acted on it.
#[derive(Debug, thiserror::Error)]
#[error("the request was sent whole, then the exchange failed")]
struct SentWhole;

/// Whether the host's `code`, for a request written whole, leaves open that it reached
/// the target: every code but those of a connection, TLS session or request that never
/// came to be (a name not resolved, a connection refused, a request the host or its
/// client refused to send). A pooled connection the server had closed is retried by the
/// host's client only while nothing was sent on it.
fn may_have_reached(code: &ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::DnsTimeout
            | ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionLimitReached
            | ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsAlertReceived(_)
            | ErrorCode::HttpRequestDenied
            | ErrorCode::HttpRequestLengthRequired
            | ErrorCode::HttpRequestBodySize(_)
            | ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestUriTooLong
            | ErrorCode::HttpRequestHeaderSectionSize(_)
            | ErrorCode::HttpRequestHeaderSize(_)
            | ErrorCode::HttpRequestTrailerSectionSize(_)
            | ErrorCode::HttpRequestTrailerSize(_)
            | ErrorCode::LoopDetected
            | ErrorCode::ConfigurationError
    )
}

/// The status of an answer whose body then failed (the context of [`exchange`]'s error):
/// the target answered, and may have acted.
#[derive(Debug, thiserror::Error)]
#[error("the target answered {0}, then its body failed")]
struct Answered(u16);

/// Sends `req` and returns the status and body.
///
/// # Errors
/// See [`OutboundError`]. Errors never contain the bearer token or the request body.
pub fn send_request(call: &Request<'_>) -> Result<(u16, Vec<u8>), OutboundError> {
    exchange(call).map_err(|e| {
        let answered = e.downcast_ref::<Answered>().map(|a| a.0);
        match e.downcast_ref::<TimedOut>() {
            Some(TimedOut(what)) => OutboundError::Timeout {
                what: what.clone(),
                answered,
            },
            None => OutboundError::Failed {
                sent: answered.is_some() || e.downcast_ref::<SentWhole>().is_some(),
                cause: e,
                answered,
            },
        }
    })
}

fn exchange(call: &Request<'_>) -> anyhow::Result<(u16, Vec<u8>)> {
    let uri: http::Uri = call.url.parse().context("not a URL")?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        _ => bail!("the URL must be http:// or https://"),
    };
    let authority = uri.authority().context("the URL has no host")?.to_string();
    // Credentials in a URL would travel in the Host header and show up wherever the URL
    // does; each target takes its token from a variable of its own.
    if authority.contains('@') {
        bail!(
            "the URL holds credentials (`user:password@`): give the target's token variable instead"
        );
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());

    let mut headers: Vec<(String, Vec<u8>)> = call
        .headers
        .iter()
        .map(|(name, value)| ((*name).to_string(), value.as_bytes().to_vec()))
        .collect();
    // The request's id and trace context travel on to every service it calls.
    for (name, value) in crate::request_log::outgoing_headers() {
        headers.push((name.to_string(), value.into_bytes()));
    }
    if let Some(token) = call.bearer {
        headers.push((
            "authorization".to_string(),
            format!("Bearer {token}").into_bytes(),
        ));
    }
    if let Some((content_type, body)) = call.body {
        headers.push(("content-type".to_string(), content_type.as_bytes().to_vec()));
        headers.push((
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&headers).map_err(|e| {
        // The usual cause: a token variable read from a file, its line break kept.
        let token_unfit = call
            .bearer
            .is_some_and(|t| t.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f));
        let hint = if token_unfit {
            " (the target's token holds a control character, such as a line break at its \
             end: set its variable without it)"
        } else {
            ""
        };
        anyhow::anyhow!("building headers: {e:?}{hint}")
    })?;
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

    // The runtime bounds the connect and the first byte of a call over the network. A call
    // by service chaining (`http://<component>.spin.internal`) runs a component in the same
    // process, and Spin (like our host) applies neither timeout to it: the guest bounds
    // the wait for the response headers itself, by the first-byte timeout. For a network
    // target the deadline is a backstop behind the runtime's timeouts, with room for a
    // second connect window (wasmtime's client gives the HTTP handshake one of its own,
    // and none to TLS).
    let chained = uri.host().is_some_and(chained_host);
    let wait = if chained {
        call.first_byte_timeout
    } else {
        call.connect_timeout
            .saturating_mul(2)
            .saturating_add(call.first_byte_timeout)
    };
    let deadline = monotonic_clock::now().saturating_add(nanos(wait));

    let options = RequestOptions::new();
    // A host that cannot honour a timeout refuses it; the request still goes out.
    let _ = options.set_connect_timeout(Some(nanos(call.connect_timeout)));
    let _ = options.set_first_byte_timeout(Some(nanos(call.first_byte_timeout)));
    let _ = options.set_between_bytes_timeout(Some(nanos(call.first_byte_timeout)));
    // Send first, then write the body: the host buffers only a little of an outgoing
    // body, so a larger one written before `handle` would wait forever for a reader.
    let future = outgoing_handler::handle(request, Some(options))
        .map_err(|e| anyhow::anyhow!("sending the request: {e:?}{}", denied_hint(&e)))?;
    let written = match call.body {
        Some((_, body)) => write_body(&outgoing, body, deadline),
        None => Ok(()),
    };
    // `handed`: the whole request went to the host, so the target may have acted on it
    // even if the exchange then failed (see `SentWhole`).
    let (write_error, handed) = match written {
        Ok(()) => match OutgoingBody::finish(outgoing, None) {
            Ok(()) => (None, true),
            // Every byte went out: the connection may have closed as the server answered.
            Err(e) => (
                Some(anyhow::anyhow!("finishing the request body: {e:?}")),
                true,
            ),
        },
        // The host stopped taking the body (the connection failed or timed out, or the
        // server answered early): the request is abandoned, and the response future says
        // why, which is what the caller needs (a timeout, or the server's answer).
        Err(e) => {
            drop(outgoing);
            (Some(e.cause), e.handed)
        }
    };
    let ready = future.subscribe();
    let answered_in_time = wait_any(&[&ready], deadline).is_some();
    // A pollable must go before the future it watches; dropping the future abandons the
    // request.
    drop(ready);
    if !answered_in_time {
        let error = anyhow::Error::new(TimedOut(format!(
            "no response headers within {} ms",
            wait.as_millis()
        )));
        return Err(match &write_error {
            Some(write) => error.context(format!("{write:#}")),
            None => error,
        });
    }
    let response = future
        .get()
        .context("the response was not ready")?
        .map_err(|()| anyhow::anyhow!("the response was already taken"))?
        .map_err(|e| {
            let error = match e {
                ErrorCode::ConnectionTimeout
                | ErrorCode::ConnectionReadTimeout
                | ErrorCode::ConnectionWriteTimeout
                | ErrorCode::HttpResponseTimeout => anyhow::Error::new(TimedOut(format!("{e:?}"))),
                e => {
                    let error = anyhow::anyhow!("the request failed: {e:?}{}", denied_hint(&e));
                    if handed && may_have_reached(&e) {
                        error.context(SentWhole)
                    } else {
                        error
                    }
                }
            };
            match &write_error {
                Some(write) => error.context(format!("{write:#}")),
                None => error,
            }
        })?;
    let status = response.status();
    let body = response
        .consume()
        .map_err(|()| anyhow::anyhow!("the response body was already taken"))?;
    let stream = body
        .stream()
        .map_err(|()| anyhow::anyhow!("the response body stream was already taken"))?;
    match (read_body(&stream, call), call.max_response) {
        (Ok(bytes), _) => Ok((status, bytes)),
        // Only the status matters: the body was read so that the connection can serve
        // another call, and nothing about it fails the call.
        (Err(_ignored), None) => Ok((status, Vec::new())),
        (Err(e), Some(_)) => Err(e.context(Answered(status))),
    }
}

/// Reads a response body: at most `call.max_response` bytes (64 KiB when only the status
/// matters), all of it within the first-byte timeout after the headers. The between-bytes
/// timeout alone would let a server dripping a byte at a time hold the call for as long
/// as it likes. A wait for more bytes ends at the deadline (WASI monotonic clock), so the
/// body takes no longer than the timeout; the deadline is looked at only when a read would
/// wait, so a body that is all there is never failed by it.
fn read_body(
    stream: &wasi::io::streams::InputStream,
    call: &Request<'_>,
) -> anyhow::Result<Vec<u8>> {
    let max = call.max_response.unwrap_or(MAX_RESPONSE);
    let timeout = call.first_byte_timeout;
    let deadline = monotonic_clock::now()
        .saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    let mut waited_from = Instant::now();
    let mut bytes = Vec::new();
    loop {
        match stream.read(16 * 1024) {
            Ok(chunk) if chunk.is_empty() => {
                if monotonic_clock::now() >= deadline {
                    return Err(anyhow::Error::new(TimedOut(format!(
                        "the response body took longer than {} ms",
                        timeout.as_millis()
                    ))));
                }
                // Woken by the stream (more bytes, its end or the host's between-bytes
                // timeout) or by the deadline: the loop looks again.
                let ready = stream.subscribe();
                let timer = monotonic_clock::subscribe_instant(deadline);
                let _woken = wasi::io::poll::poll(&[&ready, &timer]);
            }
            Ok(chunk) => {
                waited_from = Instant::now();
                bytes.extend_from_slice(&chunk);
                if bytes.len() > max {
                    bail!("the response body is larger than {max} bytes");
                }
            }
            Err(wasi::io::streams::StreamError::Closed) => return Ok(bytes),
            // A stall between bytes is the timeout it is, not a broken answer. Hosts do not
            // all say so (`http-error-code` of a body's error is empty on wasmtime 48), but
            // the wait does. Hosts start their timer at slightly different moments (after
            // the last chunk, or when it was handed over): a tenth of slack covers that.
            Err(wasi::io::streams::StreamError::LastOperationFailed(e)) => {
                use wasi::http::types::{ErrorCode as Code, http_error_code};
                let said = matches!(
                    http_error_code(&e),
                    Some(Code::ConnectionReadTimeout | Code::HttpResponseTimeout)
                );
                if said || waited_from.elapsed() >= timeout * 9 / 10 {
                    return Err(anyhow::Error::new(TimedOut(format!(
                        "no more of the response body within {} ms",
                        timeout.as_millis()
                    ))));
                }
                bail!("reading the response body: {}", e.to_debug_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{chained_host, require_tls};

    #[test]
    fn plain_http_goes_only_to_this_machine_or_a_chained_component() {
        for url in [
            "https://mail.example.com/codes",
            "HTTPS://mail.example.com",
            "http://127.0.0.1:8080/codes",
            "http://[::1]:8080/codes",
            "http://localhost/codes",
            "http://mailer.spin.internal/codes",
        ] {
            assert!(require_tls("mail_webhook_url", url).is_ok(), "{url}");
        }
        for url in [
            "http://mail.example.com/codes",
            "HTTP://mail.example.com/codes",
            "http://10.0.0.5:8080/codes",
            "http://a.b.spin.internal/codes",
            "http://localhost.example.com/codes",
        ] {
            let err = require_tls("mail_webhook_url", url).expect_err(url);
            let text = err.to_string();
            assert!(
                text.contains("`mail_webhook_url` must start with https://"),
                "{text}"
            );
            assert!(!text.contains(url), "the value stays out of the message");
        }
    }

    #[test]
    fn only_a_component_id_under_spin_internal_is_called_by_service_chaining() {
        for host in [
            "example-backend.spin.internal",
            "Example-Backend.SPIN.Internal",
            "a.spin.internal",
        ] {
            assert!(chained_host(host), "{host}");
        }
        for host in [
            "spin.internal",
            ".spin.internal",
            "a.b.spin.internal",
            "example-backend.spin.internal.evil.example",
            "example-backend.spin.internals",
            "backend.example.com",
            "127.0.0.1",
        ] {
            assert!(!chained_host(host), "{host}");
        }
    }
}
