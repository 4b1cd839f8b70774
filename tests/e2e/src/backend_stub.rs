//! A stand-in for the team's backend behind the gateway: records every call and answers
//! as told (default: `200` with the request body echoed), optionally after a delay. Plain
//! HTTP, or HTTPS with a certificate the test made ([`BackendStub::start_tls`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

use crate::redis_server::ServerTls;

/// One call the backend received.
#[derive(Debug, Clone)]
pub struct BackendCall {
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub method: String,
    pub path: String,
    /// Every header, names lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl BackendCall {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    calls: Mutex<Vec<BackendCall>>,
    /// 0: echo with 200.
    status: AtomicU16,
    body: Mutex<Vec<u8>>,
    delay_ms: AtomicU64,
}

/// The stub backend, serving until the test ends.
#[derive(Debug, Clone)]
pub struct BackendStub {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`, or `https://localhost:<port>` over TLS.
    url: String,
    state: Arc<State>,
    accepted: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BackendStub {
    /// Starts the stub on a free port.
    ///
    /// # Errors
    /// The listener could not bind.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(None).await
    }

    /// Starts the stub over TLS with `tls` (a certificate for `localhost`), on a free port.
    ///
    /// # Errors
    /// The listener could not bind, or the certificate cannot be read.
    pub async fn start_tls(tls: &ServerTls) -> anyhow::Result<Self> {
        Self::start_on(Some(tls)).await
    }

    async fn start_on(tls: Option<&ServerTls>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the backend stub")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let serving = state.clone();
        let handler = move |req| handle(serving.clone(), req);
        let (accepted, url) = match tls {
            None => (
                crate::stub_server::serve(listener, handler),
                format!("http://{addr}"),
            ),
            Some(tls) => (
                crate::stub_server::serve_tls(listener, tls, handler)?,
                format!("https://localhost:{}", addr.port()),
            ),
        };
        Ok(Self {
            addr,
            url,
            state,
            accepted,
        })
    }

    /// Its base URL (also its allowed host).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Answers every call with `status` and `body` from now on.
    pub fn answer_with(&self, status: u16, body: &[u8]) {
        *lock(&self.state.body) = body.to_vec();
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Waits this long before answering.
    pub fn delay(&self, delay: Duration) {
        self.state.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<BackendCall> {
        lock(&self.state.calls).clone()
    }
}

async fn handle(
    state: Arc<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await?.to_bytes().to_vec();
    lock(&state.calls).push(BackendCall {
        version,
        method,
        path,
        headers,
        body: body.clone(),
    });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (status, answer) = match state.status.load(Ordering::SeqCst) {
        0 => (200, body),
        status => (status, lock(&state.body).clone()),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(answer)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    Ok(response)
}
