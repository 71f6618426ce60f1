//! Fronts: herd accepting on a service's own `listen` address and forwarding every request to
//! one of the service's ready instances, each on its private socket.
//!
//! A front is the gateway's request path with one catch-all route to the service's pool, so it
//! keeps what makes a reload or a crash invisible to clients: the client's connection stays with
//! herd while instances come and go, and a request an instance never answered goes to another
//! one (`proxy.rs`). What differs from a configured route: no body size limit (the app decides),
//! a deadline of [`RESPONSE_DEADLINE`] for the response head instead of the gateway's default, the
//! route label `listen` in metrics, no access lines, and no reload of its own (the pool follows the service's ready
//! instances; a new `listen` address needs a restart, as for shared sockets).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use herd_config::{Limits, RetrySpec, RouteSpec, Target};
use herd_upstream::{Places, Pool, ServiceSource};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::Proxy;
use crate::route::RouteTable;

/// herd's own deadline for an instance's response head on a service's `listen` address: long,
/// so that the app's own timeouts (long polls included) decide.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(3600);

/// A service's bound `listen` address, to be served by herd.
pub struct Front {
    service: String,
    listener: std::net::TcpListener,
}

impl Front {
    /// Serves `listener` (bound, listening) for the service named `service`.
    pub fn new(service: String, listener: std::net::TcpListener) -> Self {
        Self { service, listener }
    }
}

/// Starts serving `front` on `tasks` until `stop`; the service must be known to `source`.
pub(crate) fn start(
    front: Front,
    source: &ServiceSource,
    limits: Limits,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<()> {
    let name = front.service;
    let (addrs, balance, breaker) = source(&name)
        .ok_or_else(|| std::io::Error::other(format!("service {name:?} is not running")))?;
    let pool = Pool::new(
        format!("service {name}"),
        addrs,
        balance,
        breaker,
        Places::default(),
    );
    let target = Target::Service(name.clone());
    let route = RouteSpec {
        listener: None,
        host: None,
        path_prefix: "/".into(),
        methods: Vec::new(),
        target: target.clone(),
        timeout: RESPONSE_DEADLINE,
        per_try_timeout: None,
        retry: RetrySpec::default(),
        retryable: false,
        rate_limit: None,
    };
    let pools = HashMap::from([(target, Arc::new(pool))]);
    let proxy = Proxy::new(RouteTable::new(&[route]), pools, u64::MAX).front("listen");
    let listener = front.listener;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    tracing::debug!("service {name}: herd forwards {addr} to its instances");
    let socket = crate::Socket {
        listener: tokio::net::TcpListener::from_std(listener)?,
        name: format!("service {name}").into(),
        tls: None,
    };
    // Connections that never send a request are bounded here as on the gateway's listeners.
    let pending = Arc::new(crate::pending::Pending::new(
        limits.max_pending_connections,
        limits.header_read_timeout,
    ));
    tasks.spawn(crate::serve(
        socket,
        Arc::new(ArcSwap::from_pointee(proxy)),
        limits,
        pending,
        stop.clone(),
        tasks.clone(),
    ));
    Ok(())
}
