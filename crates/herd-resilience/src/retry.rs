//! Retries for `tower::retry::Retry`: jittered backoff, a maximum count, and a budget.
//!
//! A retry budget keeps retries a small share of traffic: every original request deposits into
//! `tower`'s `TpsBudget`, every retry withdraws, and a floor of retries per second stays
//! available at low traffic. When an upstream is down, retries therefore add at most that share
//! of load instead of multiplying it.
//!
//! Exponential backoff uses *full jitter* (a uniform delay between zero and the capped step),
//! which spreads synchronized clients best; `tower`'s own backoff adds jitter on top of the step
//! instead, so the delay is computed here. Whether a request may be retried at all (idempotent
//! method, a buffered body) is the caller's decision: it builds the policy with `max_retries: 0`,
//! or a request type whose clone fails, when it may not.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::Classify;

/// Delay between attempts, as in Dapr's `policy: constant | exponential`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay every time (`duration`).
    Constant(Duration),
    /// Doubling from `initial`, capped at `max` (`maxInterval`), with full jitter.
    Exponential {
        /// The first step.
        initial: Duration,
        /// The largest step.
        max: Duration,
    },
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based); `jitter` is uniform in `[0, 1)`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        match *self {
            Backoff::Constant(d) => d,
            Backoff::Exponential { initial, max } => {
                let step = initial
                    .saturating_mul(2u32.saturating_pow(attempt.min(31)))
                    .min(max);
                step.mul_f64(jitter.clamp(0.0, 1.0))
            }
        }
    }
}

/// A budget allowing retries of `percent` of the requests of the last `ttl`, plus `floor` per
/// second; share one per route or target.
pub fn retry_budget(ttl: Duration, floor: u32, percent: f32) -> Arc<TpsBudget> {
    Arc::new(TpsBudget::new(ttl, floor, percent))
}

/// A `tower::retry::Policy`; clone it per route or target (clones share the budget).
#[derive(Debug, Clone)]
pub struct RetryPolicy<C> {
    max_retries: Option<u32>,
    backoff: Backoff,
    budget: Arc<TpsBudget>,
    classify: C,
    attempt: u32,
}

impl<C> RetryPolicy<C> {
    /// Up to `max_retries` retries (`None`: unlimited, Dapr's `-1`; the budget still bounds them)
    /// with `backoff`, drawing on `budget`. `classify` says which outcomes are worth a retry.
    pub fn new(
        max_retries: Option<u32>,
        backoff: Backoff,
        budget: Arc<TpsBudget>,
        classify: C,
    ) -> Self {
        Self {
            max_retries,
            backoff,
            budget,
            classify,
            attempt: 0,
        }
    }

    /// Retries made so far for this request.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

impl<Req, Res, E, C> Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: Clone,
    C: Classify<Res, E>,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if !self.classify.is_failure(result) {
            return None;
        }
        if self.max_retries.is_some_and(|max| self.attempt >= max) {
            return None;
        }
        if !self.budget.withdraw() {
            return None;
        }
        let delay = self.backoff.delay(self.attempt, fastrand::f64());
        self.attempt += 1;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if self.attempt == 0 {
            self.budget.deposit();
        }
        if self.max_retries == Some(0) {
            return None;
        }
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tower::{Service, ServiceExt};

    use super::*;
    use crate::BoxError;

    fn flaky(
        failures: u32,
    ) -> (
        Arc<AtomicU32>,
        impl Service<(), Response = u32, Error = BoxError> + Clone,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let svc = tower::service_fn(move |()| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failures {
                    Err::<u32, BoxError>("unavailable".into())
                } else {
                    Ok(n)
                }
            }
        });
        (calls, svc)
    }

    fn is_err(r: &Result<u32, BoxError>) -> bool {
        r.is_err()
    }

    #[test]
    fn exponential_backoff_uses_full_jitter_under_the_cap() {
        let b = Backoff::Exponential {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0, 0.5), Duration::from_millis(50));
        assert_eq!(b.delay(3, 0.75), Duration::from_millis(600));
        assert_eq!(b.delay(10, 0.5), Duration::from_millis(500));
        assert_eq!(b.delay(2, 0.0), Duration::ZERO);
        assert_eq!(
            Backoff::Constant(Duration::from_secs(1)).delay(9, 0.3),
            Duration::from_secs(1)
        );
    }

    /// A service failing `failures` times, wrapped in a retry with `max` retries and a constant
    /// 10 ms backoff.
    fn retried(
        failures: u32,
        max: Option<u32>,
        budget: Arc<TpsBudget>,
    ) -> (
        Arc<AtomicU32>,
        impl Service<(), Response = u32, Error = BoxError> + Clone,
    ) {
        let (calls, svc) = flaky(failures);
        let backoff = Backoff::Constant(Duration::from_millis(10));
        let policy = RetryPolicy::new(max, backoff, budget, is_err);
        (calls, tower::retry::Retry::new(policy, svc))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_within_max() {
        let budget = retry_budget(Duration::from_secs(10), 10, 0.2);
        let (calls, retry) = retried(2, Some(3), budget);
        assert_eq!(retry.oneshot(()).await.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_retries() {
        let budget = retry_budget(Duration::from_secs(10), 10, 0.2);
        let (calls, retry) = retried(10, Some(2), budget);
        assert!(retry.oneshot(()).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_budget_stops_retries_even_without_a_maximum() {
        // No floor and 10 %: ten requests earn one retry between them.
        let (calls, retry) = retried(1000, None, retry_budget(Duration::from_secs(10), 0, 0.1));
        for _ in 0..10 {
            assert!(retry.clone().oneshot(()).await.is_err());
        }
        let total = calls.load(Ordering::SeqCst);
        assert!(
            (10..=11).contains(&total),
            "10 requests and at most 1 retry, got {total}"
        );
    }
}
