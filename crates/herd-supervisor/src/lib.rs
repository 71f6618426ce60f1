//! Cluster mode: runs each service of a `herd.toml` as N instances behind one listen address.
//!
//! [`bind_all`] binds every service's `listen` address once (so errors surface before anything
//! is spawned), then [`Supervisor::start`] starts one actor per instance slot (`slot.rs`). By
//! default herd's gateway serves the address ([`Listening::Proxied`]) and each instance gets a
//! private loopback socket of its own as fd 3 (systemd socket activation, `spawn.rs`), bound
//! anew for every process, whose address joins the service's endpoints once the instance is
//! ready. With `passthrough = true` ([`Listening::Shared`]) the `listen` socket itself is every
//! instance's fd 3: they all accept from one kernel queue and connections wait there while
//! instances come and go. A stopping instance first leaves the endpoints, then herd waits until
//! no request it forwarded there awaits an answer, then sends SIGTERM. Crashes restart with
//! backoff (`backoff.rs`), reloads replace slot by slot (`service.rs`), output flows through the
//! [`LogHub`] (`logs.rs`). Shutdown cancels one token; every slot stops its processes (SIGTERM,
//! then SIGKILL after `kill_timeout`) and [`Supervisor::shutdown`] returns once all are reaped.
//!
//! Instances never outlive herd: they run with `PR_SET_PDEATHSIG = SIGKILL`, in their own
//! process groups, which herd signals as a whole; processes still in a group after the
//! instance's first process exited are stopped the same way, and shutdown waits for them too.

mod backoff;
mod instance;
pub mod logs;
mod procfs;
mod readiness;
mod service;
mod shared;
mod slot;
mod spawn;
pub mod status;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use herd_config::{Config, ConfigError, KeyPath};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

pub use logs::{LogHub, LogLine, Stream};
pub use service::Service;
pub use shared::Endpoints;
pub use status::{InstanceState, InstanceStatus, ServiceStatus};

/// Backlog of shared listening sockets: connections wait here while instances restart.
const BACKLOG: i32 = 4096;

/// A service's listening socket, bound before anything starts.
pub struct Bound {
    fd: OwnedFd,
    addr: SocketAddr,
    inode: u64,
}

impl Bound {
    /// The bound address (the port chosen when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket, for herd's own accept loop.
    pub fn into_listener(self) -> TcpListener {
        TcpListener::from(self.fd)
    }
}

/// How a service's `listen` address reaches its instances.
pub enum Listening {
    /// The service has no `listen` address.
    None,
    /// The socket itself is every instance's fd 3 (`passthrough = true`).
    Shared(Bound),
    /// herd serves this address and forwards to each instance's private socket.
    Proxied(SocketAddr),
}

/// Binds `addr` as a shared listening socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets herd bind again right after a restart while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr()?;
    let fd = spawn::high_fd(&OwnedFd::from(listener))?;
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        fd.as_fd().as_raw_fd()
    }))?
    .ino();
    Ok(Bound { fd, addr, inode })
}

/// Binds every service's `listen` address; errors name the file, line and key.
pub fn bind_all(config: &Config) -> Result<Vec<Option<Bound>>, Vec<ConfigError>> {
    let mut bound = Vec::new();
    let mut errors = Vec::new();
    for spec in &config.services {
        match spec.listen.map(bind) {
            None => bound.push(None),
            Some(Ok(b)) => bound.push(Some(b)),
            Some(Err(e)) => {
                let path = KeyPath::service(spec.index).key("listen");
                let addr = spec.listen.expect("mapped above");
                errors.push(
                    config
                        .source
                        .error(&path, format!("cannot bind {addr}: {e}")),
                );
                bound.push(None);
            }
        }
    }
    if errors.is_empty() {
        Ok(bound)
    } else {
        Err(errors)
    }
}

/// All running services.
///
/// A deleted service (`herd delete`) keeps its place, its socket and its endpoint list (which
/// the gateway and pub/sub delivery watch), with every instance stopped; it is only left out
/// of [`Supervisor::status`] until [`Supervisor::undelete`].
pub struct Supervisor {
    services: Vec<Arc<Service>>,
    deleted: std::sync::Mutex<std::collections::BTreeSet<String>>,
    logs: LogHub,
    cancel: CancellationToken,
}

impl Supervisor {
    /// Starts every service of `config` (`sockets` in the same order). `extra_env` gives
    /// variables herd adds to a service's instances (the sidecar API's `DAPR_HTTP_PORT`, …),
    /// kept across reloads.
    pub fn start(
        config: &Config,
        sockets: Vec<Listening>,
        logs: LogHub,
        extra_env: &dyn Fn(&str) -> Vec<(String, String)>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let services = config
            .services
            .iter()
            .zip(sockets)
            .map(|(spec, socket)| {
                let (fd, inode, address) = match socket {
                    Listening::Shared(b) => (Some(b.fd), b.inode, Some(b.addr)),
                    Listening::Proxied(addr) => (None, 0, Some(addr)),
                    Listening::None => (None, 0, None),
                };
                let shared = Arc::new(shared::Shared::new(
                    spec.name.clone(),
                    fd,
                    inode,
                    address,
                    logs.clone(),
                    extra_env(&spec.name),
                ));
                Arc::new(Service::start(shared, spec.clone(), cancel.child_token()))
            })
            .collect();
        Self {
            services,
            deleted: Default::default(),
            logs,
            cancel,
        }
    }

    /// Marks `name` deleted: left out of the status until undeleted. Its instances are the
    /// caller's to stop.
    pub fn delete(&self, name: &str) {
        self.deleted
            .lock()
            .expect("deleted poisoned")
            .insert(name.to_string());
    }

    /// Lists `name` again after a [`Supervisor::delete`].
    pub fn undelete(&self, name: &str) {
        self.deleted.lock().expect("deleted poisoned").remove(name);
    }

    /// Whether `name` was deleted.
    pub fn is_deleted(&self, name: &str) -> bool {
        self.deleted
            .lock()
            .expect("deleted poisoned")
            .contains(name)
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.services.iter().find(|s| s.name() == name).cloned()
    }

    /// All services in config order.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// Where instance output goes.
    pub fn logs(&self) -> &LogHub {
        &self.logs
    }

    /// A snapshot of every service but the deleted ones.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .filter(|s| !self.is_deleted(s.name()))
            .map(|s| s.status())
            .collect()
    }

    /// Stops every instance gracefully and waits until all are reaped.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        for s in &self.services {
            s.join().await;
        }
    }
}
