//! The gateway's validated configuration: listeners, routes, upstreams, their retry, health
//! and outlier settings, request limits, region preferences and balancing strategies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herd_resilience::{Backoff, BreakerConfig};

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
    /// Deadline for a request's head; for a connection's first request it runs from the
    /// connection's accept, so it also covers a client that sends nothing.
    pub header_read_timeout: Duration,
    /// Most connections without a complete first request; past it the oldest is closed.
    pub max_pending_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_count: 100,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1000 * 1000,
            header_read_timeout: Duration::from_secs(10),
            max_pending_connections: 1024,
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
