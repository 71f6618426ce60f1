//! The first stage of loading: `herd.toml` as serde sees it.
//!
//! These structs mirror the file one to one and reject unknown keys. Their doc comments are the
//! reference for every key. Values are kept close to their written form (durations as strings,
//! sizes as [`ByteSize`]); the second stage in `validate.rs` checks them against each other and
//! turns them into the types in `model.rs`.

use std::collections::BTreeMap;

use bytesize::ByteSize;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where herd keeps its control socket, logs and (later) embedded data. Relative paths are
    /// resolved against the directory holding the config file. Default: `.herd`.
    pub data_dir: Option<String>,
    /// The admin listener (`/metrics`, `/healthz`).
    #[serde(default)]
    pub admin: RawAdmin,
    /// Settings for the log files herd writes for each service.
    #[serde(default)]
    pub logs: RawLogs,
    /// herd's own log format and the export of its spans over OTLP.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// The services herd runs, one `[[service]]` table each.
    #[serde(default)]
    pub service: Vec<RawService>,
    /// The gateway's listeners.
    #[serde(default)]
    pub gateway: RawGateway,
    /// Gateway routes, tried in file order; the first match wins.
    #[serde(default)]
    pub route: Vec<RawRoute>,
    /// Groups of remote endpoints a route can lead to.
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    /// The sidecar API (Dapr's HTTP API). Absent: no API server, no components.
    pub api: Option<RawApi>,
    /// Building-block components (state stores, lock stores, pub/sub brokers), one
    /// `[[component]]` each.
    #[serde(default)]
    pub component: Vec<RawComponent>,
    /// Declarative subscriptions: topics herd delivers to a service, one `[[subscription]]`
    /// each (apps can also declare theirs at `GET /dapr/subscribe`).
    #[serde(default)]
    pub subscription: Vec<RawSubscription>,
    /// Resilience policies for components and apps, as in Dapr's `Resiliency` spec.
    pub resiliency: Option<RawResiliency>,
    /// Other herds this one forwards service invocations to, and where they reach this one.
    pub mesh: Option<RawMesh>,
}

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Addresses the gateway accepts HTTP/1.1 and HTTP/2 (h2c) on, one `[[gateway.listener]]`
    /// each.
    #[serde(default)]
    pub listener: Vec<RawListener>,
    /// The region this gateway runs in; endpoints of other regions are used only when too few
    /// of its own are available.
    pub region: Option<String>,
    /// Other regions in the order to fail over to; regions not listed come after, by name.
    #[serde(default)]
    pub failover: Vec<String>,
    /// A region counts as fully available while this share of its endpoints is (Envoy's
    /// overprovisioning factor: 1.4 means 72 % healthy still takes all traffic). Default: 1.4.
    pub overprovisioning: Option<f64>,
    /// Most header fields a request may carry; more is answered 431. Default: 100.
    pub max_header_count: Option<usize>,
    /// Largest request head (request line and headers); larger is answered 431. Default:
    /// `"16KiB"`, at least `"8KiB"`.
    pub max_header_bytes: Option<ByteSize>,
    /// Largest request body; larger is answered 413. Default: `"10MB"`.
    pub max_body_bytes: Option<ByteSize>,
    /// How long a client may take to send a request's head before the connection is closed
    /// (slowloris). Default: `"10s"`.
    pub header_read_timeout: Option<String>,
}

/// `[[gateway.listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Name routes use to bind to this listener.
    pub name: String,
    /// Address to accept on, e.g. `"127.0.0.1:8080"`; port 0 picks a free port.
    pub listen: String,
    /// Serve HTTPS (TLS 1.2/1.3, HTTP/2 by ALPN) with this certificate.
    pub tls: Option<RawTls>,
}

