//! A stand-in for the team's user service (the REST user directory).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request the user service received.
#[derive(Debug, Clone)]
pub struct UserCall {
    pub method: String,
    pub path_and_query: String,
    pub authorization: Option<String>,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    users: Mutex<HashMap<String, String>>,
    blocked: Mutex<HashSet<String>>,
    calls: Mutex<Vec<UserCall>>,
    failing_reads: AtomicU32,
    failing_creates: AtomicU32,
    /// Creates answer 403 (closed sign-ups).
    closed: std::sync::atomic::AtomicBool,
    /// Creates answer a bare 403 (a token without the right to create users).
    forbidden: std::sync::atomic::AtomicBool,
    next_id: AtomicU32,
    /// The next read answers as the directory stood when it arrived, but only once
    /// released: a directory answer that is already stale when it reaches the caller.
    hold_next_read: std::sync::atomic::AtomicBool,
    held_reads: AtomicU32,
    release: tokio::sync::Notify,
    /// The next block or unblock is made when it arrives, but answered only once
    /// released: a change that lands before the caller hears of it.
    hold_next_change: std::sync::atomic::AtomicBool,
    held_changes: AtomicU32,
    release_change: tokio::sync::Notify,
}

/// The stub user service, serving until the runtime ends.
#[derive(Debug, Clone)]
pub struct UserServiceStub {
    pub addr: SocketAddr,
    state: Arc<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl UserServiceStub {
    /// Starts the stub on a free port.
    ///
    /// # Errors
    /// The listener could not bind.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the user service stub")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let serving = state.clone();
        crate::stub_server::serve(listener, move |req| handle(serving.clone(), req));
        Ok(Self { addr, state })
    }

    /// The base URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Marks an address's user blocked.
    pub fn block(&self, email: &str) {
        lock(&self.state.blocked).insert(email.to_string());
    }

    /// Whether an address's user is blocked.
    pub fn is_blocked(&self, email: &str) -> bool {
        lock(&self.state.blocked).contains(email)
    }

    /// The next `n` lookups answer 503.
    pub fn fail_reads(&self, n: u32) {
        self.state.failing_reads.store(n, Ordering::SeqCst);
    }

    /// The next `n` creates answer 503.
    pub fn fail_creates(&self, n: u32) {
        self.state.failing_creates.store(n, Ordering::SeqCst);
    }

    /// Closes (or opens) sign-ups: a create answers 403.
    pub fn close_sign_ups(&self, closed: bool) {
        self.state.closed.store(closed, Ordering::SeqCst);
    }

