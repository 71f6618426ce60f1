//! Circuit breaker: closed → open → half-open → closed, per endpoint.
//!
//! The state machine follows the one Dapr uses (sony/gobreaker): while **closed**, calls pass and
//! their outcomes are counted in a window that starts over every `interval` (never, when zero);
//! when the [`Trip`] condition holds the breaker **opens** and refuses calls for `timeout`; then it
//! is **half-open** and lets `max_requests` trial calls through: that many successes in a row
//! close it, one failure opens it again.
//!
//! Each state change starts a new *generation*; an outcome reported for a permit of an older
//! generation (a slow call that started before the breaker opened) is ignored, so stale results
//! never close or trip the current state. The state sits behind a std mutex: every critical
//! section is a few arithmetic operations and none spans an `.await`.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::future::Guarded;
use crate::trip::{Counts, Trip};
use crate::{BoxError, Classify, Rejected};

/// Breaker settings, named as in Dapr's resiliency spec.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// When to open.
    pub trip: Trip,
    /// Closed-state counting window; zero keeps counting until the breaker trips.
    pub interval: Duration,
    /// How long the breaker stays open.
    pub timeout: Duration,
    /// Trial calls in half-open state, and the successes needed to close.
    pub max_requests: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            trip: Trip::consecutive_failures(5),
            interval: Duration::ZERO,
            timeout: Duration::from_secs(5),
            max_requests: 1,
        }
    }
}

/// The externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open,
    /// A limited number of trial calls pass.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    counts: Counts,
    /// End of the closed window, or of the open period.
    until: Option<Instant>,
    generation: u64,
    /// Trial calls started and not yet finished or dropped, in half-open state.
    trials: u32,
}

/// A shareable circuit breaker (clones share state).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: Arc<BreakerConfig>,
    inner: Arc<Mutex<Inner>>,
}

/// Permission for one call; report its outcome with [`Permit::success`] or [`Permit::failure`].
/// Dropped without either (a cancelled call), it only frees its trial slot.
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    generation: u64,
    reported: bool,
}

/// What reporting an outcome found: the breaker's state afterwards, and whether this outcome
/// changed it (tripped it open, or closed or reopened it from half-open). Learned under the
/// lock the report takes anyway, so callers need not ask for the state again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The state after the outcome was counted.
    pub state: BreakerState,
    /// Whether this outcome caused a state change.
    pub changed: bool,
}

impl Permit {
    /// The call succeeded.
    pub fn success(mut self) -> Recorded {
        self.reported = true;
        self.breaker.record(self.generation, Some(true))
    }

