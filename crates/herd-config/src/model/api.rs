//! The sidecar API's validated configuration: `[api]`, components (from herd.toml or Dapr
//! resource files) and declarative subscriptions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[api]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSpec {
    /// The shared listener's address.
    pub listen: SocketAddr,
    /// The shared gRPC listener's address; `None` when `grpc_listen = ""`.
    pub grpc_listen: Option<SocketAddr>,
    /// Whether `grpc_listen` was written in the config (a default that is taken is skipped).
    pub grpc_explicit: bool,
    /// The app id of requests on `listen`.
    pub app_id: String,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Absolute directories of Dapr resource files.
    pub resources: Vec<PathBuf>,
}

/// A component, from `herd.toml` or a Dapr resource file.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    /// Its name.
    pub name: String,
    /// Dapr's type, e.g. `state.redis`.
    pub kind: String,
    /// Metadata as strings.
    pub metadata: BTreeMap<String, String>,
    /// Services allowed to use it; empty means all.
    pub scopes: Vec<String>,
    /// Where it was declared, for error messages.
    pub origin: Origin,
}

/// Where a component was declared.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// `[[component]]` number `index` of herd.toml.
    Toml(usize),
    /// A Dapr resource file; `fields` maps metadata names to their lines.
    Yaml {
        /// The file.
        file: PathBuf,
        /// The line of the document's `kind: Component`.
        line: usize,
        /// Metadata name → line.
        fields: BTreeMap<String, usize>,
    },
    /// Added by herd: the default `statestore` when `[api]` has no state component.
    Default,
}

/// A declarative subscription: `topic` on `pubsub` delivered to the instances of `service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The subscribing service (its app id is the consumer group).
    pub service: String,
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// The default path; empty for an app's programmatic subscription with rules only, whose
    /// messages matching no rule are not delivered (as daprd does).
    pub route: String,
    /// `(event type, path)` rules, tried in order.
    pub rules: Vec<(String, String)>,
    /// Dead-letter topic.
    pub dead_letter_topic: Option<String>,
    /// Deliveries in flight at most.
    pub max_in_flight: u32,
    /// One at a time, in order.
    pub in_order: bool,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// Dapr's bulk subscribe: messages POSTed to the app in batches; `None`: one by one.
    pub bulk: Option<BulkSubscribe>,
}

/// Dapr's `bulkSubscribe` settings of a subscription: a batch goes to the app once it holds
/// `max_messages` messages or `max_await` after its first message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSubscribe {
    /// Messages per batch at most (Dapr's `maxMessagesCount`, default 100).
    pub max_messages: u32,
    /// How long a batch waits to fill (Dapr's `maxAwaitDurationMs`, default 1000 ms).
    pub max_await: std::time::Duration,
}

impl BulkSubscribe {
    /// Dapr's settings from `bulkSubscribe`'s fields: `None` unless `enabled`; a missing or
    /// zero count or duration takes Dapr's default.
    pub fn from_dapr(
        enabled: bool,
        max_messages: Option<u32>,
        max_await_ms: Option<u64>,
    ) -> Option<Self> {
        enabled.then(|| Self {
            max_messages: max_messages.filter(|&n| n > 0).unwrap_or(100),
            max_await: std::time::Duration::from_millis(
                max_await_ms.filter(|&ms| ms > 0).unwrap_or(1000),
            ),
        })
    }
}

impl SubscriptionSpec {
    /// Parses a rule's match expression; herd evaluates `event.type == "<type>"`.
    pub fn parse_match(expression: &str) -> Option<String> {
        let rest = expression.trim().strip_prefix("event.type")?.trim_start();
        let rest = rest.strip_prefix("==")?.trim();
        let quoted = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))?;
        (!quoted.contains(['"', '\''])).then(|| quoted.to_string())
    }
}
