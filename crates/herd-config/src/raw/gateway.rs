//! The gateway's tables as serde reads them: `[gateway]` and its listeners, `[[route]]`,
//! `[[upstream]]`, and the retry and breaker tables (a service's `breaker` is the same table).
//! Checked in `gateway.rs` (breakers in `check.rs`).

use bytesize::ByteSize;
use serde::Deserialize;

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
    /// Most connections that have not yet sent a complete first request; past it the one
    /// waiting longest is closed (slowloris). Default: 1024.
    pub max_pending_connections: Option<usize>,
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
