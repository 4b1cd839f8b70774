//! A stand-in for the team's mail webhook: records every delivery request and answers
//! with a status the test chooses, optionally holding the answer back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// One request the webhook received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The `Host` header, as the runtime's outbound HTTP client sent it.
    pub host: Option<String>,
    /// The request's context, as the gateway passes it on.
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    pub body: Value,
}

#[derive(Debug)]
struct State {
    received: Mutex<Vec<Delivery>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    /// Permits to answer; closed (unlimited) unless the test holds deliveries back.
    gate: Semaphore,
    held: std::sync::atomic::AtomicBool,
}

/// The stub webhook, serving until dropped.
#[derive(Debug, Clone)]
pub struct MailStub {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl MailStub {
    /// Starts the stub on a free port of the current runtime.
    ///
    /// # Errors
    /// The listener could not bind.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the mail stub")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            status: AtomicU16::new(202),
            delay_ms: AtomicU64::new(0),
            gate: Semaphore::new(0),
            held: std::sync::atomic::AtomicBool::new(false),
        });
        let serving = state.clone();
        crate::stub_server::serve(listener, move |req| handle(serving.clone(), req));
        Ok(Self { addr, state })
    }

    /// The webhook URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/send", self.addr)
    }

    /// The `allowed_outbound_hosts` entry for it.
    pub fn allowed_host(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer future deliveries with `status`.
    pub fn answer_with(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Wait `delay` before answering.
    pub fn delay(&self, delay: Duration) {
        self.state.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Hold every answer until [`MailStub::release`].
    pub fn hold(&self) {
        self.state.held.store(true, Ordering::SeqCst);
    }

    /// Let held answers go.
    pub fn release(&self) {
        self.state.held.store(false, Ordering::SeqCst);
        self.state.gate.add_permits(1_000);
    }

    /// Everything received so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits (up to 10 s) for a delivery of `challenge_id`.
    ///
    /// # Panics
    /// None arrived.
    pub async fn delivery_for(&self, challenge_id: &str) -> Delivery {
        let found = crate::poll::until(Duration::from_secs(10), Duration::from_millis(20), || {
            self.deliveries()
                .into_iter()
                .find(|d| d.body["challenge_id"] == challenge_id)
        })
        .await;
        found.unwrap_or_else(|| panic!("no delivery for {challenge_id}: {:?}", self.deliveries()))
    }
}

async fn handle(
    state: Arc<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = req.uri().path().to_string();
    let authorization = header("authorization");
    let content_type = header("content-type");
    let host = header("host");
    let request_id = header("x-request-id");
    let traceparent = header("traceparent");
    let bytes = req.into_body().collect().await?.to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state
        .received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Delivery {
            path,
            authorization,
            content_type,
            host,
            request_id,
            traceparent,
            body,
        });
    if state.held.load(Ordering::SeqCst) {
        let _ = state.gate.acquire().await.map(|p| p.forget());
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() =
        hyper::StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap_or_default();
    Ok(response)
}
