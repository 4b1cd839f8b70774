//! A loaded application: compiled components, router, variables; and serving one request.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use crate::allowed_hosts::{AllowedHosts, default_port};
use crate::bindings;
use crate::logs::Logs;
use crate::manifest::{Manifest, StaticResponse, TriggerTarget};
use crate::routes::{Router, SpinHeaders, Target};
use crate::state::RequestState;
use crate::variables::{Resolver, Template, check_references, component_templates};

/// Response header carrying the Redis round trips of the request, when the host was
/// started with `expose_redis_round_trips` (never by default: Spin has no such header).
pub const ROUND_TRIPS_HEADER: &str = "edge-auth-host-redis-round-trips";

/// What the host needs to load an app.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub manifest: PathBuf,
    /// `--variable k=v` values; they win over every other provider.
    pub variables: HashMap<String, String>,
    /// The environment `SPIN_VARIABLE_*` values are read from.
    pub env: HashMap<String, String>,
    /// A dotenv file (Spin reads `.env` in the working directory).
    pub dotenv: Option<PathBuf>,
    pub expose_redis_round_trips: bool,
}

/// A component compiled and pre-instantiated, with its manifest settings.
pub struct ComponentRuntime {
    pub(crate) id: String,
    pre: ProxyPre<RequestState>,
    pub(crate) variables: BTreeMap<String, Template>,
    allowed_hosts: Vec<Template>,
    pub(crate) environment: Vec<(String, String)>,
}

impl std::fmt::Debug for ComponentRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentRuntime")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ComponentRuntime {
    /// Resolves the templated `allowed_outbound_hosts` for one instance. A value that no
    /// longer parses denies everything and is logged (start-up checked the defaults).
    pub(crate) fn resolve_allowed_hosts(&self, app: &App) -> AllowedHosts {
        let resolved: anyhow::Result<Vec<String>> = self
            .allowed_hosts
            .iter()
            .map(|t| t.resolve(&app.resolver))
            .collect();
        match resolved.and_then(|entries| AllowedHosts::parse(&entries)) {
            Ok(hosts) => hosts,
            Err(e) => {
                app.logs.host(&format!(
                    "component `{}`: `allowed_outbound_hosts` is malformed, denying all: {e:#}",
                    self.id
                ));
                AllowedHosts::default()
            }
        }
    }
}

/// A loaded application.
#[derive(Debug)]
pub struct App {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) resolver: Resolver,
    pub(crate) logs: Logs,
    router: Router,
    components: HashMap<String, Arc<ComponentRuntime>>,
    statics: HashMap<String, StaticResponse>,
    expose_redis_round_trips: bool,
    /// The address the listener got; self-requests are sent there.
    listen: OnceLock<SocketAddr>,
}

/// One engine per process: compiled code and the pooling allocator are shared.
fn engine() -> anyhow::Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(512)
        .total_core_instances(1024)
        .total_memories(512)
        .total_tables(1024);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to create the wasmtime engine")?;
    Ok(ENGINE.get_or_init(|| engine))
}

/// Compiles a component once per process and file version (tests start many hosts).
fn compile(engine: &Engine, path: &PathBuf) -> anyhow::Result<Component> {
    type Key = (PathBuf, SystemTime, u64);
    static CACHE: OnceLock<Mutex<HashMap<Key, Component>>> = OnceLock::new();
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "failed to read component source from disk at path {:?}",
            path.display().to_string()
        )
    })?;
    let key = (path.clone(), meta.modified()?, meta.len());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(component) = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return Ok(component.clone());
    }
    let component = Component::from_file(engine, path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("failed to compile component {}", path.display()))?;
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, component.clone());
    Ok(component)
}