    /// Makes a create answer a bare 403 (no `sign_up_refused` body), as a service does
    /// for a token without the right to create users.
    pub fn forbid_creates(&self, forbidden: bool) {
        self.state.forbidden.store(forbidden, Ordering::SeqCst);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<UserCall> {
        lock(&self.state.calls).clone()
    }

    /// Makes `email` another address of the existing user `user_id` (a directory may map
    /// several addresses to one user).
    pub fn link(&self, email: &str, user_id: &str) {
        lock(&self.state.users).insert(email.to_string(), user_id.to_string());
    }

    /// Deletes the user of `email` (every address of theirs), as a directory does when an
    /// account is deleted: the directory knows neither the addresses nor the id any more.
    pub fn forget(&self, email: &str) {
        let mut users = lock(&self.state.users);
        if let Some(id) = users.get(email).cloned() {
            users.retain(|_, user| *user != id);
        }
    }

    /// Passes `email` on to `next_owner`, as a directory does when it gives an address to
    /// another user: the address's current user moves to `moved_to`. Returns that user.
    ///
    /// # Panics
    /// `email` has no user yet.
    pub fn pass_on(&self, email: &str, moved_to: &str, next_owner: &str) -> String {
        let previous = self
            .user_of(email)
            .expect("the address has a user to pass on");
        self.link(moved_to, &previous);
        self.link(email, next_owner);
        previous
    }

    /// Holds the next `GET /users/by-email`: its answer is taken when it arrives and sent
    /// when [`UserServiceStub::release_held_read`] is called.
    pub fn hold_next_read(&self) {
        self.state.hold_next_read.store(true, Ordering::SeqCst);
    }

    /// Waits until a read is held.
    ///
    /// # Panics
    /// None is within 30 s.
    pub async fn until_a_read_is_held(&self) {
        until_held(&self.state.held_reads, "a read").await;
    }

    /// Waits until a change is held.
    ///
    /// # Panics
    /// None is within 30 s.
    pub async fn until_a_change_is_held(&self) {
        until_held(&self.state.held_changes, "a change").await;
    }

    /// Sends the held read's answer.
    pub fn release_held_read(&self) {
        self.state.release.notify_one();
    }

    /// Holds the next `PUT /users/{id}/blocked`: the change is made when it arrives and
    /// answered when [`UserServiceStub::release_held_change`] is called.
    pub fn hold_next_change(&self) {
        self.state.hold_next_change.store(true, Ordering::SeqCst);
    }

    /// Sends the held change's answer.
    pub fn release_held_change(&self) {
        self.state.release_change.notify_one();
    }

    /// The user id of an address, if created.
    pub fn user_of(&self, email: &str) -> Option<String> {
        lock(&self.state.users).get(email).cloned()
    }
}

async fn until_held(held: &AtomicU32, what: &str) {
    let wait = async {
        while held.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("{what} reached the user service within 30 s"));
}

fn take_failure(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn respond(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Ok(b) = u8::from_str_radix(&value[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    state: Arc<State>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    lock(&state.calls).push(UserCall {
        method: method.clone(),
        path_and_query: path_and_query.clone(),
        authorization: header("authorization"),
        request_id: header("x-request-id"),
        traceparent: header("traceparent"),
    });
    let body = req.into_body().collect().await?.to_bytes();
    let user = |email: &str, id: &str| json!({ "user_id": id, "blocked": lock(&state.blocked).contains(email) });
    Ok(match (method.as_str(), path_and_query.split_once('?')) {
        ("GET", Some(("/users/by-email", query))) => {
            if take_failure(&state.failing_reads) {
                return Ok(respond(503, json!({})));
            }
            let email = decode(query.strip_prefix("email=").unwrap_or_default());
            let found = lock(&state.users).get(&email).cloned();
            let answer = match found {
                Some(id) => respond(200, user(&email, &id)),
                None => respond(404, json!({})),
            };
            if state.hold_next_read.swap(false, Ordering::SeqCst) {
                state.held_reads.fetch_add(1, Ordering::SeqCst);
                state.release.notified().await;
            }
            answer
        }
        ("POST", None) if path_and_query == "/users" => {
            if take_failure(&state.failing_creates) {
                return Ok(respond(503, json!({})));
            }
            if state.closed.load(Ordering::SeqCst) {
                return Ok(respond(403, json!({"error": "sign_up_refused"})));
            }
            if state.forbidden.load(Ordering::SeqCst) {
                return Ok(respond(403, json!({"message": "forbidden"})));
            }
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let email = parsed["email"].as_str().unwrap_or_default().to_string();
            let id = {
                let mut users = lock(&state.users);
                users
                    .entry(email.clone())
                    .or_insert_with(|| {
                        format!("ext-{}", state.next_id.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .clone()
            };
            respond(201, user(&email, &id))
        }
        ("PUT", None) if path_and_query.ends_with("/blocked") => {
            let id = path_and_query
                .trim_start_matches("/users/")
                .trim_end_matches("/blocked");
            let id = decode(id);
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let email = lock(&state.users)
                .iter()
                .find(|(_, v)| **v == id)
                .map(|(k, _)| k.clone());
            let answer = match (email, parsed["blocked"].as_bool()) {
                (Some(email), Some(true)) => {
                    lock(&state.blocked).insert(email);
                    respond(204, json!({}))
                }
                (Some(email), Some(false)) => {
                    lock(&state.blocked).remove(&email);
                    respond(204, json!({}))
                }
                (Some(_), None) => respond(400, json!({})),
                (None, _) => respond(404, json!({})),
            };
            if state.hold_next_change.swap(false, Ordering::SeqCst) {
                state.held_changes.fetch_add(1, Ordering::SeqCst);
                state.release_change.notified().await;
            }
            answer
        }
        _ => respond(404, json!({})),
    })
}
