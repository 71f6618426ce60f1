//! One resolved resilience policy (a timeout, a retry and a circuit breaker, each optional) and
//! [`Policy::run`], which executes an operation under it.
//!
//! An attempt goes: breaker check (an open breaker refuses at once and ends the run, as Dapr
//! treats an open breaker as a permanent error) → the operation, under the per-attempt timeout →
//! the caller's [`Outcome`] for the result (a timeout is a [`Outcome::Failure`]) → the breaker
//! learns success or failure → a retryable failure is tried again after the retry's backoff,
//! until `max_retries` retries were made. The last attempt's result is returned as it is, so a
//! caller that classified an `Ok` answer (an HTTP 503) as a failure still gets that answer.
//!
//! Every decision is counted in `herd_resiliency_activations_total` and logged: a retry at debug,
//! a breaker state change at info. `herd_resiliency_cb_state` holds one series per breaker state
//! of each target, 1 for the current state (Dapr's `dapr_resiliency_cb_state`).

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::breaker::{BreakerState, CircuitBreaker};
use crate::{Backoff, Rejected};

/// How the caller reads one attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Success,
    /// The target failed (a backend error, an HTTP 5xx): a breaker failure, retried by a
    /// configured retry policy.
    Failure,
    /// The target could not be reached at all (connection refused or reset before an answer): a
    /// breaker failure, retried by configured policies and by herd's built-in retries.
    Unreachable,
    /// The request itself was refused (an ETag conflict, an HTTP 4xx): returned as it is,
    /// never retried, and a success as far as the breaker is concerned (the target answered).
    Permanent,
}

impl Outcome {
    /// How an HTTP answer counts: 5xx a failure, 4xx the caller's own (permanent), else success.
    /// A request that got no answer at all is [`Outcome::Unreachable`].
    pub fn from_http_status(status: u16) -> Self {
        match status {
            500..=599 => Outcome::Failure,
            400..=499 => Outcome::Permanent,
            _ => Outcome::Success,
        }
    }
}

/// Why [`Policy::run`] returned without the operation's own result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError<E> {
    /// The last attempt failed with this error.
    #[error("{0}")]
    Failed(E),
    /// The last attempt did not finish within the policy's timeout.
    #[error("timed out after {}ms", .0.as_millis())]
    TimedOut(Duration),
    /// The circuit breaker refused the call without making it.
    #[error("circuit breaker is open")]
    BreakerOpen(Rejected),
}

/// Which way a call goes, as Dapr's `flow_direction` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// herd calls a component or another app.
    Outbound,
    /// herd calls its own app (pub/sub delivery).
    Inbound,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Which failures a retry applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// [`Outcome::Failure`] and [`Outcome::Unreachable`] (a configured policy).
    Failures,
    /// [`Outcome::Unreachable`] only (herd's built-in service invocation retries).
    Unreachable,
}

/// A retry policy: Dapr's `policy`, `duration`, `maxInterval`, `maxRetries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Retries after the first attempt; `None` retries forever (Dapr's `-1`).
    pub max_retries: Option<u32>,
}

/// A part of a policy together with the name it was configured under.
#[derive(Debug, Clone)]
pub struct Named<T> {
    /// The policy's name (`DefaultRetryPolicy`, `retryForever`, ...).
    pub name: String,
    /// Its settings.
    pub value: T,
}

#[derive(Debug)]
struct SharedBreaker {
    name: String,
    breaker: CircuitBreaker,
    /// The state last reported in logs and metrics.
    seen: AtomicU8,
}

/// The policy for one target: every caller of the target shares it (and so its breaker).
#[derive(Debug)]
pub struct Policy {
    target: String,
    direction: Direction,
    timeout: Option<Named<Duration>>,
    retry: Option<(Named<Retry>, RetryOn)>,
    breaker: Option<SharedBreaker>,
}

const STATES: [(BreakerState, &str); 3] = [
    (BreakerState::Closed, "closed"),
    (BreakerState::HalfOpen, "half-open"),
    (BreakerState::Open, "open"),
];

fn state_code(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

fn state_name(state: BreakerState) -> &'static str {
    STATES[state_code(state) as usize].1
}

impl Policy {
    /// A policy that lets every call through once, as it is.
    pub fn none(target: impl Into<String>, direction: Direction) -> Self {
        Self {
            target: target.into(),
            direction,
            timeout: None,
            retry: None,
            breaker: None,
        }
    }

    /// A policy for `target` (a label such as `component_statestore` or `app_orders`).
    pub fn new(
        target: impl Into<String>,
        direction: Direction,
        timeout: Option<Named<Duration>>,
        retry: Option<(Named<Retry>, RetryOn)>,
        breaker: Option<Named<crate::BreakerConfig>>,
    ) -> Self {
        let policy = Self {
            target: target.into(),
            direction,
            timeout,
            retry,
            breaker: breaker.map(|b| SharedBreaker {
                name: b.name,
                breaker: CircuitBreaker::new(b.value),
                seen: AtomicU8::new(0),
            }),
        };
        if let Some(b) = &policy.breaker {
            policy.publish_state(b, BreakerState::Closed);
        }
        policy
    }