/// `tls = { cert = "...", key = "..." }`: PEM files, relative to the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Certificate chain, leaf first.
    pub cert: String,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// `[[route]]`: which requests go where.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Only requests on this listener; default: every listener.
    pub listener: Option<String>,
    /// Only requests for this host (the `Host` header or `:authority`, port ignored).
    pub host: Option<String>,
    /// Only paths starting with this prefix, at a `/` boundary. Default: `"/"`.
    pub path_prefix: Option<String>,
    /// Only these methods; default: all.
    pub methods: Option<Vec<String>>,
    /// A herd service to send matching requests to (its ready instances).
    pub service: Option<String>,
    /// An `[[upstream]]` to send matching requests to.
    pub upstream: Option<String>,
    /// Whole-request deadline, answered 504 when passed. Default: `"30s"`.
    pub timeout: Option<String>,
    /// Deadline of one attempt: a retryable request that gets no response head in this time is
    /// sent to another endpoint (a stalled endpoint costs one attempt, not the request).
    pub per_try_timeout: Option<String>,
    /// Retries after a refused connection, a 502/503/504 or a reset, for requests without a body
    /// and with an idempotent method (or any method when `retryable = true`).
    pub retries: Option<RawRetry>,
    /// Retry non-idempotent methods too (POST, PATCH). Default: false.
    pub retryable: Option<bool>,
    /// Requests per second allowed on this route, beyond which it answers 429 with
    /// `Retry-After`: `{ rate = 100, burst = 200 }` (burst defaults to the rate).
    pub rate_limit: Option<RawRateLimit>,
}

/// `rate_limit = { rate, burst }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained requests per second.
    pub rate: f64,
    /// Requests allowed at once above the rate.
    pub burst: Option<u32>,
}

/// Retries, with the keys of Dapr's resiliency spec.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// `"constant"` or `"exponential"` (default).
    pub policy: Option<String>,
    /// Constant: the delay. Exponential: the first step. Default: `"25ms"`.
    pub duration: Option<String>,
    /// Exponential: the largest step. Default: `"250ms"`.
    #[serde(rename = "maxInterval")]
    pub max_interval: Option<String>,
    /// Retries per request; -1 for no limit but the retry budget. Default: 2.
    #[serde(rename = "maxRetries")]
    pub max_retries: Option<i64>,
}

/// A per-endpoint circuit breaker, with the keys of Dapr's resiliency spec.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// When to open, e.g. `"consecutiveFailures >= 5"` or
    /// `"requests >= 20 && failureRate > 0.5"`. Default: `"consecutiveFailures >= 5"`.
    pub trip: Option<String>,
    /// How long an open breaker refuses calls. Default: `"5s"`.
    pub timeout: Option<String>,
    /// Trial calls when half-open, and successes needed to close. Default: 1.
    #[serde(rename = "maxRequests")]
    pub max_requests: Option<u32>,
    /// Window after which the closed state's counts start over; `"0s"` never. Default: `"0s"`.
    pub interval: Option<String>,
}

/// `[[upstream]]`: remote endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Name routes refer to.
    pub name: String,
    /// `"IP:PORT"` addresses, or `"name:port"` resolved through DNS every `dns_refresh` (every
    /// address of the name is an endpoint, e.g. a Kubernetes headless service), or tables
    /// `{ address = "IP:PORT", region = "eu-west", zone = "a" }` placing an endpoint.
    pub endpoints: Vec<RawEndpoint>,
    /// How often DNS names in `endpoints` are resolved again. Default: `"5s"`.
    pub dns_refresh: Option<String>,
    /// `"round_robin"` (default), `"least_request"` or `"p2c_ewma"`.
    pub balance: Option<String>,
    /// Circuit breaker per endpoint.
    pub breaker: Option<RawBreaker>,
    /// Most requests in flight to this upstream at once; more are answered 503 at once.
    pub max_concurrency: Option<u32>,
    /// Active health checks of every endpoint.
    pub health: Option<RawHealth>,
    /// Passive outlier ejection: an endpoint that keeps failing real requests is taken out for
    /// a growing time. Off unless this table is present; `outlier = {}` turns it on with the
    /// defaults.
    pub outlier: Option<RawOutlier>,
}

/// One upstream endpoint.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawEndpoint {
    /// `"IP:PORT"` or `"name:port"`, in the gateway's own region.
    Plain(String),
    /// An address with its place.
    Placed(RawPlacedEndpoint),
}

/// `{ address = "IP:PORT", region = "...", zone = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlacedEndpoint {
    /// `"IP:PORT"`.
    pub address: String,
    /// The endpoint's region; default: the gateway's own.
    pub region: Option<String>,
    /// The endpoint's zone within the region (informational for now).
    pub zone: Option<String>,
}

