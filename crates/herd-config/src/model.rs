//! The validated configuration: what the rest of herd consumes.
//!
//! Every value here has passed validation, carries its defaults filled in, and has paths
//! resolved against the config file's directory. Types are plain data; the [`Source`] they were
//! read from stays attached so later failures (a port already in use) can still name a line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use herd_resilience::{Backoff, BreakerConfig, Resiliency, Trip};

use crate::source::Source;

/// A loaded and validated `herd.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, kept to locate keys in later error messages.
    pub source: Arc<Source>,
    /// Absolute data directory (control socket, logs).
    pub data_dir: PathBuf,
    /// Log file rotation.
    pub logs: LogSettings,
    /// Services in file order.
    pub services: Vec<ServiceSpec>,
    /// The gateway: listeners, routes and upstreams.
    pub gateway: GatewaySpec,
    /// The admin listener's address, if any.
    pub admin: Option<SocketAddr>,
    /// herd's own logs and span export.
    pub telemetry: TelemetrySpec,
    /// The sidecar API, if `[api]` is present.
    pub api: Option<ApiSpec>,
    /// Components from `[[component]]` (Dapr resource files are added by
    /// [`crate::load_resources`]).
    pub components: Vec<ComponentSpec>,
    /// Declarative subscriptions from `[[subscription]]` and Dapr `Subscription` files.
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Resiliency documents: `[resiliency]` first, then Dapr `Resiliency` files in load order.
    pub resiliency: Vec<Resiliency>,
    /// Invocation across hosts, if `[mesh]` is present.
    pub mesh: Option<MeshSpec>,
}

/// The gateway's configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewaySpec {
    /// Listeners in file order.
    pub listeners: Vec<ListenerSpec>,
    /// Routes in file order; the first match wins.
    pub routes: Vec<RouteSpec>,
    /// Upstreams by name.
    pub upstreams: Vec<UpstreamSpec>,
    /// Request size and time limits.
    pub limits: Limits,
    /// Region preference for placed endpoints.
    pub regions: Regions,
}

/// Which regions the gateway prefers.
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    /// The gateway's own region.
    pub local: Option<String>,
    /// Regions to fail over to, in order.
    pub failover: Vec<String>,
    /// Envoy's overprovisioning factor.
    pub overprovisioning: f64,
}

impl Default for Regions {
    fn default() -> Self {
        Self {
            local: None,
            failover: Vec::new(),
            overprovisioning: 1.4,
        }
    }
}

impl Regions {
    /// Priority of an endpoint in `region` (0 first): the own region (and unplaced endpoints),
    /// then the failover order, then other regions by name.
    pub fn priority(&self, region: Option<&str>, all: &[String]) -> usize {
        let Some(region) = region.filter(|r| Some(*r) != self.local.as_deref()) else {
            return 0;
        };
        if let Some(i) = self.failover.iter().position(|f| f == region) {
            return 1 + i;
        }
        let mut others: Vec<&String> = all
            .iter()
            .filter(|r| !self.failover.contains(r) && Some(r.as_str()) != self.local.as_deref())
            .collect();
        others.sort();
        others.dedup();
        1 + self.failover.len() + others.iter().position(|r| *r == region).unwrap_or(0)
    }
}

/// What the gateway accepts from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most header fields per request (431 above).
    pub max_header_count: usize,
    /// Largest request head in bytes (431 above).
    pub max_header_bytes: usize,
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: u64,
    /// Deadline for a request's head.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_count: 100,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1000 * 1000,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// A gateway listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Name.
    pub name: String,
    /// Address.
    pub listen: SocketAddr,
    /// Certificate and key files for HTTPS.
    pub tls: Option<TlsFiles>,
    /// Index of its `[[gateway.listener]]` table, for error locations.
    pub index: usize,
}

/// PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The ready instances of a herd service.
    Service(String),
    /// A static `[[upstream]]`.
    Upstream(String),
}