    /// The call failed.
    pub fn failure(mut self) -> Recorded {
        self.reported = true;
        self.breaker.record(self.generation, Some(false))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(self.generation, None);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let until = (!config.interval.is_zero()).then(|| Instant::now() + config.interval);
        Self {
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Inner {
                state: BreakerState::Closed,
                counts: Counts::default(),
                until,
                generation: 0,
                trials: 0,
            })),
        }
    }

    /// The state now (time-driven transitions applied).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.inner.lock().expect("breaker poisoned");
        self.advance(&mut inner, Instant::now());
        inner.state
    }

    /// The counters of the current window.
    pub fn counts(&self) -> Counts {
        let mut inner = self.inner.lock().expect("breaker poisoned");
        self.advance(&mut inner, Instant::now());
        inner.counts
    }

    /// Asks to make a call.
    pub fn acquire(&self) -> Result<Permit, Rejected> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("breaker poisoned");
        self.advance(&mut inner, now);
        match inner.state {
            BreakerState::Open => Err(Rejected::BreakerOpen {
                retry_after: inner.until.map_or(Duration::ZERO, |u| u - now),
            }),
            BreakerState::HalfOpen if inner.trials >= self.config.max_requests => {
                Err(Rejected::BreakerOpen {
                    retry_after: Duration::ZERO,
                })
            }
            state => {
                if state == BreakerState::HalfOpen {
                    inner.trials += 1;
                }
                Ok(Permit {
                    breaker: self.clone(),
                    generation: inner.generation,
                    reported: false,
                })
            }
        }
    }

    fn advance(&self, inner: &mut Inner, now: Instant) {
        match (inner.state, inner.until) {
            (BreakerState::Closed, Some(until)) if now >= until => {
                inner.counts = Counts::default();
                inner.until = Some(now + self.config.interval);
            }
            (BreakerState::Open, Some(until)) if now >= until => {
                self.enter(inner, BreakerState::HalfOpen, now);
            }
            _ => {}
        }
    }

    fn enter(&self, inner: &mut Inner, state: BreakerState, now: Instant) {
        inner.state = state;
        inner.generation += 1;
        inner.counts = Counts::default();
        inner.trials = 0;
        inner.until = match state {
            BreakerState::Open => Some(now + self.config.timeout),
            BreakerState::Closed if !self.config.interval.is_zero() => {
                Some(now + self.config.interval)
            }
            _ => None,
        };
    }

    /// Records an outcome: `Some(true)` success, `Some(false)` failure, `None` cancelled.
    fn record(&self, generation: u64, outcome: Option<bool>) -> Recorded {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("breaker poisoned");
        self.advance(&mut inner, now);
        let unchanged = Recorded {
            state: inner.state,
            changed: false,
        };
        if generation != inner.generation {
            return unchanged;
        }
        if inner.state == BreakerState::HalfOpen {
            inner.trials = inner.trials.saturating_sub(1);
        }
        let Some(success) = outcome else {
            return unchanged;
        };
        let c = &mut inner.counts;
        c.requests += 1;
        if success {
            c.consecutive_successes += 1;
            c.consecutive_failures = 0;
        } else {
            c.total_failures += 1;
            c.consecutive_failures += 1;
            c.consecutive_successes = 0;
        }
        match inner.state {
            BreakerState::Closed if !success && self.config.trip.holds(&inner.counts) => {
                self.enter(&mut inner, BreakerState::Open, now);
            }
            BreakerState::HalfOpen if !success => self.enter(&mut inner, BreakerState::Open, now),
            BreakerState::HalfOpen
                if inner.counts.consecutive_successes >= self.config.max_requests =>
            {
                self.enter(&mut inner, BreakerState::Closed, now);
            }
            _ => {}
        }
        Recorded {
            state: inner.state,
            changed: inner.generation != generation,
        }
    }
}

/// Wraps a service with a [`CircuitBreaker`]; `classify` tells failures from successes.
#[derive(Debug, Clone)]
pub struct BreakerLayer<C> {
    breaker: CircuitBreaker,
    classify: C,
}

impl<C> BreakerLayer<C> {
    /// A layer over `breaker` (shared by every service it wraps).
    pub fn new(breaker: CircuitBreaker, classify: C) -> Self {
        Self { breaker, classify }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`BreakerLayer`].
#[derive(Debug, Clone)]
pub struct Breaker<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
}

impl<S, C, Req> Service<Req> for Breaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.acquire() {
            Ok(permit) => BreakerFuture {
                inner: Guarded::called(self.inner.call(req)),
                permit: Some(permit),
                classify: self.classify.clone(),
            },
            Err(rejected) => BreakerFuture {
                inner: Guarded::refused(rejected),
                permit: None,
                classify: self.classify.clone(),
            },
        }
    }
}

pin_project! {
    /// Reports the call's outcome to the breaker when it completes.
    pub struct BreakerFuture<F, C> {
        #[pin]
        inner: Guarded<F>,
        permit: Option<Permit>,
        classify: C,
    }
}

impl<F, C, T, E> std::future::Future for BreakerFuture<F, C>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(permit) = this.permit.take() {
            if this.classify.is_failure(&result) {
                permit.failure();
            } else {
                permit.success();
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests;