/// `health = { ... }` on an upstream: active HTTP checks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Path of the check; a 2xx answer is healthy. Default: `"/healthz"`.
    pub path: Option<String>,
    /// Time between checks of one endpoint. Default: `"1s"`.
    pub interval: Option<String>,
    /// Deadline of one check. Default: `"1s"`.
    pub timeout: Option<String>,
    /// Consecutive passes that bring an endpoint back. Default: 2.
    pub healthy: Option<u32>,
    /// Consecutive failures that take an endpoint out. Default: 3.
    pub unhealthy: Option<u32>,
}

/// `outlier = { ... }` on an upstream: passive outlier ejection, with the keys of Envoy's
/// outlier detection.
///
/// Every attempt's outcome counts: an answer from the endpoint (1xx to 5xx), or none at all (a
/// refused or failed connection, a reset, a timeout; Envoy's local-origin failures). An endpoint
/// whose count reaches a threshold is ejected: it gets no requests for `base_ejection_time` ×
/// the number of times it was ejected, at most `max_ejection_time`; that number drops by one
/// for every `interval` the endpoint then stays in rotation. Ejection is independent of the
/// endpoint's circuit breaker: either one keeps it out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    /// Consecutive 5xx answers that eject an endpoint; 0 turns this check off. Default: 5.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502, 503 or 504 answers that eject an endpoint (set it below
    /// `consecutive_5xx` to eject sooner for gateway failures than for application errors); 0
    /// turns this check off. Default: 5.
    pub consecutive_gateway_failure: Option<u32>,
    /// Consecutive attempts without an answer (refused or failed connection, reset, timeout)
    /// that eject an endpoint; any answer starts the count over. 0 turns this check off.
    /// Default: 5.
    pub consecutive_local_origin_failure: Option<u32>,
    /// The first ejection's length, and the step by which later ones grow. Default: `"30s"`.
    pub base_ejection_time: Option<String>,
    /// The longest ejection, at least `base_ejection_time`. Default: `"300s"`, or
    /// `base_ejection_time` when that is longer.
    pub max_ejection_time: Option<String>,
    /// Most endpoints ejected at once, as a percentage of the endpoints in rotation: an
    /// endpoint is ejected only while (ejected + 1) × 100 ≤ this × endpoints, as in Envoy, so
    /// with 50 a single endpoint is never ejected and two may lose one. 0 to 100. Default: 50.
    pub max_ejection_percent: Option<u32>,
    /// Time the endpoint must stay in rotation for its ejection multiplier to drop by one.
    /// Default: `"10s"`.
    pub interval: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener, e.g. `"127.0.0.1:9901"`; none when unset. Keep it on
    /// loopback: it is unauthenticated.
    pub listen: Option<String>,
}

/// `[telemetry]`: herd's own logs and traces.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP/HTTP collector spans are exported to, as its base URL:
    /// `"http://127.0.0.1:4318"` (herd posts protobuf to `<url>/v1/traces`). Unset: the
    /// standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` variables
    /// apply, and without them no spans are exported. Only `http://`: keep a collector or an
    /// agent near herd.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of herd's spans. `OTEL_SERVICE_NAME` takes precedence. Default:
    /// `"herd"`.
    pub service_name: Option<String>,
    /// herd's log lines on stderr: `"json"` (one object per line, with `trace_id` inside a
    /// request) or `"text"`. `HERD_LOG_FORMAT` takes precedence. Default: text when stderr is
    /// a terminal, JSON otherwise.
    pub log_format: Option<String>,
}

/// `[logs]`: rotation of the per-service log files under `<data_dir>/logs/`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    /// Size at which a log file is rotated, e.g. `"10MB"`. Default: 10 MB.
    pub max_size: Option<ByteSize>,
    /// How many rotated files to keep beside the live one. Default: 5.
    pub keep: Option<u32>,
}

