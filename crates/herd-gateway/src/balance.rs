//! Choosing an endpoint: round-robin, least-request, or power-of-two-choices over peak-EWMA
//! latency.
//!
//! A [`Pool`] watches a list of addresses (a herd service's ready instances, or an upstream's
//! static list) and keeps per-address statistics: requests in flight, and a latency average
//! that jumps up to any slower sample at once and decays toward faster ones (peak EWMA, as in
//! Finagle and linkerd), so an endpoint that turns slow is avoided immediately. The p2c cost is
//! latency × (in flight + 1); an endpoint without samples costs nothing, which sends it a probe.
//! The statistics map is behind a std mutex held for a lookup, never across an `.await`.
//!
//! Every endpoint also has a circuit breaker (`herd-resilience`): an open breaker takes its
//! endpoint out of the choice until it is half-open, which is passive outlier ejection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use herd_config::{Balance, BreakerConfig};
use herd_resilience::{BreakerState, CircuitBreaker, Permit};
use tokio::sync::watch;

/// Per-endpoint statistics, breaker and metric handles.
pub struct EndpointStats {
    in_flight: AtomicU32,
    ewma_us: AtomicU64,
    breaker: CircuitBreaker,
    successes: metrics::Counter,
    failures: metrics::Counter,
    breaker_state: metrics::Gauge,
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
    fn new(breaker: &BreakerConfig, pool: &str, addr: SocketAddr) -> Self {
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
            breaker: CircuitBreaker::new(breaker.clone()),
            successes: attempts("success"),
            failures: attempts("failure"),
            breaker_state: metrics::gauge!(
                "herd_gateway_breaker_state",
                "upstream" => pool.to_string(),
                "endpoint" => addr.to_string()
            ),
        }
    }

    fn cost(&self) -> u64 {
        let load = u64::from(self.in_flight.load(Ordering::Relaxed)) + 1;
        self.ewma_us.load(Ordering::Relaxed).saturating_mul(load)
    }

    fn observe(&self, micros: u64) {
        let old = self.ewma_us.load(Ordering::Relaxed);
        let new = if micros >= old {
            micros
        } else {
            old - (old - micros) / 4
        };
        self.ewma_us.store(new, Ordering::Relaxed);
    }
}

/// A set of endpoints and how to choose among them.
#[derive(Debug)]
pub struct Pool {
    /// `service hello` or `upstream backend`, for errors and logs.
    pub name: String,
    endpoints: watch::Receiver<Arc<Vec<SocketAddr>>>,
    strategy: Balance,
    breaker: BreakerConfig,
    places: Places,
    admission: Option<Arc<tokio::sync::Semaphore>>,
    next: AtomicUsize,
    stats: Mutex<HashMap<SocketAddr, Arc<EndpointStats>>>,
}

/// Region priorities of a pool's endpoints (all 0 when the pool has no placed endpoints).
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// Priority level of placed addresses; others are level 0.
    pub level: HashMap<SocketAddr, usize>,
    /// Endpoints configured per level, the denominator of a level's health.
    pub configured: Vec<usize>,
    /// Envoy's overprovisioning factor.
    pub overprovisioning: f64,
}

impl Places {
    fn level_of(&self, a: &SocketAddr) -> usize {
        self.level.get(a).copied().unwrap_or(0)
    }

    /// Shares of traffic per level, as Envoy computes priority load: each level takes
    /// `min(1, health × overprovisioning)` of what the levels before it left, and the shares are
    /// scaled up to a whole when every level together is short.
    fn shares(&self, available: &[usize]) -> Vec<f64> {
        let mut left = 1.0f64;
        let mut shares: Vec<f64> = available
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let total = self.configured.get(i).copied().unwrap_or(0).max(n);
                let health = if total == 0 {
                    0.0
                } else {
                    n as f64 / total as f64
                };
                let share = (health * self.overprovisioning).min(1.0).min(left);
                left -= share;
                share
            })
            .collect();
        let sum: f64 = shares.iter().sum();
        if sum > 0.0 {
            shares.iter_mut().for_each(|s| *s /= sum);
        }
        shares
    }
}

