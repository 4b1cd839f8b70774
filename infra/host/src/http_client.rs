//! The client that sends a guest's outgoing HTTP requests once [`crate::outbound`] has let
//! them through, built to behave as Spin 4.0.2's (`factor-outbound-http`):
//! - one hyper-util client per app, so connections are pooled across requests and
//!   instances (Spin pools since 3.4 when no runtime config turns it off; our host reads
//!   no runtime config, so it always pools);
//! - TLS by rustls, trusting the platform's store (which honours `SSL_CERT_FILE` and
//!   `SSL_CERT_DIR`) and the webpki roots, as Spin's default `use_platform_roots` and
//!   `use_webpki_roots` do; ALPN offers `h2` then `http/1.1`; plain `http://` is HTTP/1.1;
//! - the guest's connect, first-byte and between-bytes timeouts, 600 s each when unset;
//! - the `Host` header derived from the URI by the client (`host`, or `host:port` when the
//!   port is not the scheme's default).
//!
//! wasmtime-wasi-http's `default_send_request`, which this replaces, opens a connection per
//! request and trusts the webpki roots only: a backend whose CA sits in the system store
//! worked on Spin and failed here.

use std::error::Error as _;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use crate::logs::Logs;

/// What each timeout is when the guest sets none (Spin's and wasmtime's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

tokio::task_local! {
    /// The connect timeout of the request being sent. hyper-util's client gives a connector
    /// only the URI, so the request's own option reaches it this way. The connector reads
    /// it before its first await, which runs inside the request's scope, so a connection
    /// the pool finishes in the background keeps the request's timeout too.
    static CONNECT_TIMEOUT: Duration;
}