/// One `[[service]]`: a program run as N instances behind one shared listening socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Unique name; used in the CLI and as the log prefix. Letters, digits, `-` and `_`.
    pub name: String,
    /// The program and its arguments, run directly (no shell). The program is looked up in
    /// `PATH` unless it contains a `/`, in which case it is relative to `cwd`.
    pub command: Vec<String>,
    /// How many instances to run: a number, or `"max"` for one per CPU core. Default: 1.
    pub instances: Option<RawInstances>,
    /// The one address all instances share, e.g. `"127.0.0.1:8000"`. herd binds it and passes the
    /// socket to every instance as fd 3 (systemd socket activation). Port 0 picks a free port.
    pub listen: Option<String>,
    /// How the gateway balances over this service's instances (see `[[upstream]]`).
    pub balance: Option<String>,
    /// Circuit breaker per instance, for the gateway (see `[[upstream]]`).
    pub breaker: Option<RawBreaker>,
    /// `"auto"`: for apps that can only bind a port of their own. Each instance gets a free
    /// loopback port in `PORT` and binds it itself (no shared socket); `herd ls` shows it, and
    /// the gateway balances over these ports. Excludes `listen`.
    pub port: Option<String>,
    /// Working directory of the instances, relative to the config file. Default: its directory.
    pub cwd: Option<String>,
    /// Extra environment variables for the instances (herd's own environment is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// When to restart crashed instances.
    #[serde(default)]
    pub restart: RawRestart,
    /// Restart an instance whose resident memory passes this size, e.g. `"512MB"`.
    pub max_memory: Option<ByteSize>,
    /// How long a stopping instance gets between SIGTERM and SIGKILL. Default: `"5s"`.
    pub kill_timeout: Option<String>,
    /// How herd knows an instance is ready to serve.
    #[serde(default)]
    pub ready: RawReady,
}

/// `instances = 2` or `instances = "max"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawInstances {
    /// A fixed count.
    Count(i64),
    /// A keyword; only `"max"` is accepted.
    Keyword(String),
}

/// `[service.restart]`: exponential backoff with jitter, and a cap on restarts per window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    /// Delay before the first restart after a crash. Default: `"100ms"`.
    pub initial_backoff: Option<String>,
    /// Upper bound of the doubling delay. Default: `"10s"`.
    pub max_backoff: Option<String>,
    /// Restarts allowed within `window` before the instance is marked errored. Default: 10.
    pub max_restarts: Option<u32>,
    /// The sliding window `max_restarts` counts over. Default: `"60s"`.
    pub window: Option<String>,
    /// An instance that ran at least this long resets its backoff. Default: `"1s"`.
    pub min_uptime: Option<String>,
}

/// `[service.ready]`: readiness detection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    /// `"listen"` (default): ready once the instance accepts on the shared socket, seen from
    /// `/proc` (the socket registered in one of its epoll sets, or a thread blocked in accept).
    /// For `port = "auto"` services, `"listen"` means the instance's port accepts connections.
    /// `"notify"`: ready once the instance writes `READY=1` to the fd named by `HERD_READY_FD`.
    /// `"http"`: ready once `GET <path>` on the instance's own port answers 2xx; needs
    /// `port = "auto"`, since on a shared socket a probe cannot choose its instance.
    pub mode: Option<String>,
    /// The health path probed in `"http"` mode. Default: `"/healthz"`.
    pub path: Option<String>,
    /// How long a starting instance may take to become ready. Default: `"30s"`.
    pub timeout: Option<String>,
}

/// `[api]`: the sidecar API server, Dapr's HTTP API v1.0.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Address for callers outside herd's services. Default: `"127.0.0.1:3500"`. Each service's
    /// instances get a loopback listener of their own (in `DAPR_HTTP_PORT`), which tells herd
    /// their app id.
    pub listen: Option<String>,
    /// The app id of requests on `listen` (instances use their service name). Default: `"herd"`.
    pub app_id: Option<String>,
    /// Largest request body accepted, e.g. `"4MB"`. Default: 4 MB (Dapr's default).
    pub max_body: Option<ByteSize>,
    /// Directories of Dapr resource files (`*.yaml`, `*.yml`) whose `Component`s,
    /// `Subscription`s and `Resiliency` documents are loaded beside `[[component]]`,
    /// `[[subscription]]` and `[resiliency]`, as `dapr run --resources-path` does. Relative to
    /// this file.
    #[serde(default)]
    pub resources_path: Vec<String>,
}

