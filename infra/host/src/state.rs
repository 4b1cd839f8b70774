//! Per-request store state: WASI, wasi:http with Spin's outbound rules, Spin variables
//! (also as `wasi:config/store`).
//!
//! A fresh [`RequestState`] (and so a fresh instance) serves every request, as Spin does
//! for WASIp2 components: nothing a guest keeps in memory outlives its request. What an
//! instance sees of its component is a [`ComponentConfig`]; its outgoing HTTP goes through
//! [`crate::outbound`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::bindings::fermyon::spin::variables;
use crate::bindings::wasi::config::store as config_store;
use crate::logs::Logs;
use crate::outbound::{Outbound, OutboundHooks};
use crate::variables::{Resolver, Template, check_guest_name};

/// A component's manifest settings, as its instances see them.
#[derive(Debug)]
pub(crate) struct ComponentConfig {
    pub(crate) id: String,
    pub(crate) variables: BTreeMap<String, Template>,
    /// `allowed_outbound_hosts`, resolved for each instance.
    pub(crate) allowed_hosts: Vec<Template>,
    pub(crate) environment: Vec<(String, String)>,
}

impl ComponentConfig {
    /// Resolves the templated `allowed_outbound_hosts` for one instance. A value that no
    /// longer parses denies everything and is logged (start-up checked the defaults).
    fn resolve_allowed_hosts(&self, resolver: &Resolver, logs: &Logs) -> AllowedHosts {
        let resolved: anyhow::Result<Vec<String>> = self
            .allowed_hosts
            .iter()
            .map(|t| t.resolve(resolver))
            .collect();
        match resolved.and_then(|entries| AllowedHosts::parse(&entries)) {
            Ok(hosts) => hosts,
            Err(e) => {
                logs.host(&format!(
                    "component `{}`: `allowed_outbound_hosts` is malformed, denying all: {e:#}",
                    self.id
                ));
                AllowedHosts::default()
            }
        }
    }
}

/// What the host counts of one request before its response (for the benchmark's and the
/// tests' headers, see [`crate::ROUND_TRIPS_HEADER`]).
#[derive(Debug, Default)]
pub(crate) struct RequestCounters {
    pub(crate) redis_round_trips: Arc<AtomicU64>,
    pub(crate) memory_grows: Arc<AtomicU64>,
}

/// What one request's instance can reach.
pub struct RequestState {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    component: Arc<ComponentConfig>,
    resolver: Arc<Resolver>,
    logs: Logs,
    /// Redis commands this request's guest sent before it set its response (what the
    /// response's latency paid; work done after the response is not counted).
    pub(crate) redis_round_trips: Arc<AtomicU64>,
    /// Times the guest asked to grow a linear memory before it set its response (see
    /// [`crate::MEMORY_GROWS_HEADER`]).
    memory_grows: Arc<AtomicU64>,
    /// The table entry of the request's response outparam, until the guest sets it.
    pub(crate) response_outparam: Option<u32>,
    pub(crate) redis_connections: usize,
    allowed: Arc<AllowedHosts>,
    /// `true` once the host is shutting down (see [`crate::redis_host::SHUTTING_DOWN`]).
    pub(crate) draining: tokio::sync::watch::Receiver<bool>,
}