impl App {
    /// Loads the manifest, resolves variables, compiles and pre-instantiates every
    /// component that a trigger uses.
    ///
    /// # Errors
    /// Anything Spin refuses at start-up, with Spin's message where it has one.
    pub fn load(options: &LoadOptions, logs: Logs) -> anyhow::Result<Self> {
        let manifest = Manifest::load(&options.manifest)?;
        let resolver = Resolver::new(
            manifest.variables.clone(),
            options.variables.clone(),
            options.env.clone(),
            options.dotenv.as_deref(),
        )?;
        for name in options.variables.keys() {
            if !resolver.is_declared(name) {
                bail!("variable {name:?} given on the command line is not declared in [variables]");
            }
        }

        let engine = engine()?;
        let mut linker: Linker<RequestState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        bindings::Host_::add_to_linker::<_, HasSelf<RequestState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking fermyon:spin")?;

        let used: Vec<&str> = manifest
            .http_triggers
            .iter()
            .filter_map(|t| match &t.target {
                TriggerTarget::Component(id) => Some(id.as_str()),
                TriggerTarget::Static(_) => None,
            })
            .collect();
        let mut components = HashMap::new();
        for (id, decl) in &manifest.components {
            if !used.contains(&id.as_str()) {
                continue;
            }
            let runtime = (|| -> anyhow::Result<ComponentRuntime> {
                if !decl.files.is_empty() {
                    bail!("`files` are not supported by this host");
                }
                let variables = component_templates(&decl.variables, &resolver)?;
                let allowed_hosts = decl
                    .allowed_outbound_hosts
                    .iter()
                    .map(|entry| {
                        let template = Template::parse(entry)?;
                        check_references(&template, &resolver)?;
                        if resolver.all_defaulted(&template) {
                            let value = template.resolve(&resolver)?;
                            AllowedHosts::parse(&[value.as_str()])
                                .context("`allowed_outbound_hosts` is malformed")?;
                        }
                        Ok(template)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let path = manifest.component_path(id, decl)?;
                let component = compile(engine, &path)?;
                let pre = linker
                    .instantiate_pre(&component)
                    .map_err(anyhow::Error::from)
                    .context("the component needs an import this host does not provide")?;
                let pre = ProxyPre::new(pre).map_err(anyhow::Error::from).context(
                    "the component must export exactly one `wasi:http/incoming-handler@0.2.*`",
                )?;
                Ok(ComponentRuntime {
                    id: id.clone(),
                    pre,
                    variables,
                    allowed_hosts,
                    environment: decl
                        .environment
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                })
            })()
            .with_context(|| format!("Failed to load component `{id}`"))?;
            components.insert(id.clone(), Arc::new(runtime));
        }

        let mut statics = HashMap::new();
        let mut routes = Vec::new();
        for trigger in &manifest.http_triggers {
            let target = match &trigger.target {
                TriggerTarget::Component(id) => Target::Component(id.clone()),
                TriggerTarget::Static(response) => {
                    statics.insert(trigger.id.clone(), response.clone());
                    Target::Static(trigger.id.clone())
                }
            };
            if let Some(route) = trigger.route.as_deref() {
                routes.push((route, target));
            }
        }
        let (router, duplicates) = Router::build(routes)?;
        if !duplicates.is_empty() {
            logs.host("The following component routes are duplicates and will never be used:");
            for d in duplicates {
                logs.host(&format!(
                    "  {}: {} (duplicate of {})",
                    d.replaced, d.route, d.effective
                ));
            }
        }

        Ok(Self {
            name: manifest.application.name.clone(),
            version: manifest.application.version.clone().unwrap_or_default(),
            resolver,
            logs,
            router,
            components,
            statics,
            expose_redis_round_trips: options.expose_redis_round_trips,
            listen: OnceLock::new(),
        })
    }

    pub(crate) fn set_listen_addr(&self, addr: SocketAddr) {
        let _ = self.listen.set(addr);
    }

    /// Routes in precedence order with their target, for the start-up listing.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.router
            .listing()
            .into_iter()
            .map(|(route, target)| match target {
                Target::Component(id) | Target::Static(id) => (route, id),
            })
            .collect()
    }

    /// Serves one request from a client. `Err` closes the connection without a
    /// response, as Spin does for requests it cannot attribute to a host.
    pub async fn handle<B>(
        self: &Arc<Self>,
        req: Request<B>,
        client: SocketAddr,
    ) -> anyhow::Result<Response<WasiBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let host = match req.headers().get(http::header::HOST) {
            Some(value) => Some(value.to_str().context("non-UTF-8 Host header")?.to_string()),
            None => req.uri().authority().map(|a| a.to_string()),
        };
        let Some(host) = host else {
            bail!("request has neither a Host header nor an absolute URI");
        };
        if host.ends_with(".spin.internal") {
            bail!("Host {host} is reserved for service chaining");
        }
        if req.headers().values().any(|v| v.to_str().is_err()) {
            return Ok(empty(StatusCode::INTERNAL_SERVER_ERROR));
        }
        let path = req.uri().path().to_string();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| path.clone());

