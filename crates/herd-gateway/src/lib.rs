//! The gateway: herd's reverse proxy in front of local instances and remote upstreams.
//!
//! ```text
//! client ─► listener (HTTP/1.1, h2c) ─► route table ─► pool (balancer) ─► endpoint
//!                                           │                 ▲
//!                                           │    herd service: ready instances (watch)
//!                                           │    upstream: static addresses
//! ```
//!
//! [`bind`] binds every listener before anything starts, so a taken port fails start-up with
//! the config line; [`Gateway::start`] serves them. Pools get their addresses from a watch
//! channel: for a herd service it is the supervisor's list of ready endpoints, so instances
//! enter rotation when ready and leave it before they are stopped. Routes and pools form one
//! generation behind an `ArcSwap`; [`Gateway::reload`] builds the next and swaps it in without
//! touching connections. Shutdown stops accepting and lets open connections finish.
//!
//! The same request path serves the `listen` address of every service that is not a
//! passthrough one (`front.rs`): one catch-all route to the service's ready instances.
//!
//! Before a request is routed, heads HTTP says a server must refuse are answered here (no or
//! two `Host`, `CONNECT`, transfer codings herd does not implement; `herd_upstream::inbound`),
//! and connections that have not sent their first request are bounded in time and number
//! (`pending.rs`).

#![forbid(unsafe_code)]

mod access;
mod answer;
mod dns;
mod front;
mod health;
mod pending;
mod proxy;
mod route;
mod trace;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use herd_config::{Config, ConfigError, KeyPath, Limits, ListenerSpec, Target};
use herd_upstream::{Places, Pool, ServiceSource};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use front::{Front, RESPONSE_DEADLINE};
pub use route::RouteTable;
pub use trace::TraceContext;

/// How long shutdown waits for open connections to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// A bound listener.
pub struct Bound {
    spec: ListenerSpec,
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Bound {
    /// The name and the bound address.
    pub fn address(&self) -> (String, SocketAddr) {
        let addr = self.listener.local_addr().unwrap_or(self.spec.listen);
        (self.spec.name.clone(), addr)
    }
}

/// Binds every `[[gateway.listener]]`; errors name the file, line and key.
pub fn bind(config: &Config) -> Result<Vec<Bound>, Vec<ConfigError>> {
    let mut bound = Vec::new();
    let mut errors = Vec::new();
    for spec in &config.gateway.listeners {
        let at = KeyPath::default()
            .key("gateway")
            .key("listener")
            .index(spec.index);
        let tls = match spec
            .tls
            .as_ref()
            .map(herd_upstream::tls::server_config)
            .transpose()
        {
            Ok(t) => t,
            Err(message) => {
                errors.push(config.source.error(&at.key("tls"), message));
                continue;
            }
        };
        let result = std::net::TcpListener::bind(spec.listen).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        });
        match result {
            Ok(listener) => bound.push(Bound {
                spec: spec.clone(),
                listener,
                tls,
            }),
            Err(e) => errors.push(config.source.error(
                &at.key("listen"),
                format!("cannot bind {}: {e}", spec.listen),
            )),
        }
    }
    if errors.is_empty() {
        Ok(bound)
    } else {
        Err(errors)
    }
}

/// What one generation of routes owns besides its proxy; replaced whole by a reload.
struct Generation {
    /// Ends this generation's health checks.
    checks: CancellationToken,
    /// Keeps static upstreams' address lists alive.
    _static: Vec<watch::Sender<Arc<Vec<SocketAddr>>>>,
}

/// A running gateway.
pub struct Gateway {
    stop: CancellationToken,
    tasks: TaskTracker,
    current: Arc<ArcSwap<proxy::Proxy>>,
    generation: Mutex<Generation>,
    listeners: Vec<ListenerSpec>,
    limits: Limits,
    service: ServiceSource,
}

/// Builds the proxy (routes and pools) for `config`, starting health checks on `tasks` that
/// end with `checks`.
fn build(
    config: &Config,
    service: &ServiceSource,
    tasks: &TaskTracker,
    checks: &CancellationToken,
) -> std::io::Result<(proxy::Proxy, Generation)> {
    let mut pools = HashMap::new();
    let mut statics = Vec::new();
    for route in &config.gateway.routes {
        if pools.contains_key(&route.target) {
            continue;
        }
        let pool = match &route.target {
            Target::Service(name) => {
                let (addrs, balance, breaker) = service(name).ok_or_else(|| {
                    std::io::Error::other(format!("service {name:?} is not running"))
                })?;
                Pool::new(
                    format!("service {name}"),
                    addrs,
                    balance,
                    breaker,
                    Places::default(),
                )
            }
            Target::Upstream(name) => {
                let u = config
                    .gateway
                    .upstreams
                    .iter()
                    .find(|u| &u.name == name)
                    .ok_or_else(|| std::io::Error::other(format!("no upstream {name:?}")))?;
                // Addresses flow: fixed and DNS-resolved ones (`discovered`), then, with
                // health checks, only the healthy ones (`rx`).
                let (found_tx, discovered) = watch::channel(Arc::new(u.endpoints.clone()));
                if u.names.is_empty() {
                    statics.push(found_tx);
                } else {
                    tasks.spawn(dns::run(
                        name.clone(),
                        u.endpoints.clone(),
                        u.names.clone(),
                        u.dns_refresh,
                        found_tx,
                        checks.clone(),
                    ));
                }
                let rx = match &u.health {
                    Some(h) => {
                        let (tx, rx) = watch::channel(discovered.borrow().clone());
                        tasks.spawn(health::run(
                            name.clone(),
                            h.clone(),
                            discovered,
                            tx,
                            checks.clone(),
                        ));
                        rx
                    }
                    None => discovered,
                };
                let levels = u.priorities.iter().max().map_or(1, |m| m + 1);
                let mut configured = vec![0; levels];
                u.priorities.iter().for_each(|&l| configured[l] += 1);
                configured[0] += u.names.len();
                let places = Places {
                    level: u
                        .endpoints
                        .iter()
                        .copied()
                        .zip(u.priorities.iter().copied())
                        .collect(),
                    configured,
                    overprovisioning: config.gateway.regions.overprovisioning,
                };
                Pool::new(
                    format!("upstream {name}"),
                    rx,
                    u.balance,
                    Some(u.breaker.clone()),
                    places,
                )
                .with_concurrency_limit(u.max_concurrency)
                .with_outlier(u.outlier)
            }
        };
        pools.insert(route.target.clone(), Arc::new(pool));
    }
    let proxy = proxy::Proxy::new(
        RouteTable::new(&config.gateway.routes),
        pools,
        config.gateway.limits.max_body_bytes,
    );
    Ok((
        proxy,
        Generation {
            checks: checks.clone(),
            _static: statics,
        },
    ))
}