/// The app's outgoing HTTP client; cheap to clone (the pool is shared).
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<Connector, WasiBody>,
    logs: Logs,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client trusting the platform's roots and the webpki roots. A certificate the
    /// platform store holds but rustls cannot parse is logged and skipped.
    pub(crate) fn new(logs: Logs) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            logs.host(&format!(
                "outbound TLS: reading the platform's roots: {error}"
            ));
        }
        let (_, unparsable) = roots.add_parsable_certificates(native.certs);
        if unparsable > 0 {
            logs.host(&format!(
                "outbound TLS: skipped {unparsable} platform root(s) rustls cannot parse"
            ));
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        };
        // The timer lets the pool close connections idle for 90 s (its default) even to a
        // host that is not asked again; without it they linger until the server hangs up.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self { client, logs })
    }

    /// Sends `request` (an absolute URI, allowed already) and answers its response, whose
    /// body fails with `ConnectionReadTimeout` when no frame comes for the between-bytes
    /// timeout.
    pub(crate) async fn send(
        &self,
        mut request: Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<Response<WasiBody>, Error> {
        let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| {
            options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
        };
        let connect = timeout(|o| o.connect_timeout);
        let first_byte = timeout(|o| o.first_byte_timeout);
        let between_bytes = timeout(|o| o.between_bytes_timeout);
        // The client derives `Host` from the URI, as Spin's does.
        request.headers_mut().remove(http::header::HOST);
        let sent = CONNECT_TIMEOUT.scope(connect, self.client.request(request));
        let response = tokio::time::timeout(first_byte, sent)
            .await
            .map_err(|_elapsed| Error::ConnectionReadTimeout)?
            .map_err(|e| self.request_error(&e))?;
        Ok(response.map(|incoming| {
            BetweenBytes {
                incoming,
                timeout: between_bytes,
                sleep: None,
            }
            .boxed_unsync()
        }))
    }

    /// The `wasi:http` error for a failed request: the connector's own when it failed,
    /// else a protocol error, with the cause in the host log.
    fn request_error(&self, error: &hyper_util::client::legacy::Error) -> Error {
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(connect) = cause.downcast_ref::<ConnectError>() {
                self.logs.host(&format!("outbound HTTP: {connect}"));
                return connect.to_wasi();
            }
            source = cause.source();
        }
        self.logs.host(&format!("outbound HTTP: {error:?}"));
        Error::HttpProtocolError
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
enum ConnectError {
    NoAuthority,
    /// Neither `http` nor `https` (wasmtime refuses others first; this does not rely on it).
    Scheme,
    Dns(std::io::Error),
    NoAddress,
    Timeout,
    /// Connecting failed; `AddrNotAvailable` is a DNS error to the guest, as in Spin.
    Refused(std::io::Error),
    InvalidName(rustls::pki_types::InvalidDnsNameError),
    Tls(std::io::Error),
}

impl ConnectError {
    fn to_wasi(&self) -> Error {
        match self {
            Self::NoAuthority | Self::Scheme => Error::HttpRequestUriInvalid,
            Self::Dns(_) => dns_error("address not available"),
            Self::Refused(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                dns_error("address not available")
            }
            Self::InvalidName(_) => dns_error("invalid dns name"),
            Self::Timeout => Error::ConnectionTimeout,
            // Spin connects to an empty address list, which fails as a refusal.
            Self::NoAddress | Self::Refused(_) => Error::ConnectionRefused,
            Self::Tls(_) => Error::TlsProtocolError,
        }
    }
}

/// Spin's `DnsError` with `rcode`.
fn dns_error(rcode: &str) -> Error {
    Error::DnsError {
        rcode: Some(rcode.to_string()),
        info_code: Some(0),
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAuthority => f.write_str("the URI has no host"),
            Self::Scheme => f.write_str("the scheme is neither http nor https"),
            Self::Dns(e) => write!(f, "resolving the host: {e}"),
            Self::NoAddress => f.write_str("the host resolved to no address"),
            Self::Timeout => f.write_str("connect timeout"),
            Self::Refused(e) => write!(f, "connecting: {e}"),
            Self::InvalidName(e) => write!(f, "the host is not a valid TLS server name: {e}"),
            Self::Tls(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Makes the client's connections: TCP, then TLS for `https://`.
#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<TokioIo<Stream>, ConnectError> {
        let host = uri.host().ok_or(ConnectError::NoAuthority)?;
        let use_tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ConnectError::Scheme),
        };
        let port = uri.port_u16().unwrap_or(if use_tls { 443 } else { 80 });
        // `[::1]` in a URI is `::1` to the resolver.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let timeout = CONNECT_TIMEOUT.try_with(|t| *t).unwrap_or(DEFAULT_TIMEOUT);
        let addrs: Vec<_> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(ConnectError::Dns)?
            .collect();
        if addrs.is_empty() {
            return Err(ConnectError::NoAddress);
        }
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&*addrs))
            .await
            .map_err(|_elapsed| ConnectError::Timeout)?
            .map_err(ConnectError::Refused)?;
        // Small requests and answers: send each as soon as it is written.
        let _ = tcp.set_nodelay(true);
        if !use_tls {
            return Ok(TokioIo::new(Stream::Plain(tcp)));
        }
        // The URI's host as it stands, as Spin gives it to rustls: `https://[::1]` fails
        // there as an invalid DNS name, so it fails here too.
        let name = ServerName::try_from(host.to_string()).map_err(ConnectError::InvalidName)?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Tls)?;
        Ok(TokioIo::new(Stream::Tls(Box::new(tls))))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A connection: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(tcp) => tcp.connected(),
            Self::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                if session.alpn_protocol() == Some(b"h2") {
                    tcp.connected().negotiated_h2()
                } else {
                    tcp.connected()
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A response body that fails when the next frame takes longer than `timeout`.
struct BetweenBytes {
    incoming: hyper::body::Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for BetweenBytes {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(response_error)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// The `wasi:http` error for a response body that failed.
fn response_error(error: hyper::Error) -> Error {
    if error.is_timeout() {
        Error::HttpResponseTimeout
    } else {
        Error::Hyper(error)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn client() -> (HttpClient, Logs) {
        let logs = Logs::new(true, true);
        (HttpClient::new(logs.clone()).expect("a client"), logs)
    }

    fn get(url: &str) -> Request<WasiBody> {
        Request::get(url)
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .expect("a request")
    }

    fn options(between_bytes_ms: u64) -> Option<RequestOptions> {
        Some(RequestOptions {
            between_bytes_timeout: Some(Duration::from_millis(between_bytes_ms)),
            ..RequestOptions::default()
        })
    }

    /// A server that answers each connection with `answer`, then keeps it open, silent.
    async fn server(answer: &'static [u8]) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0_u8; 1024];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(answer).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused_with_the_cause_in_the_log() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let (client, logs) = client();
        let error = client
            .send(get(&format!("http://{addr}/")), None)
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, Error::ConnectionRefused), "{error:?}");
        assert!(
            logs.captured()
                .iter()
                .any(|l| l.contains("outbound HTTP: connecting:")),
            "{:?}",
            logs.captured()
        );
    }

    #[tokio::test]
    async fn an_unknown_host_is_a_dns_error() {
        let (client, _logs) = client();
        let error = client
            .send(get("http://no-such-host.invalid/"), None)
            .await
            .expect_err("no such host");
        assert!(matches!(error, Error::DnsError { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_after_the_between_bytes_timeout() {
        let addr = server(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello").await;
        let (client, _logs) = client();
        let response = client
            .send(get(&format!("http://{addr}/")), options(200))
            .await
            .expect("headers arrive");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "hello");
        let stalled = body.frame().await.expect("an error frame");
        assert!(
            matches!(stalled, Err(Error::ConnectionReadTimeout)),
            "{stalled:?}"
        );
    }

    #[tokio::test]
    async fn a_whole_answer_is_read_and_the_host_header_is_the_authority() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("a connection");
            let mut request = vec![0_u8; 4096];
            let n = stream.read(&mut request).await.expect("a request");
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("an answer");
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let (client, _logs) = client();
        let mut request = get(&format!("http://{addr}/path?q=1"));
        request.headers_mut().insert(
            http::header::HOST,
            "guest-said.example".parse().expect("value"),
        );
        let response = client
            .send(request, options(1_000))
            .await
            .expect("an answer");
        let body = response.into_body().collect().await.expect("a body");
        assert_eq!(body.to_bytes(), "ok");
        let request = seen.await.expect("the server");
        assert!(
            request.starts_with("GET /path?q=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains(&format!("host: {addr}\r\n")),
            "{request}"
        );
    }

    #[tokio::test]
    async fn https_to_a_bracketed_ipv6_literal_is_an_invalid_dns_name_as_in_spin() {
        let listener = TcpListener::bind("[::1]:0").await.expect("IPv6 loopback");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let (client, _logs) = client();
        let error = client
            .send(get(&format!("https://{addr}/")), None)
            .await
            .expect_err("no TLS name");
        assert!(
            matches!(&error, Error::DnsError { rcode: Some(r), .. } if r == "invalid dns name"),
            "{error:?}"
        );
    }
}
