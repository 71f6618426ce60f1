//! One endpoint of a pool: its statistics, breaker, ejection counts and metrics, and [`Pick`],
//! an attempt in progress on it.
//!
//! The statistics are requests in flight and a latency average that jumps up to any slower
//! sample at once and decays toward faster ones (peak EWMA, as in Finagle and linkerd), so an
//! endpoint that turns slow is avoided immediately. Taking an endpoint counts it in flight and
//! takes a permit of its breaker; a [`Pick`] dropped ends the count, and one reported tells the
//! breaker and the ejection counts how the attempt went.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use herd_config::BreakerConfig;
use herd_resilience::{BreakerState, CircuitBreaker, Permit};

use crate::decisions::{Change, Decisions, Skip};
use crate::outlier::{Attempt, Detector, Ejector};

/// Per-endpoint statistics, breaker and metric handles.
pub struct EndpointStats {
    in_flight: AtomicU32,
    ewma_us: AtomicU64,
    /// `None` in a pool without breakers (one address standing for many instances).
    breaker: Option<CircuitBreaker>,
    successes: metrics::Counter,
    failures: metrics::Counter,
    breaker_state: metrics::Gauge,
    /// The pool's ejector and this endpoint's counts, when the pool ejects outliers.
    outlier: Option<(Arc<Ejector>, Arc<Detector>)>,
}

impl std::fmt::Debug for EndpointStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointStats")
            .field("in_flight", &self.in_flight)
            .field("ewma_us", &self.ewma_us)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl EndpointStats {
    /// The statistics of `addr` in the pool named `pool`, with a breaker set up as `breaker` and
    /// counts for `ejector` when given.
    pub(crate) fn new(
        breaker: Option<&BreakerConfig>,
        pool: &str,
        addr: SocketAddr,
        ejector: Option<&Arc<Ejector>>,
    ) -> Self {
        let attempts = |outcome: &'static str| {
            metrics::counter!(
                "herd_gateway_endpoint_attempts_total",
                "upstream" => pool.to_string(),
                "endpoint" => addr.to_string(),
                "outcome" => outcome
            )
        };
        Self {
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            breaker: breaker.map(|b| CircuitBreaker::new(b.clone())),
            successes: attempts("success"),
            failures: attempts("failure"),
            breaker_state: metrics::gauge!(
                "herd_gateway_breaker_state",
                "upstream" => pool.to_string(),
                "endpoint" => addr.to_string()
            ),
            outlier: ejector.map(|e| (e.clone(), e.detector(addr))),
        }
    }

    /// Why this endpoint cannot be chosen now, if it cannot: ejected (one atomic load, and the
    /// clock, cached in `now`, only if it was ever ejected) or its breaker open.
    pub(crate) fn unavailable(&self, now: &mut Option<u64>) -> Option<Skip> {
        if let Some((ejector, d)) = &self.outlier
            && ejector.is_ejected(d, now)
        {
            return Some(Skip::Ejected);
        }
        self.breaker
            .as_ref()
            .is_some_and(|b| b.state() == BreakerState::Open)
            .then_some(Skip::BreakerOpen)
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The p2c cost: latency × (in flight + 1); nothing without samples.
    pub(crate) fn cost(&self) -> u64 {
        let load = u64::from(self.in_flight.load(Ordering::Relaxed)) + 1;
        self.ewma_us.load(Ordering::Relaxed).saturating_mul(load)
    }

    /// Adds a latency sample: the average jumps up to a slower one, and decays a quarter of the
    /// way toward a faster one.
    pub(crate) fn observe(&self, micros: u64) {
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if micros >= old {
            micros
        } else {
            old - (old - micros) / 4
        };
        self.ewma_us.store(new, Ordering::Relaxed);
    }

    /// Takes the endpoint at `addr` for one attempt, with a permit of its breaker (none without
    /// one); `None` when the breaker is half-open and its trial calls are taken.
    pub(crate) fn take(self: &Arc<Self>, addr: SocketAddr) -> Option<Pick> {
        let permit = match self.breaker.as_ref().map(|b| b.acquire()) {
            None => None,
            Some(acquired) => Some(acquired.ok()?),
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            addr,
            stats: self.clone(),
            permit,
            started: Instant::now(),
        })
    }
}

/// A chosen endpoint; report the outcome with [`Pick::report`]. Dropping it unreported (a
/// cancelled attempt, or a failure that was the client's) ends its accounting without telling
/// the breaker or the ejection counts anything.
#[derive(Debug)]
pub struct Pick {
    /// The address.
    pub addr: SocketAddr,
    stats: Arc<EndpointStats>,
    permit: Option<Permit>,
    started: Instant,
}

impl Pick {
    /// The attempt ended as `attempt`; an answer below 500 is a success. Records the latency of
    /// a success, tells the breaker (exporting its state: 0 closed, 1 open, 2 half-open) and the
    /// ejection counts, and notes in `decisions` what this changed.
    pub fn report(mut self, attempt: Attempt, decisions: &mut Decisions) {
        let success = attempt.succeeded();
        let s = &*self.stats;
        if success {
            s.observe(self.started.elapsed().as_micros().min(u64::MAX as u128) as u64);
            s.successes.increment(1);
        } else {
            s.failures.increment(1);
        }
        if let Some(p) = self.permit.take() {
            let recorded = if success { p.success() } else { p.failure() };
            s.breaker_state.set(match recorded.state {
                BreakerState::Closed => 0.0,
                BreakerState::Open => 1.0,
                BreakerState::HalfOpen => 2.0,
            });
            if recorded.changed {
                match recorded.state {
                    BreakerState::Open => decisions.change(self.addr, Change::BreakerOpened),
                    BreakerState::Closed => decisions.change(self.addr, Change::BreakerClosed),
                    BreakerState::HalfOpen => {}
                }
            }
        }
        if let Some((ejector, d)) = &s.outlier {
            if success {
                d.succeeded();
            } else if let Some(time) =
                ejector.failed(self.addr, d, attempt, tokio::time::Instant::now())
            {
                let ms = u32::try_from(time.as_millis()).unwrap_or(u32::MAX);
                decisions.change(self.addr, Change::Ejected(ms));
            }
        }
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = EndpointStats::new(
            Some(&BreakerConfig::default()),
            "test",
            SocketAddr::from(([127, 0, 0, 1], 1)),
            None,
        );
        s.observe(1000);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 1000);
        s.observe(200);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 800);
        s.observe(5000);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 5000);
    }
}
