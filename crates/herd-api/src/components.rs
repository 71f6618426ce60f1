//! The components the API serves, by name, each connecting in the background.
//!
//! A component whose backend cannot be reached at start-up does not stop herd: its connect task
//! retries with doubling delays (up to 30 s) and logs each failure, requests to it fail with a
//! 500 that says it is not connected and why, and `/v1.0/healthz/outbound` answers 500 until
//! every component is connected. Tasks end on the cancellation token.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herd_state::{Backend, StateStore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::keys::KeyPrefix;

/// Which API a component serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// `state.*`: the state API, and the lock API when the backend supports locks.
    State,
    /// `lock.*`: the lock API only.
    Lock,
}

/// One configured component.
pub struct Component {
    /// Its name.
    pub name: String,
    /// Dapr's type, e.g. `state.redis`.
    pub kind: String,
    /// The API it serves.
    pub block: Block,
    /// How keys are prefixed.
    pub prefix: KeyPrefix,
    /// Apps allowed to use it; empty: all.
    pub scopes: Vec<String>,
    /// It serves the lock API.
    pub locks: bool,
    store: OnceLock<Arc<dyn StateStore>>,
    last_error: Mutex<Option<String>>,
}

impl Component {
    /// The connected store, or why there is none yet.
    pub fn store(&self) -> Result<&Arc<dyn StateStore>, String> {
        self.store.get().ok_or_else(|| {
            let why = self.last_error.lock().expect("poisoned").clone();
            format!(
                "{} {:?} is not connected yet{}",
                self.kind,
                self.name,
                why.map(|w| format!(": {w}")).unwrap_or_default()
            )
        })
    }

    /// True once connected.
    pub fn ready(&self) -> bool {
        self.store.get().is_some()
    }

    /// True if `app` may use it.
    pub fn visible_to(&self, app: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == app)
    }
}

/// A component to serve: its name, type, scopes, key prefix and configured backend.
pub struct Declared {
    /// Name.
    pub name: String,
    /// Dapr type.
    pub kind: String,
    /// Apps allowed; empty: all.
    pub scopes: Vec<String>,
    /// Key prefix strategy.
    pub prefix: KeyPrefix,
    /// The backend to open.
    pub backend: Backend,
}

/// Every component, by name.
pub struct Components {
    list: Vec<Arc<Component>>,
}

impl Components {
    /// Starts connecting every component; tasks are tracked by `tracker` and stop on `stop`.
    pub fn start(
        declared: Vec<Declared>,
        stop: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Self> {
        let mut list = Vec::new();
        for d in declared {
            let block = if d.kind.starts_with("lock.") {
                Block::Lock
            } else {
                Block::State
            };
            let component = Arc::new(Component {
                name: d.name,
                kind: d.kind,
                block,
                prefix: d.prefix,
                scopes: d.scopes,
                locks: d.backend.supports_locks(),
                store: OnceLock::new(),
                last_error: Mutex::new(None),
            });
            tracker.spawn(connect(component.clone(), d.backend, stop.clone()));
            list.push(component);
        }
        Arc::new(Self { list })
    }

    /// The component named `name`, if `app` may see it.
    pub fn find(&self, name: &str, app: &str) -> Option<&Arc<Component>> {
        self.list
            .iter()
            .find(|c| c.name == name && c.visible_to(app))
    }

    /// All components.
    pub fn all(&self) -> &[Arc<Component>] {
        &self.list
    }

    /// Waits until every component is connected or `timeout` passes; true if all are.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.list.iter().all(|c| c.ready()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn connect(component: Arc<Component>, backend: Backend, stop: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1u32;
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = herd_state::open(&backend) => opened,
        };
        match opened {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(
                        "component {}: connected after {attempt} attempts",
                        component.name
                    );
                }
                let _ = component.store.set(store);
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "component {} ({}): cannot connect (attempt {attempt}, next in {}): {e}",
                    component.name,
                    component.kind,
                    humantime::format_duration(delay)
                );
                *component.last_error.lock().expect("poisoned") = Some(e.to_string());
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
        attempt += 1;
    }
}
