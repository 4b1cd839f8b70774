//! The accept loop shared by the stub HTTP services (mail webhook, user service, backend):
//! plain HTTP/1.1, or TLS offering `h2` and `http/1.1` by ALPN, counting the connections
//! it accepts (so a test can tell a pooled client from one that connects per request).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::redis_server::ServerTls;

/// Serves `handler` on `listener` in the background of the current runtime; answers the
/// count of connections accepted so far.
pub fn serve<H, F>(listener: TcpListener, handler: H) -> Arc<AtomicU64>
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, hyper::Error>> + Send + 'static,
{
    accept_loop(listener, None, handler)
}

/// As [`serve`], over TLS with `tls`'s certificate; HTTP/2 when the client picks `h2`.
///
/// # Errors
/// The certificate or key cannot be read.
pub fn serve_tls<H, F>(
    listener: TcpListener,
    tls: &ServerTls,
    handler: H,
) -> anyhow::Result<Arc<AtomicU64>>
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, hyper::Error>> + Send + 'static,
{
    let chain = CertificateDer::pem_file_iter(&tls.cert)
        .context("reading the server certificate")?
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the server certificate")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).context("reading the server key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the server certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Ok(accept_loop(listener, Some(acceptor), handler))
}

/// Accepts connections (through `tls` when given) and serves HTTP/1.1 or HTTP/2 on each.
fn accept_loop<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
) -> Arc<AtomicU64>
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, hyper::Error>> + Send + 'static,
{
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let service = hyper::service::service_fn(handler.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                let http = auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                    // A client that does not trust the certificate ends here.
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                        Err(_refused) => return,
                    },
                };
            });
        }
        Ok::<(), Infallible>(())
    });
    accepted
}

/// A server that answers every request `200` with a 16-byte body sent as `pace` says: the
/// first 4 bytes at once, then one byte every `pace` (`None`: nothing more, the body
/// stalls). Plain HTTP/1.1 written by hand, since a body that stalls or drips is what a
/// well-behaved server never sends. Returns its base URL.
///
/// # Panics
/// No local port to listen on.
pub async fn answering_200_slowly(pace: Option<std::time::Duration>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 16 * 1024];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            content-length: 16\r\n\r\nabcd";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..12 {
                    let Some(pace) = pace else { break };
                    tokio::time::sleep(pace).await;
                    if socket.write_all(b"x").await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            });
        }
    });
    url
}
