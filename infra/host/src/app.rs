//! A loaded application: compiled components, router, variables; and serving one request
//! in a fresh instance.
//!
//! The engine's instance pool and the incoming body's read timeout are Spin 4.0.2's, so a
//! slow client holds an instance here as long as under `spin up`, and as many at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::bindings;
use crate::http_client::HttpClient;
use crate::logs::Logs;
use crate::manifest::{ComponentDecl, Manifest, StaticResponse, TriggerTarget};
use crate::outbound::{Chain, Chained, Outbound};
use crate::routes::{Router, SpinHeaders, Target};
use crate::state::{ComponentConfig, RequestCounters, RequestState};
use crate::variables::{Resolver, Template, check_references, component_templates};

/// Response header carrying the Redis round trips the request made before its guest set
/// the response (what its latency paid; work after the response is not in it), when the
/// host was started with `expose_redis_round_trips` (never by default: Spin has no such
/// header).
pub const ROUND_TRIPS_HEADER: &str = "edge-auth-host-redis-round-trips";

/// Response header carrying how long instantiating the component took for this request,
/// in microseconds (sent with [`ROUND_TRIPS_HEADER`], for the benchmark).
pub const INSTANTIATE_HEADER: &str = "edge-auth-host-instantiate-us";

/// Response header carrying how many times the guest asked to grow its linear memory
/// before it set the response (sent with [`ROUND_TRIPS_HEADER`], for the benchmark and its
/// tests). Each growth costs the runtime an `mprotect` now and another when the memory's
/// pool slot is next used (Spin's pooling allocator does the same), so a route that fits
/// in its initial memory (`--initial-heap` in `.cargo/config.toml`) reports 0.
pub const MEMORY_GROWS_HEADER: &str = "edge-auth-host-memory-grows";

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
    /// See [`crate::HostOptions::redis_rest_origin`].
    pub redis_rest_origin: Option<String>,
    /// See [`crate::HostOptions::guest_clock_offset_ms`].
    pub guest_clock_offset_ms: i64,
}

/// `scheme://host:port` of `url` (the port made explicit), as outgoing requests are
/// compared with it.
fn origin(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).with_context(|| format!("redis_rest_origin {url:?}"))?;
    match (parsed.host_str(), parsed.port_or_known_default()) {
        (Some(host), Some(port)) => Ok(format!("{}://{host}:{port}", parsed.scheme())),
        _ => anyhow::bail!("redis_rest_origin {url:?}: no host or port"),
    }
}

/// A component compiled and pre-instantiated, with its manifest settings.
pub struct ComponentRuntime {
    config: Arc<ComponentConfig>,
    pre: ProxyPre<RequestState>,
}

impl std::fmt::Debug for ComponentRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentRuntime")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

/// A loaded application.
#[derive(Debug)]
pub struct App {
    pub(crate) name: String,
    pub(crate) version: String,
    resolver: Arc<Resolver>,
    pub(crate) logs: Logs,
    router: Router,
    components: HashMap<String, Arc<ComponentRuntime>>,
    statics: HashMap<String, StaticResponse>,
    expose_redis_round_trips: bool,
    redis_rest_origin: Option<Arc<str>>,
    /// Every instance's outgoing HTTP goes through this one client, so its connections are
    /// pooled across requests, as Spin's are.
    http_client: HttpClient,
    guest_clock_offset_ms: i64,
    /// The address the listener got; self-requests are sent there.
    listen: OnceLock<SocketAddr>,
    /// Set once shutdown begins: blocking Redis commands end at once (see
    /// [`crate::redis_host::SHUTTING_DOWN`]).
    draining: tokio::sync::watch::Sender<bool>,
}

/// Spin's `SPIN_MAX_INSTANCE_COUNT` default: at most this many instances are live at once,
/// so at most this many requests are being served (each in its own instance) at a time.
const MAX_INSTANCES: u32 = 1_000;

/// Spin 4.0.2's pooling allocator (`spin-core`'s `Config::default`, without its
/// `SPIN_WASMTIME_*` overrides): the same concurrency and the same per-component limits.
fn pooling_config() -> PoolingAllocationConfig {
    const MB: usize = 1 << 20;
    const GB: usize = 1 << 30;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        .total_memories(MAX_INSTANCES)
        .total_tables(2 * MAX_INSTANCES)
        .total_stacks(MAX_INSTANCES)
        .total_core_instances(4 * MAX_INSTANCES)
        .table_elements(100_000)
        .max_component_instance_size(10 * MB)
        .max_core_instance_size(10 * MB)
        .max_core_instances_per_component(200)
        .max_tables_per_component(64)
        .max_memories_per_component(32)
        .max_tables_per_module(2)
        .max_memories_per_module(2)
        .max_memory_size(4 * GB)
        .linear_memory_keep_resident(2 * MB)
        .table_keep_resident(MB / 2);
    pool
}

fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
    // For profiling (see README, "Profile it"): `perf` resolves compiled guest code through
    // /tmp/perf-<pid>.map. Off by default, as in Spin.
    if std::env::var_os("EDGE_AUTH_HOST_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// One engine per process: compiled code and the pooling allocator are shared.
fn engine() -> anyhow::Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let engine = Engine::new(&engine_config())
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
        // Spin's loader checks the allowed hosts of every component, with a trigger or
        // not, before it loads any component.
        let allowed_of = |decl: &ComponentDecl| -> anyhow::Result<Vec<Template>> {
            decl.allowed_outbound_hosts
                .iter()
                .map(|entry| {
                    let template = Template::parse(entry)?;
                    check_references(&template, &resolver)?;
                    // A value from a provider is checked per instance instead (a
                    // malformed one denies everything and is logged).
                    if let Some(value) = resolver.resolve_defaults(&template) {
                        AllowedHosts::parse(&[value.as_str()]).with_context(|| {
                            format!(
                                "`allowed_outbound_hosts`: the entry {entry:?} is malformed with the variables' default values"
                            )
                        })?;
                    }
                    Ok(template)
                })
                .collect()
        };
        for (id, decl) in &manifest.components {
            allowed_of(decl).with_context(|| format!("Failed to load component `{id}`"))?;
        }
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
                let allowed_hosts = allowed_of(decl)?;
                let path = manifest.component_path(id, decl)?;
                let component = compile(engine, &path)?;
                let pre = linker
                    .instantiate_pre(&component)
                    .map_err(anyhow::Error::from)
                    .context("the component needs an import this host does not provide")?;
                let pre = ProxyPre::new(pre).map_err(anyhow::Error::from).context(
                    "the component must export exactly one `wasi:http/incoming-handler@0.2.*`",
                )?;
                let config = ComponentConfig {
                    id: id.clone(),
                    variables,
                    allowed_hosts,
                    environment: decl
                        .environment
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                };
                Ok(ComponentRuntime {
                    config: Arc::new(config),
                    pre,
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

        let http_client = HttpClient::new(logs.clone()).context("the outgoing HTTP client")?;
        Ok(Self {
            name: manifest.application.name.clone(),
            version: manifest.application.version.clone().unwrap_or_default(),
            resolver: Arc::new(resolver),
            logs,
            router,
            components,
            statics,
            expose_redis_round_trips: options.expose_redis_round_trips,
            redis_rest_origin: match options.redis_rest_origin.as_deref() {
                Some(url) => Some(Arc::from(origin(url)?)),
                None => None,
            },
            http_client,
            guest_clock_offset_ms: options.guest_clock_offset_ms,
            listen: OnceLock::new(),
            draining: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Begins shutdown: every blocking Redis command in flight or to come answers
    /// [`crate::redis_host::SHUTTING_DOWN`], so long-lived streams end with their
    /// terminal event instead of being cut when the host stops.
    pub(crate) fn begin_draining(&self) {
        self.draining.send_replace(true);
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
        // Spin 4.0.2 parses requests with httparse 1.9.5, which refuses a request target
        // holding any byte above 0x7F (raw UTF-8 included) with a bare 400 before routing;
        // our httparse lets such bytes through, so the host refuses them itself.
        if let Some(target) = req.uri().path_and_query()
            && !target.as_str().is_ascii()
        {
            let mut refused = empty(StatusCode::BAD_REQUEST);
            refused.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return Ok(refused);
        }
        // As Spin does first: a `Host` naming a service-chaining target (any port) is
        // dropped, so only the router's own requests can look chained.
        let mut req = req;
        if req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(is_service_chaining_host)
        {
            req.headers_mut().remove(http::header::HOST);
        }
        let path = req.uri().path().to_string();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| path.clone());

        // Spin answers these before it looks at the request's authority or headers: a
        // load balancer's HTTP/1.0 probe without `Host` gets its `OK`.
        if let Some(reserved) = path.strip_prefix("/.well-known/spin/") {
            return Ok(match reserved {
                "health" => text(StatusCode::OK, "OK"),
                "info" => self.app_info(),
                _ => empty(StatusCode::NOT_FOUND),
            });
        }

        let Some(found) = self.router.route(&path) else {
            return Ok(empty(StatusCode::NOT_FOUND));
        };
        // A routed request needs one unambiguous authority (Spin's `set_req_uri`); an
        // error here closes the connection, as Spin's does.
        authority(&req)?;
        // `spin-full-url` names the `Host` header's authority, or `localhost` without one
        // (even when the request target is absolute), as Spin writes it.
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        match &found.target {
            Target::Static(trigger) => Ok(self.static_response(trigger)),
            Target::Component(id) => {
                // A static response never reads the headers.
                if !headers_are_text(req.headers()) {
                    return Ok(empty(StatusCode::INTERNAL_SERVER_ERROR));
                }
                let Some(component) = self.components.get(id) else {
                    bail!("route {} names unloaded component {id}", found.raw_route);
                };
                let spin = SpinHeaders::routed(&found, host.as_deref(), &path_and_query, client);
                Ok(self.invoke(component.clone(), req, &spin).await)
            }
        }
    }

    /// `/.well-known/spin/info` as Spin writes it: pretty JSON, `version` only when the
    /// manifest has one.
    fn app_info(&self) -> Response<WasiBody> {
        let mut info = serde_json::json!({ "name": self.name });
        if !self.version.is_empty() {
            info["version"] = serde_json::json!(self.version);
        }
        let body = serde_json::to_string_pretty(&info).unwrap_or_default();
        let mut response = text(StatusCode::OK, &body);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
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
        let id = component.config.id.clone();
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
        let body = BetweenBytesTimeout::new(
            body.map_err(Into::<wasmtime_wasi_http::Error>::into)
                .boxed_unsync(),
        );
        // Spin appends its values: a client's own `spin-*` header stays first.
        for (name, value) in spin.pairs() {
            parts.headers.append(
                HeaderName::from_bytes(name.as_bytes()).context("spin header name")?,
                HeaderValue::from_str(&value).context("spin header value")?,
            );
        }
        let counters = RequestCounters::default();
        let outbound = Outbound::new(
            self.clone(),
            self.listen.get().copied(),
            self.logs.clone(),
            self.redis_rest_origin.clone(),
            self.http_client.clone(),
        );
        let state = RequestState::new(
            component.config.clone(),
            self.resolver.clone(),
            self.logs.clone(),
            outbound,
            &counters,
            self.guest_clock_offset_ms,
            self.draining.subscribe(),
        );
        let mut store = Store::new(component.pre.engine(), state);
        store.limiter(|state| state);
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, Request::from_parts(parts, body))?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let outparam = store.data_mut().http().new_response_outparam(sender)?;
        store.data_mut().response_outparam = Some(outparam.rep());
        let pre = component.pre.clone();
        let instantiate_us = Arc::new(AtomicU64::new(0));
        let timed = instantiate_us.clone();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let proxy = pre.instantiate_async(&mut store).await?;
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            timed.store(took, Ordering::Relaxed);
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, outparam)
                .await
        });

        match receiver.await {
            Ok(Ok(mut response)) => {
                // The guest may go on streaming; report a later failure, as Spin does.
                let logs = self.logs.clone();
                let id = component.config.id.clone();
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
                        HeaderValue::from(counters.redis_round_trips.load(Ordering::Relaxed)),
                    );
                    response.headers_mut().insert(
                        INSTANTIATE_HEADER,
                        HeaderValue::from(instantiate_us.load(Ordering::Relaxed)),
                    );
                    response.headers_mut().insert(
                        MEMORY_GROWS_HEADER,
                        HeaderValue::from(counters.memory_grows.load(Ordering::Relaxed)),
                    );
                }
                let logs = self.logs.clone();
                Ok(response.map(|body| log_body_errors(body, logs)))
            }
            Ok(Err(code)) => {
                self.logs.host(&format!(
                    "`{}` set an error response: {code:?}",
                    component.config.id
                ));
                Ok(empty(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Err(_) => {
                match task.await {
                    Ok(Ok(())) => self.logs.host(&format!(
                        "`{}`: guest failed to produce a response prior to returning",
                        component.config.id
                    )),
                    Ok(Err(e)) => self.logs.host(&format!(
                        "Error processing request for `{}`: guest invocation failed: {e:?}",
                        component.config.id
                    )),
                    Err(e) => self
                        .logs
                        .host(&format!("`{}` task failed: {e}", component.config.id)),
                }
                Ok(empty(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }
}

impl Chain for App {
    fn has_component(&self, id: &str) -> bool {
        self.components.contains_key(id)
    }

    fn serve_chained(
        self: Arc<Self>,
        id: String,
        request: Request<WasiBody>,
        spin: SpinHeaders,
    ) -> Chained {
        Box::pin(async move {
            match self.components.get(&id) {
                // A chained request's headers are handed over as a routed one's are
                // (Spin's `prepare_request_headers` for both).
                Some(_) if !headers_are_text(request.headers()) => {
                    empty(StatusCode::INTERNAL_SERVER_ERROR)
                }
                Some(component) => self.invoke(component.clone(), request, &spin).await,
                None => empty(StatusCode::INTERNAL_SERVER_ERROR),
            }
        })
    }
}

/// Whether every header value is UTF-8: Spin hands a component its headers as text, and a
/// value that is not fails the request before the component runs.
fn headers_are_text(headers: &http::HeaderMap) -> bool {
    headers
        .values()
        .all(|v| std::str::from_utf8(v.as_bytes()).is_ok())
}

fn full(body: impl Into<Bytes>) -> WasiBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Checks that a routed request names one authority, as Spin's `set_req_uri` does: the
/// `Host` header (UTF-8, a valid authority) or the request target's, and both must agree.
///
/// # Errors
/// Neither is present, the header is not a valid authority, or the two differ.
fn authority<B>(req: &Request<B>) -> anyhow::Result<()> {
    let header = req
        .headers()
        .get(http::header::HOST)
        .map(|h| -> anyhow::Result<http::uri::Authority> {
            h.to_str()
                .context("'Host' header is not valid UTF-8")?
                .parse()
                .context("'Host' header contains an invalid authority")
        })
        .transpose()?;
    match (header, req.uri().authority()) {
        (None, None) => bail!("no 'Host' header present in request"),
        (Some(a), Some(b)) if a != *b => {
            bail!("authority in 'Host' header does not match authority in URI")
        }
        _ => Ok(()),
    }
}

/// Whether `host` (`[host][:port]`) names a service-chaining target: one label before
/// `.spin.internal`, as Spin parses it.
fn is_service_chaining_host(host: &str) -> bool {
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host.split_once('.')
        .is_some_and(|(_, rest)| rest == "spin.internal")
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

/// A response body as Spin hands it to hyper: a guest that traps mid-body ends it cleanly
/// (the store goes, and with it the body's finish sender), while one that drops its body
/// unfinished, or finishes it short of its `content-length`, fails it, and hyper cuts the
/// connection. The failure is logged here too.
fn log_body_errors(body: WasiBody, logs: Logs) -> WasiBody {
    body.map_err(move |e| {
        logs.host(&format!("response body failed: {e}"));
        e
    })
    .boxed_unsync()
}

/// How long a guest's read of an incoming request body waits for the next frame before
/// failing with `connection-read-timeout`. Spin 4.0.2 gets this from wasmtime-wasi-http
/// 44's `new_incoming_request`, which hard-codes it; the wasmtime-wasi-http here has none,
/// so without it a client that stops sending would hold an instance for ever.
const INCOMING_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(600);

/// An incoming request body under [`INCOMING_BETWEEN_BYTES_TIMEOUT`], as
/// wasmtime-wasi-http 44's `BodyWithTimeout`: the clock starts when a frame is first asked
/// for and restarts after each frame; once it runs out, every read fails.
struct BetweenBytesTimeout {
    inner: WasiBody,
    /// Created on the first read (inside the runtime).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Whether the next read starts a new wait.
    rearm: bool,
}

impl BetweenBytesTimeout {
    fn new(inner: WasiBody) -> Self {
        Self {
            inner,
            timer: None,
            rearm: true,
        }
    }
}

impl http_body::Body for BetweenBytesTimeout {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let me = self.get_mut();
        if me.rearm {
            let deadline = tokio::time::Instant::now() + INCOMING_BETWEEN_BYTES_TIMEOUT;
            match &mut me.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => me.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            me.rearm = false;
        }
        if let Some(timer) = &mut me.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return std::task::Poll::Ready(Some(Err(
                wasmtime_wasi_http::Error::ConnectionReadTimeout,
            )));
        }
        let result = std::pin::Pin::new(&mut me.inner).poll_frame(cx);
        me.rearm = result.is_ready();
        result
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_header_values_that_are_utf8_reach_a_component_routed_or_chained() {
        // Host review (stop 43): a chained request skipped the check a routed one had.
        let mut headers = http::HeaderMap::new();
        let name = http::HeaderValue::from_bytes("José".as_bytes()).expect("a header value");
        headers.insert("x-name", name);
        assert!(super::headers_are_text(&headers));
        headers.insert(
            "x-raw",
            http::HeaderValue::from_bytes(b"\xff\xfe").expect("a header value"),
        );
        assert!(!super::headers_are_text(&headers));
    }

    #[test]
    fn the_rest_origin_is_compared_with_an_explicit_port() {
        assert_eq!(
            super::origin("https://db.upstash.io").expect("a URL"),
            "https://db.upstash.io:443"
        );
        assert_eq!(
            super::origin("http://127.0.0.1:8080/").expect("a URL"),
            "http://127.0.0.1:8080"
        );
        assert!(super::origin("db.upstash.io").is_err());
    }

    use super::*;

    /// A guest with one linear memory, as every real one has.
    const GUEST: &str = "(component (core module $m (memory 1)) (core instance (instantiate $m)))";

    fn instantiate(engine: &Engine, wat: &str, live: usize) -> Vec<wasmtime::Result<Store<()>>> {
        let component = Component::new(engine, wat).expect("component compiles");
        let pre = Linker::<()>::new(engine)
            .instantiate_pre(&component)
            .expect("no imports to satisfy");
        (0..live)
            .map(|_| {
                let mut store = Store::new(engine, ());
                pre.instantiate(&mut store).map(|_| store)
            })
            .collect()
    }

    #[test]
    fn the_pool_holds_spins_1000_live_instances_and_no_more() {
        let engine = Engine::new(&engine_config()).expect("engine");
        let mut results = instantiate(&engine, GUEST, 1_001);
        let refused = results.pop().expect("1001 results");
        for (i, result) in results.iter().enumerate() {
            if let Err(e) = result {
                panic!("instance {} refused: {e:?}", i + 1);
            }
        }
        assert!(refused.is_err(), "instance 1001 must be refused");
    }

    #[test]
    fn the_pool_takes_components_within_spins_per_module_limits() {
        // Two memories and two 100,000-element tables in one module: beyond wasmtime's
        // defaults (one memory, one table of 20,000), within Spin's.
        let engine = Engine::new(&engine_config()).expect("engine");
        let wat = "(component
            (core module $m
                (memory 1) (memory 1)
                (table 100000 funcref) (table 100000 funcref))
            (core instance (instantiate $m)))";
        let mut results = instantiate(&engine, wat, 1);
        let result = results.pop().expect("one result");
        assert!(result.is_ok(), "{:?}", result.err());
    }

    /// A client's request body: what is sent on the channel; stalled while the sender lives.
    fn client_body() -> (tokio::sync::mpsc::Sender<Bytes>, WasiBody) {
        struct Channel(tokio::sync::mpsc::Receiver<Bytes>);
        impl http_body::Body for Channel {
            type Data = Bytes;
            type Error = wasmtime_wasi_http::Error;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                self.0
                    .poll_recv(cx)
                    .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        (tx, Channel(rx).boxed_unsync())
    }

    fn is_read_timeout(
        frame: Option<Result<http_body::Frame<Bytes>, wasmtime_wasi_http::Error>>,
    ) -> bool {
        matches!(
            frame,
            Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout))
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_request_body_fails_after_600_s() {
        let (_client, body) = client_body();
        let mut body = BetweenBytesTimeout::new(body);
        let start = tokio::time::Instant::now();
        assert!(is_read_timeout(body.frame().await));
        assert_eq!(start.elapsed(), Duration::from_secs(600));
        assert!(is_read_timeout(body.frame().await), "the failure is final");
    }

    #[tokio::test(start_paused = true)]
    async fn each_frame_restarts_the_600_s_wait() {
        let (client, body) = client_body();
        let mut body = BetweenBytesTimeout::new(body);
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            for chunk in ["a", "b"] {
                tokio::time::sleep(Duration::from_secs(599)).await;
                client.send(Bytes::from(chunk)).await.expect("body is read");
            }
            std::future::pending::<()>().await;
        });
        for (chunk, at) in [("a", 599), ("b", 1198)] {
            let frame = body.frame().await.expect("a frame").expect("not an error");
            assert_eq!(frame.into_data().ok(), Some(Bytes::from(chunk)));
            assert_eq!(start.elapsed(), Duration::from_secs(at));
        }
        assert!(is_read_timeout(body.frame().await));
        assert_eq!(start.elapsed(), Duration::from_secs(1198 + 600));
    }
}