/// A gateway route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Listener name, or every listener.
    pub listener: Option<String>,
    /// Host to match, lower case, without port.
    pub host: Option<String>,
    /// Path prefix, always starting with `/`.
    pub path_prefix: String,
    /// Methods to match (upper case); empty matches all.
    pub methods: Vec<String>,
    /// Destination.
    pub target: Target,
    /// Whole-request deadline.
    pub timeout: Duration,
    /// Deadline of one attempt.
    pub per_try_timeout: Option<Duration>,
    /// Retry policy.
    pub retry: RetrySpec,
    /// Whether non-idempotent methods may be retried.
    pub retryable: bool,
    /// Token bucket: (requests per second, burst).
    pub rate_limit: Option<(f64, u32)>,
}

/// Retries for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySpec {
    /// Retries per request; `None` is unlimited (bounded by the budget).
    pub max_retries: Option<u32>,
    /// Delay between attempts.
    pub backoff: Backoff,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_retries: Some(2),
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(25),
                max: Duration::from_millis(250),
            },
        }
    }
}

/// A group of remote endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// Name.
    pub name: String,
    /// Addresses given as IP literals.
    pub endpoints: Vec<SocketAddr>,
    /// Region priority of each entry of `endpoints` (0 = local), from [`Regions::priority`].
    pub priorities: Vec<usize>,
    /// Endpoints given as `name:port`, resolved every `dns_refresh` (every address a name
    /// resolves to is an endpoint, as with a Kubernetes headless service).
    pub names: Vec<(String, u16)>,
    /// How often names are resolved again.
    pub dns_refresh: Duration,
    /// Balancing strategy.
    pub balance: Balance,
    /// Circuit breaker per endpoint.
    pub breaker: BreakerConfig,
    /// Active health checks, if configured.
    pub health: Option<HealthSpec>,
    /// Passive outlier ejection, if configured.
    pub outlier: Option<OutlierSpec>,
    /// Most requests in flight at once.
    pub max_concurrency: Option<u32>,
}

/// Passive outlier ejection of an upstream's endpoints (Envoy's outlier detection, consecutive
/// failures only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSpec {
    /// Consecutive 5xx answers that eject; 0 is off.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 answers that eject; 0 is off.
    pub consecutive_gateway_failure: u32,
    /// Consecutive attempts without an answer that eject; 0 is off.
    pub consecutive_local_origin_failure: u32,
    /// Length of the first ejection, and the step of later ones.
    pub base_ejection_time: Duration,
    /// Longest ejection (never shorter than `base_ejection_time`).
    pub max_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent of the endpoints in rotation.
    pub max_ejection_percent: u32,
    /// Time in rotation that takes one step off the ejection multiplier.
    pub interval: Duration,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            interval: Duration::from_secs(10),
        }
    }
}

/// Active HTTP health checks of an upstream's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// Path checked; 2xx is a pass.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Deadline of one check.
    pub timeout: Duration,
    /// Consecutive passes to return.
    pub healthy: u32,
    /// Consecutive failures to leave.
    pub unhealthy: u32,
}

/// Load-balancing strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight (ties broken in turn).
    LeastRequest,
    /// The better of two random endpoints by peak-EWMA latency times load.
    P2cEwma,
}

impl Config {
    /// The service named `name`, if any.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Rotation of per-service log files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Rotate when the live file reaches this many bytes.
    pub max_size: u64,
    /// Rotated files kept beside the live one.
    pub keep: u32,
}

/// One service: a command run as a cluster of instances.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Unique name.
    pub name: String,
    /// Index of this service's `[[service]]` table in the file, for error locations.
    pub index: usize,
    /// The program, resolved to a path when it was found in `PATH`, and its arguments.
    pub command: Vec<String>,
    /// Number of instances (slots); `"max"` has already been turned into the core count.
    pub instances: usize,
    /// The shared listening address, if the service has one.
    pub listen: Option<SocketAddr>,
    /// Each instance binds a port of its own, allocated by herd (`port = "auto"`).
    pub own_port: bool,
    /// How the gateway balances over the instances.
    pub balance: Balance,
    /// Circuit breaker per instance, for the gateway.
    pub breaker: BreakerConfig,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// Extra environment for the instances.
    pub env: BTreeMap<String, String>,
    /// Crash restart policy.
    pub restart: RestartPolicy,
    /// Restart an instance above this resident set size, in bytes.
    pub max_memory: Option<u64>,
    /// Time between SIGTERM and SIGKILL when stopping an instance.
    pub kill_timeout: Duration,
    /// How readiness is detected.
    pub ready: Readiness,
}