/// One `[[component]]`, as in a Dapr component file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComponent {
    /// The name requests address it by, e.g. `statestore` in `/v1.0/state/statestore`.
    pub name: String,
    /// Dapr's component type: `state.embedded` (herd's own, durable, in the data directory),
    /// `state.redis`, `state.postgresql`, `lock.embedded` or `lock.redis`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Settings with Dapr's metadata names, e.g. `{ redisHost = "127.0.0.1:6379" }`; see the
    /// README's component reference for each type's keys.
    #[serde(default)]
    pub metadata: BTreeMap<String, RawMetaValue>,
    /// Services allowed to use the component; empty means all.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A metadata value: Dapr's are strings, TOML's may be numbers or booleans too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawMetaValue {
    /// A string.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl RawMetaValue {
    /// The value as Dapr would see it: a string.
    pub fn into_text(self) -> String {
        match self {
            RawMetaValue::Text(s) => s,
            RawMetaValue::Integer(i) => i.to_string(),
            RawMetaValue::Float(f) => f.to_string(),
            RawMetaValue::Bool(b) => b.to_string(),
        }
    }
}

/// One `[[subscription]]`: messages of `topic` on `pubsub` delivered to `service`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubscription {
    /// The subscribing service; its instances share the messages (one consumer group).
    pub service: String,
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// Path the CloudEvent is POSTed to when no rule matches, e.g. `"/orders"`.
    pub route: String,
    /// Routing rules tried in order: `{ match = 'event.type == "order.created"', path = "/created" }`.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Where messages go that the app dropped or that failed `max_deliveries` times.
    pub dead_letter_topic: Option<String>,
    /// Deliveries to the app in flight at once, at most. Default: 16.
    pub max_in_flight: Option<u32>,
    /// Deliver one message at a time, in publish order. Default: false.
    #[serde(default)]
    pub in_order: bool,
    /// Deliveries of one message before it is dead-lettered (or dropped without a dead-letter
    /// topic). Default: 10.
    pub max_deliveries: Option<u32>,
}

/// A routing rule of a subscription.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// `event.type == "<type>"` (the form herd evaluates).
    #[serde(rename = "match")]
    pub matches: String,
    /// The path for matching events.
    pub path: String,
}

/// `[resiliency]`: named policies and the targets they apply to, with the keys of Dapr's
/// `Resiliency` spec (Dapr `kind: Resiliency` files in `[api] resources_path` are read the same
/// way, their `spec` holding these two tables).
///
/// ```toml
/// [resiliency.policies.timeouts]
/// general = "5s"
/// [resiliency.policies.retries.important]
/// policy = "constant"
/// duration = "1s"
/// maxRetries = 3
/// [resiliency.policies.circuitBreakers.pubsubCB]
/// maxRequests = 1
/// timeout = "30s"
/// trip = "consecutiveFailures > 8"
/// [resiliency.targets.components.statestore.outbound]
/// timeout = "general"
/// retry = "important"
/// circuitBreaker = "pubsubCB"
/// ```
///
/// A target that names no policy of a kind gets the policy of that kind with Dapr's reserved
/// default name, the most specific first: `DefaultStatestoreComponentOutboundRetryPolicy` (or
/// `DefaultPubsubComponentOutbound…`, `DefaultPubsubComponentInbound…`,
/// `DefaultLockComponentOutbound…`), then `DefaultComponentOutboundRetryPolicy` /
/// `DefaultComponentInboundRetryPolicy`, `DefaultComponentRetryPolicy`, `DefaultRetryPolicy`;
/// `DefaultAppRetryPolicy` then `DefaultRetryPolicy` for apps; the same with `Timeout` and
/// `CircuitBreaker` in place of `Retry`. With nothing configured, component calls run once as
/// they are, pub/sub delivery keeps its own redelivery (`max_deliveries`), and service
/// invocation keeps Dapr's built-in retries (3, 1 s apart, only when the app cannot be
/// reached; a retry policy named `DaprBuiltInServiceRetries` replaces them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResiliency {
    /// Named policies.
    #[serde(default)]
    pub policies: RawPolicies,
    /// Which policies apply to what.
    #[serde(default)]
    pub targets: RawTargets,
}

/// `[resiliency.policies]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicies {
    /// Name → how long one attempt may take, e.g. `general = "5s"`. A timed-out attempt counts as
    /// a failure (retried, and counted by the breaker).
    #[serde(default)]
    pub timeouts: BTreeMap<String, String>,
    /// Name → retry policy.
    #[serde(default)]
    pub retries: BTreeMap<String, RawPolicyRetry>,
    /// Name → circuit breaker. Every caller of a target shares the target's breaker.
    #[serde(default, rename = "circuitBreakers")]
    pub circuit_breakers: BTreeMap<String, RawPolicyBreaker>,
}