impl Gateway {
    /// Serves `listeners` with the routes of `config`, and each of `fronts` with its service;
    /// `service` describes herd services.
    pub fn start(
        config: &Config,
        listeners: Vec<Bound>,
        fronts: Vec<Front>,
        service: ServiceSource,
    ) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (proxy, generation) = build(config, &service, &tasks, &stop.child_token())?;
        let current = Arc::new(ArcSwap::from_pointee(proxy));
        let limits = config.gateway.limits;
        let pending = Arc::new(pending::Pending::new(
            limits.max_pending_connections,
            limits.header_read_timeout,
        ));
        for f in fronts {
            front::start(f, &service, limits, &stop, &tasks)?;
        }
        for b in listeners {
            let (name, addr) = b.address();
            tracing::info!("gateway listener {name} on {addr}");
            let listener = TcpListener::from_std(b.listener)?;
            let socket = Socket {
                listener,
                name: name.into(),
                tls: b.tls.map(tokio_rustls::TlsAcceptor::from),
            };
            tasks.spawn(serve(
                socket,
                current.clone(),
                limits,
                pending.clone(),
                stop.clone(),
                tasks.clone(),
            ));
        }
        Ok(Self {
            stop,
            tasks,
            current,
            generation: Mutex::new(generation),
            listeners: config.gateway.listeners.clone(),
            limits,
            service,
        })
    }

    /// Applies the routes and upstreams of `config` to requests from now on; open connections
    /// stay open and requests in flight finish on the routes they started with. Listeners and
    /// header limits are fixed while herd runs.
    pub fn reload(&self, config: &Config) -> Result<(), String> {
        if config.gateway.listeners != self.listeners {
            return Err("gateway listeners changed; restart herd to apply them".into());
        }
        let (new, old) = (config.gateway.limits, self.limits);
        if (
            new.max_header_count,
            new.max_header_bytes,
            new.header_read_timeout,
            new.max_pending_connections,
        ) != (
            old.max_header_count,
            old.max_header_bytes,
            old.header_read_timeout,
            old.max_pending_connections,
        ) {
            return Err(
                "gateway header or connection limits changed; restart herd to apply them".into(),
            );
        }
        let checks = self.stop.child_token();
        let (proxy, generation) =
            build(config, &self.service, &self.tasks, &checks).map_err(|e| {
                checks.cancel();
                e.to_string()
            })?;
        self.current.store(Arc::new(proxy));
        let old = std::mem::replace(&mut *self.generation.lock().expect("poisoned"), generation);
        old.checks.cancel();
        tracing::info!(
            "gateway reloaded: {} route(s), {} upstream(s)",
            config.gateway.routes.len(),
            config.gateway.upstreams.len()
        );
        Ok(())
    }

    /// Stops accepting, lets open connections finish (up to a bound), and returns.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), self.tasks.wait()).await;
    }
}

/// A listener as it is served: its socket, its name, and TLS when it has it.
struct Socket {
    listener: TcpListener,
    name: Arc<str>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts on one listener until `stop`, then drains its connections.
async fn serve(
    Socket {
        listener,
        name,
        tls,
    }: Socket,
    current: Arc<ArcSwap<proxy::Proxy>>,
    limits: Limits,
    pending: Arc<pending::Pending>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    // hyper answers a head over these limits with 431, a malformed one (conflicting
    // Content-Length values, bad chunking) with 400, and closes the connection.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_header_count)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("gateway accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let current = current.clone();
        let peer = Arc::new(proxy::Peer::new(name.clone(), peer, tls.is_some()));
        let slot = pending.admit();
        let (registry, first) = (pending.clone(), slot.clone());
        let svc = service_fn(move |req| {
            registry.served(&first);
            // Each request takes the routes current when it arrives, so a reload applies to
            // the next request even on a connection that stays open.
            current.load_full().handle(peer.clone(), req)
        });
        let waiting = pending.clone();
        match &tls {
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tasks.spawn(async move {
                    let served = async move {
                        if let Err(e) = conn.await {
                            tracing::debug!("gateway connection ended: {e}");
                        }
                    };
                    waiting.watch(&slot, served).await;
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's task, bounded like a request head.
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let served = async move {
                    let stream = match handshake.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!("gateway connection ended: {e}");
                    }
                };
                tasks.spawn(async move { waiting.watch(&slot, served).await });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