    /// The target label, e.g. `component_statestore`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// True when the policy has nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.timeout.is_none() && self.retry.is_none() && self.breaker.is_none()
    }

    /// The per-attempt timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.as_ref().map(|t| t.value)
    }

    /// The retry, if any, and the failures it applies to.
    pub fn retry(&self) -> Option<(Retry, RetryOn)> {
        self.retry.as_ref().map(|(r, on)| (r.value, *on))
    }

    /// The breaker's state now, if the policy has one.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.breaker.as_ref().map(|b| {
            let state = b.breaker.state();
            self.note_state(b, state);
            state
        })
    }

    /// Runs `op` under the policy; `op` gets the attempt number (0 first). `classify` reads each
    /// attempt's result. Returns the last attempt's value, or why there is none.
    pub async fn run<T, E, F, Fut, C>(&self, mut op: F, classify: C) -> Result<T, RunError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&Result<T, E>) -> Outcome,
    {
        let mut attempt = 0u32;
        loop {
            let permit = match &self.breaker {
                None => None,
                Some(b) => match b.breaker.acquire() {
                    Ok(permit) => {
                        self.note_state(b, b.breaker.state());
                        Some(permit)
                    }
                    Err(rejected) => {
                        self.count("circuit_breaker", &b.name, "refused");
                        self.note_state(b, b.breaker.state());
                        return Err(RunError::BreakerOpen(rejected));
                    }
                },
            };
            let result = match &self.timeout {
                None => Ok(op(attempt).await),
                Some(t) => match tokio::time::timeout(t.value, op(attempt)).await {
                    Ok(r) => Ok(r),
                    Err(_) => {
                        self.count("timeout", &t.name, "timed_out");
                        tracing::debug!(
                            target_name = %self.target,
                            "resiliency: attempt {} timed out after {}ms (policy {})",
                            attempt + 1,
                            t.value.as_millis(),
                            t.name
                        );
                        Err(t.value)
                    }
                },
            };
            let outcome = match &result {
                Ok(r) => classify(r),
                Err(_) => Outcome::Failure,
            };
            let failed = matches!(outcome, Outcome::Failure | Outcome::Unreachable);
            if let (Some(b), Some(permit)) = (&self.breaker, permit) {
                let recorded = if failed {
                    permit.failure()
                } else {
                    permit.success()
                };
                self.note_state(b, recorded.state);
            }
            if let Some(delay) = self.retry_delay(outcome, attempt) {
                let (retry, _) = self.retry.as_ref().expect("a delay needs a retry");
                self.count("retry", &retry.name, "retried");
                tracing::debug!(
                    target_name = %self.target,
                    "resiliency: attempt {} failed; retry {} in {}ms (policy {})",
                    attempt + 1,
                    attempt + 1,
                    delay.as_millis(),
                    retry.name
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
                continue;
            }
            return match result {
                Ok(r) => r.map_err(RunError::Failed),
                Err(after) => Err(RunError::TimedOut(after)),
            };
        }
    }

    /// The delay before retrying after `outcome` of attempt `attempt`, or `None` to stop.
    fn retry_delay(&self, outcome: Outcome, attempt: u32) -> Option<Duration> {
        let (retry, on) = self.retry.as_ref()?;
        let retryable = match outcome {
            Outcome::Success | Outcome::Permanent => false,
            Outcome::Unreachable => true,
            Outcome::Failure => *on == RetryOn::Failures,
        };
        if !retryable || retry.value.max_retries.is_some_and(|max| attempt >= max) {
            return None;
        }
        Some(retry.value.backoff.delay(attempt, fastrand::f64()))
    }

    fn count(&self, kind: &'static str, policy: &str, status: &'static str) {
        metrics::counter!(
            "herd_resiliency_activations_total",
            "target" => self.target.clone(),
            "flow_direction" => self.direction.as_str(),
            "policy" => policy.to_string(),
            "kind" => kind,
            "status" => status,
        )
        .increment(1);
    }

    /// Logs and counts a state change the breaker went through since last seen.
    fn note_state(&self, b: &SharedBreaker, state: BreakerState) {
        let code = state_code(state);
        let before = b.seen.swap(code, Ordering::Relaxed);
        if before == code {
            return;
        }
        let from = STATES[before as usize].1;
        let to = state_name(state);
        tracing::info!(
            target_name = %self.target,
            "resiliency: circuit breaker {} of {} ({}) went from {from} to {to}",
            b.name,
            self.target,
            self.direction.as_str()
        );
        self.count("circuit_breaker", &b.name, to);
        self.publish_state(b, state);
    }

    fn publish_state(&self, b: &SharedBreaker, state: BreakerState) {
        for (s, name) in STATES {
            metrics::gauge!(
                "herd_resiliency_cb_state",
                "target" => self.target.clone(),
                "flow_direction" => self.direction.as_str(),
                "policy" => b.name.clone(),
                "status" => name,
            )
            .set(if s == state { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests;