/// A named retry policy (Dapr's keys and defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyRetry {
    /// `"constant"` (default) or `"exponential"`.
    pub policy: Option<String>,
    /// Constant: the delay between attempts. Exponential: the first step. Default: `"5s"`
    /// (constant), `"500ms"` (exponential).
    pub duration: Option<String>,
    /// Exponential: the largest step (steps double, with full jitter). Default: `"60s"`.
    #[serde(rename = "maxInterval")]
    pub max_interval: Option<String>,
    /// Retries after the first attempt; -1 retries forever. Default: -1.
    #[serde(rename = "maxRetries")]
    pub max_retries: Option<i64>,
}

/// A named circuit breaker (Dapr's keys and defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyBreaker {
    /// Trial calls when half-open, and successes needed to close. Default: 1.
    #[serde(rename = "maxRequests")]
    pub max_requests: Option<u32>,
    /// Window after which the closed state's counts start over; `"0s"` never. Default: `"0s"`.
    pub interval: Option<String>,
    /// How long an open breaker refuses calls before a half-open trial. Default: `"60s"`.
    pub timeout: Option<String>,
    /// When to open, e.g. `"consecutiveFailures > 5"` (default) or
    /// `"requests >= 20 && failureRate > 0.5"`.
    pub trip: Option<String>,
}

/// `[resiliency.targets]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargets {
    /// App id → policies of service invocation calls to that app.
    #[serde(default)]
    pub apps: BTreeMap<String, RawTarget>,
    /// Component name → policies of its calls.
    #[serde(default)]
    pub components: BTreeMap<String, RawComponentTarget>,
}

/// The policies one target uses, by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// A name from `policies.timeouts`.
    pub timeout: Option<String>,
    /// A name from `policies.retries`.
    pub retry: Option<String>,
    /// A name from `policies.circuitBreakers`.
    #[serde(rename = "circuitBreaker")]
    pub circuit_breaker: Option<String>,
}

/// A component target.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComponentTarget {
    /// herd's calls to the component: every state and lock operation, every publish.
    pub outbound: Option<RawTarget>,
    /// herd's calls to the app for the component: pub/sub deliveries. Retries happen in herd;
    /// once they are used up, the message goes to the subscription's dead-letter topic, or
    /// without one back to the broker for redelivery (up to `max_deliveries`).
    pub inbound: Option<RawTarget>,
}

/// `[mesh]`: service invocation across hosts. Each herd serves the apps it runs to its peers on
/// `listen` and asks every peer which apps it runs; an invocation of an app that has no ready
/// instance here goes to a peer that has one, preferring the own region as the gateway does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMesh {
    /// `"IP:PORT"` where peer herds reach this one (invocations forwarded to it, and
    /// `GET /herd/v1/apps`, the list of apps it runs). Required.
    pub listen: String,
    /// The other herds: `"IP:PORT"`, or `"name:port"` resolved through DNS every `refresh` (every
    /// address a name resolves to is a peer, as with a Kubernetes headless service). The own
    /// address may be listed (it is recognised and skipped), so every host can share one list.
    #[serde(default)]
    pub peers: Vec<String>,
    /// How often each peer is asked for its apps and names are resolved again. Default: `"2s"`.
    pub refresh: Option<String>,
    /// This herd's region, announced to peers. Default: `[gateway] region`.
    pub region: Option<String>,
    /// Mutual TLS between herds: this herd presents `cert` and accepts only peers whose
    /// certificate is signed by `ca`. Absent: plain HTTP (for a trusted network only).
    pub tls: Option<RawMeshTls>,
}

/// `[mesh.tls]`: PEM files, relative to the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeshTls {
    /// This herd's certificate chain, presented both as server and as client.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// The certificate authority peers' certificates must chain to.
    pub ca: String,
    /// The DNS name every herd's certificate carries, checked when connecting to a peer (peers
    /// are reached by address, so one shared name stands for "a herd"). Default: `"herd"`.
    pub server_name: Option<String>,
}
