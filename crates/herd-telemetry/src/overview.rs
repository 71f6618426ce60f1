//! The overview the dashboard and `herd monit` show: services and instances, routes and their
//! endpoints, pub/sub and subscriptions, stores, and the last requests.
//!
//! This module holds the view types, serialised as `GET /api/overview` and sent to `herd monit`
//! over the control socket; `overview/aggregate.rs` builds them from the metrics samples
//! ([`build`]). Services come from the supervisor, through the provider the binary hands in.

mod aggregate;

use serde::{Deserialize, Serialize};

use crate::recent::Finished;

pub use aggregate::{Snapshot, Window, build, quantile};

/// Everything the dashboard shows at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Overview {
    /// When the sample was taken, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Seconds between the two samples rates are computed over; 0 before a second sample.
    pub interval_secs: f64,
    /// Services and their instances.
    pub services: Vec<ServiceView>,
    /// Gateway routes.
    pub routes: Vec<RouteView>,
    /// Endpoints of the gateway's upstreams.
    pub endpoints: Vec<EndpointView>,
    /// Publishing, per pub/sub component.
    pub publishers: Vec<PublishView>,
    /// Subscriptions: deliveries per pub/sub, topic and subscribing app.
    pub subscriptions: Vec<SubscriptionView>,
    /// State and lock requests per store, invocations per app.
    pub stores: Vec<StoreView>,
    /// The last finished requests, newest first.
    pub traces: Vec<TraceView>,
}

/// One service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// The shared listen address, if it has one.
    pub listen: Option<String>,
    /// Instances ready now.
    pub ready: usize,
    /// Its instances, in slot order.
    pub instances: Vec<InstanceView>,
}

/// One instance (slot) of a service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstanceView {
    /// The slot number.
    pub id: usize,
    /// The current process, if one runs.
    pub pid: Option<u32>,
    /// The current process's own port (`port = "auto"` services).
    pub port: Option<u16>,
    /// `starting`, `ready`, `backoff`, `errored`, `stopping` or `stopped`.
    pub state: String,
    /// Milliseconds since the current process started.
    pub uptime_ms: Option<u64>,
    /// Restarts of this slot.
    pub restarts: u32,
    /// CPU use, percent of one core.
    pub cpu_percent: f32,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
}

/// One gateway route.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RouteView {
    /// The route, `route[N]` after its place in herd.toml (`none`: requests no route matched).
    pub route: String,
    /// The upstream or service it sends to.
    pub upstream: String,
    /// Requests answered since start.
    pub requests: u64,
    /// Requests per second over the last interval.
    pub rps: f64,
    /// 5xx answers since start.
    pub errors: u64,
    /// 5xx answers per second over the last interval.
    pub error_rps: f64,
    /// Retries since start.
    pub retries: u64,
    /// Median latency over the last interval, milliseconds; none without requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency over the last interval, milliseconds.
    pub p99_ms: Option<f64>,
}

/// One endpoint of an upstream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointView {
    /// The upstream (or service) it belongs to.
    pub upstream: String,
    /// Its address.
    pub endpoint: String,
    /// Circuit breaker: `closed`, `open` or `half-open`.
    pub breaker: String,
    /// Attempts per second over the last interval.
    pub attempts_rps: f64,
    /// Failed attempts since start.
    pub failures: u64,
    /// Outlier ejections since start.
    pub ejections: u64,
    /// The active health check's verdict, when the upstream has one.
    pub healthy: Option<bool>,
}

/// Publishing to one pub/sub component.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishView {
    /// The component.
    pub pubsub: String,
    /// Messages published since start.
    pub published: u64,
    /// Publish requests per second over the last interval.
    pub rps: f64,
    /// Failed publish requests since start.
    pub errors: u64,
}

/// One subscription: a topic consumed by an app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscriptionView {
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// The subscribing app (service).
    pub app: String,
    /// Messages the app accepted since start.
    pub delivered: u64,
    /// Deliveries settled per second over the last interval, whatever the outcome.
    pub rps: f64,
    /// Deliveries to be retried since start.
    pub retries: u64,
    /// Messages moved to the dead-letter topic since start.
    pub dead_letters: u64,
    /// Messages dropped without a dead-letter topic since start.
    pub dropped: u64,
    /// Deliveries posted and not settled yet.
    pub in_flight: u64,
}

/// State or lock requests to one store, or invocations of one app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreView {
    /// `state`, `lock` or `invoke`.
    pub kind: String,
    /// The component, or the invoked app.
    pub store: String,
    /// Requests since start.
    pub requests: u64,
    /// Requests per second over the last interval.
    pub rps: f64,
    /// Requests that failed since start (backend errors, not conflicts or held locks; for
    /// invocations, 5xx answers).
    pub errors: u64,
    /// Median latency over the last interval, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency over the last interval, milliseconds.
    pub p99_ms: Option<f64>,
}

/// One finished request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraceView {
    /// When it finished, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `gateway` or `api`.
    pub source: String,
    /// Route and upstream, or the API's method and route.
    pub target: String,
    /// The W3C trace id, if any.
    pub trace_id: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Latency in milliseconds.
    pub latency_ms: f64,
}

impl TraceView {
    /// `f` as shown, its time placed by `reference` (wall-clock time and `Instant` of one
    /// moment).
    pub fn new(f: &Finished, reference: (std::time::SystemTime, std::time::Instant)) -> Self {
        Self {
            time_ms: f.unix_ms(reference),
            source: f.source.as_str().into(),
            target: f.target.to_string(),
            trace_id: f.trace_id.map(|t| String::from_utf8_lossy(&t).into_owned()),
            status: f.status,
            latency_ms: f.latency.as_secs_f64() * 1000.0,
        }
    }
}

#[cfg(test)]
mod tests;