        if let Some(reserved) = path.strip_prefix("/.well-known/spin/") {
            return Ok(match reserved {
                "health" => text(StatusCode::OK, "OK"),
                "info" => text(
                    StatusCode::OK,
                    &serde_json::json!({ "name": self.name, "version": self.version }).to_string(),
                ),
                _ => empty(StatusCode::NOT_FOUND),
            });
        }

        let Some(found) = self.router.route(&path) else {
            return Ok(empty(StatusCode::NOT_FOUND));
        };
        match &found.target {
            Target::Static(trigger) => Ok(self.static_response(trigger)),
            Target::Component(id) => {
                let Some(component) = self.components.get(id) else {
                    bail!("route {} names unloaded component {id}", found.raw_route);
                };
                let spin = SpinHeaders::routed(&found, Some(&host), &path_and_query, client);
                Ok(self.invoke(component.clone(), req, &spin).await)
            }
        }
    }

    fn static_response(&self, trigger: &str) -> Response<WasiBody> {
        let Some(config) = self.statics.get(trigger) else {
            return empty(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let status = StatusCode::from_u16(config.status_code.unwrap_or(200))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Response::new(full(config.body.clone().unwrap_or_default()));
        *response.status_mut() = status;
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }

    /// Runs `component` in a fresh instance for one request. Never fails: a trap or a
    /// missing response is logged and becomes Spin's empty 500.
    async fn invoke<B>(
        self: &Arc<Self>,
        component: Arc<ComponentRuntime>,
        req: Request<B>,
        spin: &SpinHeaders,
    ) -> Response<WasiBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let id = component.id.clone();
        match self.try_invoke(component, req, spin).await {
            Ok(response) => response,
            Err(e) => {
                self.logs.host(&format!(
                    "Error processing request for `{id}`: guest invocation failed: {e:?}"
                ));
                empty(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    async fn try_invoke<B>(
        self: &Arc<Self>,
        component: Arc<ComponentRuntime>,
        req: Request<B>,
        spin: &SpinHeaders,
    ) -> anyhow::Result<Response<WasiBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (mut parts, body) = req.into_parts();
        // Spin appends its values: a client's own `spin-*` header stays first.
        for (name, value) in spin.pairs() {
            parts.headers.append(
                HeaderName::from_bytes(name.as_bytes()).context("spin header name")?,
                HeaderValue::from_str(&value).context("spin header value")?,
            );
        }
        let round_trips = Arc::new(AtomicU64::new(0));
        let state = RequestState::new(self.clone(), component.clone(), round_trips.clone());
        let mut store = Store::new(component.pre.engine(), state);
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, Request::from_parts(parts, body))?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam = store.data_mut().http().new_response_outparam(sender)?;
        let pre = component.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, outparam)
                .await
        });

        match receiver.await {
            Ok(Ok(mut response)) => {
                // The guest may go on streaming; report a later failure, as Spin does.
                let logs = self.logs.clone();
                let id = component.id.clone();
                tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => logs.host(&format!(
                            "Component error after response started (`{id}`): {e:?}"
                        )),
                        Err(e) => logs.host(&format!("`{id}` task failed: {e}")),
                    }
                });
                if self.expose_redis_round_trips {
                    response.headers_mut().insert(
                        ROUND_TRIPS_HEADER,
                        HeaderValue::from(round_trips.load(Ordering::Relaxed)),
                    );
                }
                let logs = self.logs.clone();
                Ok(response.map(|body| end_cleanly_on_error(body, logs)))
            }
            Ok(Err(code)) => {
                self.logs.host(&format!(
                    "`{}` set an error response: {code:?}",
                    component.id
                ));
                Ok(empty(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Err(_) => {
                match task.await {
                    Ok(Ok(())) => self.logs.host(&format!(
                        "`{}`: guest failed to produce a response prior to returning",
                        component.id
                    )),
                    Ok(Err(e)) => self.logs.host(&format!(
                        "Error processing request for `{}`: guest invocation failed: {e:?}",
                        component.id
                    )),
                    Err(e) => self
                        .logs
                        .host(&format!("`{}` task failed: {e}", component.id)),
                }
                Ok(empty(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }

    /// Sends a guest's outgoing HTTP request under Spin's rules.
    pub(crate) async fn send_outbound(
        self: &Arc<Self>,
        caller: &str,
        allowed: &AllowedHosts,
        request: Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
    ) -> wasmtime_wasi_http::Result<(
        Response<WasiBody>,
        Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    )> {
        use wasmtime_wasi_http::Error;
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().or_else(|| default_port(&scheme));
        let path_and_query = uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());

        if let Some(target) = host.strip_suffix(".spin.internal") {
            if !allowed.allows_chaining(target, port.unwrap_or(80)) {
                self.logs.denied(caller, &format!("{scheme}://{host}"));
                return Err(Error::HttpRequestDenied);
            }
            let Some(component) = self.components.get(target) else {
                self.logs.host(&format!(
                    "`{caller}`: unknown routing destination '{target}'"
                ));
                return Err(Error::InternalError(Some(format!(
                    "unknown routing destination '{target}'"
                ))));
            };
            let (mut parts, body) = request.into_parts();
            parts.headers.remove(http::header::HOST);
            let spin = SpinHeaders::chained(uri.path(), &path_and_query);
            parts.uri = http::Uri::builder()
                .scheme("http")
                .authority(format!("{target}.spin.internal"))
                .path_and_query(path_and_query.as_str())
                .build()
                .map_err(|e| Error::InternalError(Some(e.to_string())))?;
            let response = self
                .invoke(component.clone(), Request::from_parts(parts, body), &spin)
                .await;
            return Ok((response, Box::new(async { Ok(()) })));
        }

        let mut request = request;
        request.headers_mut().remove(http::header::HOST);
        if host.is_empty() || host == "self.alt" {
            if !allowed.allows_self(&scheme) {
                self.logs.denied(caller, &format!("{scheme}://self"));
                return Err(Error::HttpRequestDenied);
            }
            let Some(listen) = self.listen.get() else {
                return Err(Error::InternalError(Some("no listen address".into())));
            };
            *request.uri_mut() = http::Uri::builder()
                .scheme("http")
                .authority(listen.to_string())
                .path_and_query(path_and_query.as_str())
                .build()
                .map_err(|e| Error::InternalError(Some(e.to_string())))?;
        } else {
            let Some(port) = port else {
                return Err(Error::HttpRequestUriInvalid);
            };
            if !allowed.allows(&scheme, &host, port) {
                // host:port only: an authority may carry credentials.
                self.logs
                    .denied(caller, &format!("{scheme}://{host}:{port}"));
                return Err(Error::HttpRequestDenied);
            }
        }
        // wasmtime-wasi-http's client adds no `Host`; Spin's (hyper-util's pooled client)
        // adds the target's host, with the port unless it is the scheme's default.
        if let Some(value) = host_header(request.uri()) {
            request.headers_mut().insert(http::header::HOST, value);
        }
        let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
        Ok((
            response.map(BodyExt::boxed_unsync),
            Box::new(io) as Box<dyn Future<Output = _> + Send>,
        ))
    }
}

/// The `Host` header hyper-util's client derives from a URI: `host`, or `host:port` when
/// the port is not the scheme's default.
fn host_header(uri: &http::Uri) -> Option<http::HeaderValue> {
    let host = uri.host()?;
    let value = match (uri.port_u16(), uri.scheme_str()) {
        (Some(80), Some("http")) | (Some(443), Some("https")) | (None, _) => host.to_string(),
        (Some(port), _) => format!("{host}:{port}"),
    };
    http::HeaderValue::from_str(&value).ok()
}

fn full(body: impl Into<Bytes>) -> WasiBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Spin's own error responses: a status and no body (`content-length: 0`).
pub(crate) fn empty(status: StatusCode) -> Response<WasiBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn text(status: StatusCode, body: &str) -> Response<WasiBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response
}

/// A guest that fails mid-body: Spin ends the body cleanly instead of resetting.
fn end_cleanly_on_error(body: WasiBody, logs: Logs) -> WasiBody {
    use http_body::Frame;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    struct EndOnError {
        inner: WasiBody,
        logs: Logs,
        done: bool,
    }
    impl http_body::Body for EndOnError {
        type Data = Bytes;
        type Error = wasmtime_wasi_http::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    self.logs.host(&format!("response body ended early: {e}"));
                    self.done = true;
                    Poll::Ready(None)
                }
                other => other,
            }
        }
        fn is_end_stream(&self) -> bool {
            self.done || self.inner.is_end_stream()
        }
        fn size_hint(&self) -> http_body::SizeHint {
            self.inner.size_hint()
        }
    }
    EndOnError {
        inner: body,
        logs,
        done: false,
    }
    .boxed_unsync()
}
