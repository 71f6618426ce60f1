//! `[resiliency]` as serde reads it: named policies and the targets they apply to, with the
//! keys of Dapr's `Resiliency` spec. Checked in `resiliency.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

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
