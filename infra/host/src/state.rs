//! Per-request store state: WASI, wasi:http with Spin's outbound rules, Spin variables.
//!
//! A fresh [`RequestState`] (and so a fresh instance) serves every request, as Spin does
//! for WASIp2 components: nothing a guest keeps in memory outlives its request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::app::{App, ComponentRuntime};
use crate::bindings::fermyon::spin::variables;
use crate::logs::Logs;
use crate::variables::check_guest_name;

/// What one request's instance can reach.
pub struct RequestState {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    pub(crate) app: Arc<App>,
    pub(crate) component: Arc<ComponentRuntime>,
    /// Redis commands this request's guest has sent.
    pub(crate) redis_round_trips: Arc<AtomicU64>,
    pub(crate) redis_connections: usize,
    allowed: Arc<AllowedHosts>,
}

impl RequestState {
    pub(crate) fn new(
        app: Arc<App>,
        component: Arc<ComponentRuntime>,
        redis_round_trips: Arc<AtomicU64>,
    ) -> Self {
        let allowed = Arc::new(component.resolve_allowed_hosts(&app));
        let mut wasi = WasiCtx::builder();
        wasi.envs(&component.environment)
            .stdout(LogStream::new(app.logs.clone(), &component.id))
            .stderr(LogStream::new(app.logs.clone(), &component.id));
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                app: app.clone(),
                component: component.id.clone(),
                allowed: allowed.clone(),
            },
            app,
            component,
            redis_round_trips,
            redis_connections: 0,
            allowed,
        }
    }

    pub(crate) fn allowed_hosts(&self) -> wasmtime::Result<Arc<AllowedHosts>> {
        Ok(self.allowed.clone())
    }

    pub(crate) fn log_denied(&self, target: &str) {
        self.app.logs.denied(&self.component.id, target);
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
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl variables::Host for RequestState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        if let Err(reason) = check_guest_name(&name) {
            return Ok(Err(variables::Error::InvalidName(reason)));
        }
        let component = &self.component;
        if component.variables.is_empty() {
            return Ok(Err(variables::Error::Undefined(format!(
                "no variable for component {:?}",
                component.id
            ))));
        }
        let Some(template) = component.variables.get(&name) else {
            return Ok(Err(variables::Error::Undefined(format!(
                "no variable for {:?}.{:?}",
                component.id, name
            ))));
        };
        Ok(template
            .resolve(&self.app.resolver)
            .map_err(|e| variables::Error::Provider(format!("{e:#}"))))
    }
}

/// Outgoing `wasi:http`: allowed-hosts check, service chaining, self-requests.
struct OutboundHooks {
    app: Arc<App>,
    component: String,
    allowed: Arc<AllowedHosts>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for OutboundHooks {
    /// Spin never forwards a guest's `host` header.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let app = self.app.clone();
        let component = self.component.clone();
        let allowed = self.allowed.clone();
        Box::new(async move {
            app.send_outbound(&component, &allowed, request, options)
                .await
        })
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
