//! What one service's slots share: the socket, the log hub, the slots' status snapshots, and the
//! list of endpoints the service can be reached at, which the gateway watches.
//!
//! Slots publish their status after every event and then call [`Shared::refresh_endpoints`];
//! the endpoint list changes (and wakes watchers) only when the set of ready addresses does.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::logs::LogHub;
use crate::status::{InstanceState, InstanceStatus};

/// Ready addresses of a service, as the gateway balances over them.
pub type Endpoints = watch::Receiver<Arc<Vec<SocketAddr>>>;

/// What one service's slots share.
pub struct Shared {
    /// Service name.
    pub name: String,
    /// The shared listening socket (duplicated above fd 4), if the service passes it through.
    pub listener: Option<OwnedFd>,
    /// Inode of the listening socket, for accept detection.
    pub socket_inode: u64,
    /// The service's bound `listen` address (shared or served by herd).
    pub address: Option<SocketAddr>,
    /// Where output goes.
    pub logs: LogHub,
    /// Variables herd adds to every instance's environment beside the service's own.
    pub extra_env: Vec<(String, String)>,
    /// Status snapshots of the slots, in slot order.
    pub views: Mutex<Vec<Arc<Mutex<InstanceStatus>>>>,
    endpoints: watch::Sender<Arc<Vec<SocketAddr>>>,
}

impl Shared {
    /// State for a service named `name`.
    pub fn new(
        name: String,
        listener: Option<OwnedFd>,
        socket_inode: u64,
        address: Option<SocketAddr>,
        logs: LogHub,
        extra_env: Vec<(String, String)>,
    ) -> Self {
        Self {
            name,
            listener,
            socket_inode,
            address,
            logs,
            extra_env,
            views: Mutex::new(Vec::new()),
            endpoints: watch::Sender::new(Arc::new(Vec::new())),
        }
    }

    /// The port of the `listen` address.
    pub fn port(&self) -> Option<u16> {
        self.address.map(|a| a.port())
    }

    /// Whether each instance gets a private socket bound by herd (a proxied `listen`).
    pub fn private_sockets(&self) -> bool {
        self.address.is_some() && self.listener.is_none()
    }

    /// A receiver of the service's ready endpoints.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.subscribe()
    }

    /// Recomputes the ready endpoints from the slots' snapshots, and the gauges of ready and
    /// configured instances (`herd_service_ready_instances`, `herd_service_instances`).
    pub fn refresh_endpoints(&self) {
        let views = self.views.lock().expect("views poisoned");
        let mut ready = Vec::new();
        let mut any_ready = false;
        let mut ready_count = 0usize;
        for v in views.iter() {
            let s = v.lock().expect("status poisoned");
            if s.state == InstanceState::Ready {
                any_ready = true;
                ready_count += 1;
                if let Some(port) = s.port {
                    ready.push(SocketAddr::from(([127, 0, 0, 1], port)));
                }
            }
        }
        let slots = views.len();
        drop(views);
        metrics::gauge!("herd_service_ready_instances", "service" => self.name.clone())
            .set(ready_count as f64);
        metrics::gauge!("herd_service_instances", "service" => self.name.clone()).set(slots as f64);
        // A shared socket stands for every instance; a proxied address is herd's own front.
        if let Some(addr) = self
            .address
            .filter(|_| any_ready && self.listener.is_some())
        {
            ready.push(addr);
        }
        self.endpoints.send_if_modified(|current| {
            if **current == ready {
                false
            } else {
                *current = Arc::new(ready);
                true
            }
        });
    }
}
