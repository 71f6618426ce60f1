//! Resilience as tower layers, shared by everything in herd that calls something that can fail:
//! the gateway's upstreams, service invocation, pub/sub delivery and backend clients.
//!
//! | module | layer | what it does | how it differs from its neighbour |
//! |---|---|---|---|
//! | `breaker` | [`BreakerLayer`] | fails fast while an endpoint is known bad | decides *whether* to call at all |
//! | `retry` | [`RetryPolicy`] for `tower::retry` | calls again after a failure, with jittered backoff, bounded by a budget | decides *how often* to call |
//! | `rate_limit` | [`RateLimitLayer`] | refuses calls beyond a token-bucket rate | limits callers, not the callee's health |
//!
//! Timeouts and concurrency limits come from tower itself (`tower::timeout`,
//! `tower::limit::ConcurrencyLimit` under `tower::load_shed` to refuse rather than queue).
//! Names and semantics follow Dapr's resiliency spec where they overlap (`maxRequests`,
//! `interval`, `timeout`, `trip`; `constant` / `exponential` retries with `maxRetries`).
//!
//! Named policies as in Dapr's Resiliency spec sit on top: [`Policies`] resolves a target (an
//! app, a component's outbound calls, its inbound deliveries) to a shared [`Policy`], whose
//! [`Policy::run`] executes an operation with a per-attempt timeout, retries and a breaker.
//!
//! Refusals are [`Rejected`] errors carrying a retry-after hint, so a caller can answer 503 or
//! 429 with `Retry-After` without guessing.

#![forbid(unsafe_code)]

mod breaker;
mod future;
#[doc(hidden)]
pub mod fuzzing;
mod policies;
mod policy;
mod rate_limit;
mod retry;
mod trip;

use std::time::Duration;

pub use breaker::{
    Breaker, BreakerConfig, BreakerLayer, BreakerState, CircuitBreaker, Permit, Recorded,
};
pub use future::Guarded;
pub use policies::{
    BUILT_IN_SERVICE_RETRIES, BUILT_IN_SERVICE_RETRY, ComponentTargets, Policies, Resiliency,
    TargetPolicies,
};
pub use policy::{Direction, Named, Outcome, Policy, Retry, RetryOn, RunError};
pub use rate_limit::{RateLimit, RateLimitLayer, TokenBucket};
pub use retry::{Backoff, RetryPolicy, retry_budget};
pub use trip::{Counts, Trip, TripError};

/// The error type of the layers: whatever the inner service failed with, or a [`Rejected`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Decides whether a call's outcome counts as a failure (for breakers and retries).
pub trait Classify<Res, E> {
    /// `true` when `result` is a failure.
    fn is_failure(&self, result: &Result<Res, E>) -> bool;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> bool,
{
    fn is_failure(&self, result: &Result<Res, E>) -> bool {
        self(result)
    }
}

/// A call refused by a layer without reaching the inner service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The circuit breaker is open (or half-open with all trial calls taken).
    #[error("circuit breaker open; retry in {}ms", retry_after.as_millis())]
    BreakerOpen {
        /// When the breaker will let a trial call through.
        retry_after: Duration,
    },
    /// The rate limit is exhausted.
    #[error("rate limit exceeded; retry in {}ms", retry_after.as_millis())]
    RateLimited {
        /// When the next token is due.
        retry_after: Duration,
    },
}

impl Rejected {
    /// How long the caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Rejected::BreakerOpen { retry_after } | Rejected::RateLimited { retry_after } => {
                *retry_after
            }
        }
    }
}