/// Why no endpoint was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    /// The pool has no addresses (no ready instance).
    Empty,
    /// Every address was excluded (already tried).
    AllTried,
    /// Every remaining endpoint's breaker is open.
    BreakersOpen,
}

/// A chosen endpoint; report the outcome with [`Pick::succeeded`] or [`Pick::failed`].
/// Dropping it ends the request's accounting.
#[derive(Debug)]
pub struct Pick {
    /// The address.
    pub addr: SocketAddr,
    stats: Arc<EndpointStats>,
    permit: Option<Permit>,
    started: Instant,
}

impl Pick {
    /// The call succeeded: records its latency and tells the breaker.
    pub fn succeeded(mut self) {
        self.stats
            .observe(self.started.elapsed().as_micros().min(u64::MAX as u128) as u64);
        if let Some(p) = self.permit.take() {
            p.success();
        }
        self.record(true);
    }

    /// The call failed: tells the breaker.
    pub fn failed(mut self) {
        if let Some(p) = self.permit.take() {
            p.failure();
        }
        self.record(false);
    }

    /// Counts the attempt and exports the breaker's state (0 closed, 1 open, 2 half-open).
    fn record(&self, success: bool) {
        let s = &self.stats;
        if success {
            s.successes.increment(1);
        } else {
            s.failures.increment(1);
        }
        s.breaker_state.set(match s.breaker.state() {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        });
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool over the addresses in `endpoints`, each guarded by a breaker set up as `breaker`.
    pub fn new(
        name: String,
        endpoints: watch::Receiver<Arc<Vec<SocketAddr>>>,
        strategy: Balance,
        breaker: BreakerConfig,
        places: Places,
    ) -> Self {
        Self {
            name,
            endpoints,
            strategy,
            breaker,
            places,
            admission: None,
            next: AtomicUsize::new(0),
            stats: Mutex::new(HashMap::new()),
        }
    }

    /// Caps the requests in flight to this pool at `n`.
    pub fn with_concurrency_limit(mut self, n: Option<u32>) -> Self {
        self.admission = n.map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize)));
        self
    }

    /// Admits one request under the concurrency limit (always, without one); `None` when the
    /// pool is at its limit. The permit is held until the response head arrived.
    pub fn admit(&self) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
        match &self.admission {
            None => Some(None),
            Some(s) => s.clone().try_acquire_owned().ok().map(Some),
        }
    }

    /// The current addresses.
    pub fn addresses(&self) -> Arc<Vec<SocketAddr>> {
        self.endpoints.borrow().clone()
    }

    fn stats_of(&self, addrs: &[SocketAddr]) -> Vec<Arc<EndpointStats>> {
        let mut map = self.stats.lock().expect("stats poisoned");
        if map.len() > addrs.len() * 2 + 16 {
            map.retain(|a, _| addrs.contains(a));
        }
        addrs
            .iter()
            .map(|a| {
                map.entry(*a)
                    .or_insert_with(|| Arc::new(EndpointStats::new(&self.breaker, &self.name, *a)))
                    .clone()
            })
            .collect()
    }

    /// Chooses an endpoint other than those in `exclude` (already tried) whose breaker lets a
    /// call through.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Result<Pick, NoEndpoint> {
        let all = self.addresses();
        if all.is_empty() {
            return Err(NoEndpoint::Empty);
        }
        let mut candidates: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| !exclude.contains(a))
            .collect();
        if candidates.is_empty() {
            return Err(NoEndpoint::AllTried);
        }
        let mut stats = self.stats_of(&candidates);
        loop {
            let open: Vec<bool> = stats
                .iter()
                .map(|s| s.breaker.state() == BreakerState::Open)
                .collect();
            let mut k = 0;
            candidates.retain(|_| {
                k += 1;
                !open[k - 1]
            });
            let mut k = 0;
            stats.retain(|_| {
                k += 1;
                !open[k - 1]
            });
            if candidates.is_empty() {
                return Err(NoEndpoint::BreakersOpen);
            }
            self.keep_one_level(&mut candidates, &mut stats);
            let i = self.choose(&candidates, &stats, exclude.is_empty());
            match stats[i].breaker.acquire() {
                Ok(permit) => {
                    let chosen = stats[i].clone();
                    chosen.in_flight.fetch_add(1, Ordering::Relaxed);
                    return Ok(Pick {
                        addr: candidates[i],
                        stats: chosen,
                        permit: Some(permit),
                        started: Instant::now(),
                    });
                }
                Err(_) => {
                    // Half-open with its trial calls taken: leave it out this time.
                    candidates.remove(i);
                    stats.remove(i);
                }
            }
        }
    }

    /// Narrows the candidates to one region priority level, drawn by the levels' shares.
    fn keep_one_level(
        &self,
        candidates: &mut Vec<SocketAddr>,
        stats: &mut Vec<Arc<EndpointStats>>,
    ) {
        if self.places.configured.len() < 2 {
            return;
        }
        let mut available = vec![0usize; self.places.configured.len()];
        for a in candidates.iter() {
            let l = self.places.level_of(a).min(available.len() - 1);
            available[l] += 1;
        }
        let shares = self.places.shares(&available);
        let mut draw = fastrand::f64();
        let mut level = shares.iter().rposition(|&s| s > 0.0).unwrap_or(0);
        for (l, s) in shares.iter().enumerate() {
            if draw < *s {
                level = l;
                break;
            }
            draw -= s;
        }
        let keep: Vec<bool> = candidates
            .iter()
            .map(|a| self.places.level_of(a) == level)
            .collect();
        let mut k = 0;
        candidates.retain(|_| {
            k += 1;
            keep[k - 1]
        });
        let mut k = 0;
        stats.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }

    /// Index of the candidate to use. Only a request's first attempt advances the rotation, so
    /// retries do not shift the turn of the requests that follow.
    fn choose(
        &self,
        candidates: &[SocketAddr],
        stats: &[Arc<EndpointStats>],
        first: bool,
    ) -> usize {
        let turn = if first {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed)
        };
        match self.strategy {
            Balance::RoundRobin => turn % candidates.len(),
            Balance::LeastRequest => {
                // Start the scan at the turn so ties rotate instead of piling on the first.
                let n = candidates.len();
                (0..n)
                    .map(|k| (turn + k) % n)
                    .min_by_key(|&j| stats[j].in_flight.load(Ordering::Relaxed))
                    .expect("non-empty")
            }
            Balance::P2cEwma if candidates.len() == 1 => 0,
            Balance::P2cEwma => {
                let a = fastrand::usize(..candidates.len());
                let mut b = fastrand::usize(..candidates.len() - 1);
                if b >= a {
                    b += 1;
                }
                if stats[b].cost() < stats[a].cost() {
                    b
                } else {
                    a
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16, strategy: Balance) -> (watch::Sender<Arc<Vec<SocketAddr>>>, Pool) {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        let (tx, rx) = watch::channel(Arc::new(addrs));
        let breaker = BreakerConfig {
            trip: herd_config::Trip::consecutive_failures(2),
            ..BreakerConfig::default()
        };
        (
            tx,
            Pool::new("test".into(), rx, strategy, breaker, Places::default()),
        )
    }

    #[test]
    fn round_robin_spreads_evenly_and_follows_changes() {
        let (tx, p) = pool(3, Balance::RoundRobin);
        let mut counts = HashMap::new();
        for _ in 0..30 {
            *counts.entry(p.pick(&[]).unwrap().addr.port()).or_insert(0) += 1;
        }
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
        tx.send(Arc::new(vec![SocketAddr::from(([127, 0, 0, 1], 9100))]))
            .unwrap();
        assert_eq!(p.pick(&[]).unwrap().addr.port(), 9100);
        tx.send(Arc::new(vec![])).unwrap();
        assert_eq!(p.pick(&[]).unwrap_err(), NoEndpoint::Empty);
    }

    #[test]
    fn excluded_endpoints_are_skipped() {
        let (_tx, p) = pool(2, Balance::RoundRobin);
        let first = p.pick(&[]).unwrap().addr;
        for _ in 0..5 {
            assert_ne!(p.pick(&[first]).unwrap().addr, first);
        }
        let second = p.pick(&[first]).unwrap().addr;
        assert_eq!(p.pick(&[first, second]).unwrap_err(), NoEndpoint::AllTried);
    }

    #[test]
    fn least_request_avoids_busy_endpoints() {
        let (_tx, p) = pool(3, Balance::LeastRequest);
        let mut held: Vec<Pick> = (0..3).map(|_| p.pick(&[]).unwrap()).collect();
        // Keep the first request in flight, finish the other two.
        held.truncate(1);
        let busy = held[0].addr;
        for _ in 0..10 {
            assert_ne!(p.pick(&[]).unwrap().addr, busy);
        }
    }

    #[test]
    fn p2c_prefers_the_faster_endpoint() {
        let (_tx, p) = pool(2, Balance::P2cEwma);
        let slow = SocketAddr::from(([127, 0, 0, 1], 9000));
        let stats = p.stats_of(&p.addresses());
        stats[0].observe(50_000);
        stats[1].observe(1_000);
        for _ in 0..20 {
            assert_ne!(p.pick(&[]).unwrap().addr, slow);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_whose_breaker_opened_is_left_out_until_half_open() {
        let (_tx, p) = pool(2, Balance::RoundRobin);
        let bad = p.pick(&[]).unwrap().addr;
        for _ in 0..2 {
            p.pick(&[p.addresses().iter().copied().find(|a| *a != bad).unwrap()])
                .unwrap()
                .failed();
        }
        for _ in 0..6 {
            assert_ne!(p.pick(&[]).unwrap().addr, bad);
        }
        let good = p.pick(&[]).unwrap().addr;
        assert_eq!(p.pick(&[good]).unwrap_err(), NoEndpoint::BreakersOpen);
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        // Half-open: one trial call goes to it, and its success closes the breaker.
        p.pick(&[good]).unwrap().succeeded();
        assert_eq!(p.pick(&[good]).unwrap().addr, bad);
    }

    #[test]
    fn priority_load_follows_envoy() {
        let p = Places {
            level: HashMap::new(),
            configured: vec![4, 4],
            overprovisioning: 1.4,
        };
        assert_eq!(p.shares(&[4, 4]), vec![1.0, 0.0]);
        // 3 of 4 healthy: 0.75 × 1.4 > 1, still all local.
        assert_eq!(p.shares(&[3, 4]), vec![1.0, 0.0]);
        // 2 of 4: 0.5 × 1.4 = 0.7 local, the rest spills over.
        let s = p.shares(&[2, 4]);
        assert!(
            (s[0] - 0.7).abs() < 1e-9 && (s[1] - 0.3).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(p.shares(&[0, 4]), vec![0.0, 1.0]);
        // Both short: scaled to a whole.
        let s = p.shares(&[1, 1]);
        assert!(
            (s[0] - 0.5).abs() < 1e-9 && (s[1] - 0.5).abs() < 1e-9,
            "{s:?}"
        );
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = EndpointStats::new(
            &BreakerConfig::default(),
            "test",
            SocketAddr::from(([127, 0, 0, 1], 1)),
        );
        s.observe(1000);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 1000);
        s.observe(200);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 800);
        s.observe(5000);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 5000);
    }
}
