//! The components the API serves (state stores, lock stores, pub/sub brokers), by name, each
//! connecting in the background.
//!
//! A component whose backend cannot be reached at start-up does not stop herd: its connect task
//! retries with doubling delays (up to 30 s) and logs each failure, requests to it fail with a
//! 500 that says it is not connected and why, and `/v1.0/healthz/outbound` answers 500 until
//! every component is connected. Tasks end on the cancellation token.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herd_pubsub::PubSub;
use herd_state::StateStore;
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
    /// `pubsub.*`: publish and subscriptions.
    PubSub,
}

/// A configured backend of either building block.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A state (or lock) store.
    State(herd_state::Backend),
    /// A pub/sub broker.
    PubSub(herd_pubsub::Backend),
}

/// A connected backend.
enum Opened {
    State(Arc<dyn StateStore>),
    PubSub(Arc<dyn PubSub>),
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
    /// Transactions publish their upserts to this `(pubsub, topic)`, through the outbox.
    pub outbox: Option<(String, String)>,
    /// The state API's metric handles for this component.
    pub(crate) state_metrics: crate::state::metrics::StateMetrics,
    opened: OnceLock<Opened>,
    last_error: Mutex<Option<String>>,
}

impl Component {
    fn not_connected(&self) -> String {
        let why = self.last_error.lock().expect("poisoned").clone();
        format!(
            "{} {:?} is not connected yet{}",
            self.kind,
            self.name,
            why.map(|w| format!(": {w}")).unwrap_or_default()
        )
    }

    /// The connected state store, or why there is none yet.
    pub fn store(&self) -> Result<&Arc<dyn StateStore>, String> {
        match self.opened.get() {
            Some(Opened::State(s)) => Ok(s),
            Some(Opened::PubSub(_)) => Err(format!("{} is not a state store", self.name)),
            None => Err(self.not_connected()),
        }
    }

    /// The connected broker, or why there is none yet.
    pub fn broker(&self) -> Result<&Arc<dyn PubSub>, String> {
        match self.opened.get() {
            Some(Opened::PubSub(b)) => Ok(b),
            Some(Opened::State(_)) => Err(format!("{} is not a pub/sub component", self.name)),
            None => Err(self.not_connected()),
        }
    }

    /// True once connected.
    pub fn ready(&self) -> bool {
        self.opened.get().is_some()
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
    /// For a state store with a transactional outbox: the pub/sub component and topic its
    /// transactions publish to.
    pub outbox: Option<(String, String)>,
}

/// Every component, by name.
pub struct Components {
    list: Vec<Arc<Component>>,
    /// Subscriptions being consumed, as `/v1.0/metadata` lists them.
    active: Mutex<Vec<Active>>,
}

/// A subscription whose consumer runs.
#[derive(Debug, Clone)]
pub struct Active {
    /// The subscribing app.
    pub app: String,
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// The default route.
    pub route: String,
    /// `(event type, path)` rules.
    pub rules: Vec<(String, String)>,
    /// The dead-letter topic.
    pub dead_letter_topic: Option<String>,
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
            } else if d.kind.starts_with("pubsub.") {
                Block::PubSub
            } else {
                Block::State
            };
            let locks = matches!(&d.backend, Backend::State(b) if b.supports_locks());
            let component = Arc::new(Component {
                name: d.name,
                kind: d.kind,
                block,
                prefix: d.prefix,
                scopes: d.scopes,
                locks,
                outbox: d.outbox,
                state_metrics: Default::default(),
                opened: OnceLock::new(),
                last_error: Mutex::new(None),
            });
            tracker.spawn(connect(component.clone(), d.backend, stop.clone()));
            list.push(component);
        }
        Arc::new(Self {
            list,
            active: Mutex::new(Vec::new()),
        })
    }

    /// The component named `name`, if `app` may see it.
    pub fn find(&self, name: &str, app: &str) -> Option<&Arc<Component>> {
        self.list
            .iter()
            .find(|c| c.name == name && c.visible_to(app))
    }

    /// Records a subscription whose consumer started.
    pub fn subscribed(&self, active: Active) {
        self.active.lock().expect("poisoned").push(active);
    }

    /// The subscriptions being consumed.
    pub fn subscriptions(&self) -> Vec<Active> {
        self.active.lock().expect("poisoned").clone()
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
            opened = open(&backend) => opened,
        };
        match opened {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(
                        "component {}: connected after {attempt} attempts",
                        component.name
                    );
                }
                let _ = component.opened.set(store);
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

async fn open(backend: &Backend) -> Result<Opened, String> {
    match backend {
        Backend::State(b) => herd_state::open(b)
            .await
            .map(Opened::State)
            .map_err(|e| e.to_string()),
        Backend::PubSub(b) => herd_pubsub::open(b)
            .await
            .map(Opened::PubSub)
            .map_err(|e| e.to_string()),
    }
}