/// Exponential backoff with jitter, and an upper bound on restarts per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// First delay after a crash.
    pub initial_backoff: Duration,
    /// Upper bound of the doubling delay.
    pub max_backoff: Duration,
    /// Restarts allowed within `window` before the instance is marked errored.
    pub max_restarts: u32,
    /// Sliding window for `max_restarts`.
    pub window: Duration,
    /// Uptime after which the backoff starts over.
    pub min_uptime: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_restarts: 10,
            window: Duration::from_secs(60),
            min_uptime: Duration::from_secs(1),
        }
    }
}

/// How herd learns that a new instance can take traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The detection method.
    pub mode: ReadyMode,
    /// Deadline for a starting instance.
    pub timeout: Duration,
}

/// Readiness detection methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyMode {
    /// The instance accepts on the shared socket (seen in `/proc`), or on its own port. Services
    /// with neither are ready as soon as they are spawned.
    Listen,
    /// `GET path` on the instance's own port answers 2xx.
    Http {
        /// The health path.
        path: String,
    },
    /// The instance writes `READY=1` to the pipe at `HERD_READY_FD`.
    Notify,
}

/// `[api]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSpec {
    /// The shared listener's address.
    pub listen: SocketAddr,
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

impl Config {
    /// An error about component `c` (its metadata key `field`, if given), located in the file
    /// that declared it.
    pub fn component_error(
        &self,
        c: &ComponentSpec,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> crate::ConfigError {
        let message = message.into();
        match &c.origin {
            Origin::Toml(index) => {
                let at = crate::KeyPath::default().key("component").index(*index);
                let at = match field {
                    Some(f) if c.metadata.contains_key(f) => at.key("metadata").key(f),
                    Some(_) => at.key("metadata"),
                    None => at.key("type"),
                };
                self.source.error(&at, message)
            }
            Origin::Yaml { file, line, fields } => crate::ConfigError {
                file: file.clone(),
                line: Some(field.and_then(|f| fields.get(f)).copied().unwrap_or(*line)),
                key: Some(match field {
                    Some(f) => format!("{}: spec.metadata.{f}", c.name),
                    None => format!("{}: spec.type", c.name),
                }),
                message,
            },
            Origin::Default => crate::ConfigError {
                file: self.source.path.clone(),
                line: None,
                key: Some(format!("component {}", c.name)),
                message,
            },
        }
    }
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
    /// The default path.
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

/// `[mesh]`: where peers reach this herd and where it finds them.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshSpec {
    /// Where peer herds reach this one.
    pub listen: SocketAddr,
    /// Peers given by address.
    pub peers: Vec<SocketAddr>,
    /// Peers given as `name:port`, resolved every `refresh`.
    pub names: Vec<(String, u16)>,
    /// How often peers are asked for their apps (and names resolved).
    pub refresh: Duration,
    /// This herd's region.
    pub region: Option<String>,
    /// Mutual TLS, if configured.
    pub tls: Option<MeshTls>,
}

/// Mutual TLS between herds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTls {
    /// This herd's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The authority peers' certificates must chain to.
    pub ca: PathBuf,
    /// The DNS name checked in a peer's certificate.
    pub server_name: String,
}

/// How herd writes its own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// `[telemetry]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySpec {
    /// The collector's base URL (`http://host:port`), without a trailing `/`.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of herd's spans.
    pub service_name: Option<String>,
    /// The log format, when the file sets one.
    pub log_format: Option<LogFormat>,
}