impl RequestState {
    pub(crate) fn new(
        component: Arc<ComponentConfig>,
        resolver: Arc<Resolver>,
        logs: Logs,
        outbound: Outbound,
        counters: &RequestCounters,
        clock_offset_ms: i64,
        draining: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let allowed = Arc::new(component.resolve_allowed_hosts(&resolver, &logs));
        let mut wasi = WasiCtx::builder();
        wasi.envs(&component.environment)
            .stdout(LogStream::new(logs.clone(), &component.id))
            .stderr(LogStream::new(logs.clone(), &component.id));
        if clock_offset_ms != 0 {
            wasi.wall_clock(OffsetClock(clock_offset_ms));
        }
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: outbound.hooks(
                &component.id,
                allowed.clone(),
                counters.redis_round_trips.clone(),
            ),
            component,
            resolver,
            logs,
            redis_round_trips: counters.redis_round_trips.clone(),
            memory_grows: counters.memory_grows.clone(),
            response_outparam: None,
            redis_connections: 0,
            allowed,
            draining,
        }
    }

    /// Whether the guest has not set its response yet: setting it takes the outparam out
    /// of the table (a later resource may reuse its slot, hence the type check).
    pub(crate) fn before_response(&mut self) -> bool {
        self.response_outparam.is_some_and(|rep| {
            self.table.get_any_mut(rep).is_ok_and(|entry| {
                entry.is::<wasmtime_wasi_http::p2::types::HostResponseOutparam>()
            })
        })
    }

    pub(crate) fn allowed_hosts(&self) -> wasmtime::Result<Arc<AllowedHosts>> {
        Ok(self.allowed.clone())
    }

    pub(crate) fn log_denied(&self, target: &str) {
        self.logs.denied(&self.component.id, target);
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // Every outgoing request passes here first: the hooks learn whether it is made
        // before the response (what the round-trip count covers).
        self.hooks.before_response = self.before_response();
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl RequestState {
    /// The component's variable `name`, as `fermyon:spin/variables.get` answers it.
    fn variable(&self, name: &str) -> Result<String, variables::Error> {
        check_guest_name(name).map_err(variables::Error::InvalidName)?;
        let component = &self.component;
        if component.variables.is_empty() {
            return Err(variables::Error::Undefined(format!(
                "no variable for component {:?}",
                component.id
            )));
        }
        let Some(template) = component.variables.get(name) else {
            return Err(variables::Error::Undefined(format!(
                "no variable for {:?}.{:?}",
                component.id, name
            )));
        };
        template
            .resolve(&self.resolver)
            .map_err(|e| variables::Error::Provider(format!("{e:#}")))
    }
}

impl variables::Host for RequestState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        Ok(self.variable(&name))
    }
}

/// `wasi:config/store`, as Spin maps it onto the component's variables: an undefined or
/// invalid name is `none`, a provider failure is `upstream`.
impl config_store::Host for RequestState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, config_store::Error>> {
        Ok(match self.variable(&key) {
            Ok(value) => Ok(Some(value)),
            Err(variables::Error::Undefined(_) | variables::Error::InvalidName(_)) => Ok(None),
            Err(variables::Error::Provider(m)) => Err(config_store::Error::Upstream(m)),
            Err(variables::Error::Other(m)) => Err(config_store::Error::Io(m)),
        })
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, config_store::Error>> {
        let resolved: Result<Vec<(String, String)>, anyhow::Error> = self
            .component
            .variables
            .iter()
            .map(|(key, template)| Ok((key.clone(), template.resolve(&self.resolver)?)))
            .collect();
        Ok(resolved.map_err(|e| config_store::Error::Upstream(format!("{e:#}"))))
    }
}

/// A component's stdout or stderr: each line goes to the host log under the component id.
struct LogStream {
    logs: Logs,
    source: Arc<str>,
}

impl LogStream {
    fn new(logs: Logs, component: &str) -> Self {
        Self {
            logs,
            source: Arc::from(component),
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            logs: self.logs.clone(),
            source: self.source.clone(),
            pending: Vec::new(),
        })
    }
}

/// Splits written bytes into lines; a partial line waits for its end (or for drop).
struct LineWriter {
    logs: Logs,
    source: Arc<str>,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit_complete_lines(&mut self) {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            self.logs.line(&self.source, text.trim_end_matches('\r'));
        }
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        self.emit_complete_lines();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit_complete_lines();
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.logs.line(&self.source, &text);
        }
    }
}

/// The system wall clock shifted by some milliseconds (see
/// [`crate::HostOptions::guest_clock_offset_ms`]).
struct OffsetClock(i64);

impl wasmtime_wasi::HostWallClock for OffsetClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }

    fn now(&self) -> std::time::Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let shift = std::time::Duration::from_millis(self.0.unsigned_abs());
        if self.0 < 0 {
            now.saturating_sub(shift)
        } else {
            now.saturating_add(shift)
        }
    }
}

/// Counts requests to grow a memory (a failed one too) and allows growth up to the
/// memory's own maximum, as the runtime does without a limiter (the pooling allocator's
/// limits still apply on top). The instance, table and memory counts keep the defaults
/// the store has without a limiter.
impl wasmtime::ResourceLimiter for RequestState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Instantiation creates each memory at its initial size (from 0): not a growth.
        if current > 0 && self.before_response() {
            self.memory_grows.fetch_add(1, Ordering::Relaxed);
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}
