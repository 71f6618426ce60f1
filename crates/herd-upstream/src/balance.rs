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
//! Every endpoint also has a circuit breaker (`herd-resilience`), and an upstream with `outlier`
//! set adds passive outlier ejection (`outlier.rs`): an endpoint that is ejected, or whose
//! breaker is open, is left out of the choice, and counts as unavailable for its region's
//! priority level. Each request's [`Decisions`] record what was left out and what its attempts
//! changed, for the access log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use herd_config::{Balance, BreakerConfig, OutlierSpec};
use herd_resilience::{BreakerState, CircuitBreaker, Permit};
use tokio::sync::watch;

pub use crate::outlier::Attempt;
use crate::outlier::{Detector, Ejector};

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
    fn new(
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
    fn unavailable(&self, now: &mut Option<u64>) -> Option<Skip> {
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
    breaker: Option<BreakerConfig>,
    places: Places,
    admission: Option<Arc<tokio::sync::Semaphore>>,
    ejector: Option<Arc<Ejector>>,
    next: AtomicUsize,
    /// Keyed with foldhash: every pick looks its candidates up here, and std's SipHash of a
    /// `SocketAddr` cost more than the rest of the lookup.
    stats: Mutex<HashMap<SocketAddr, Arc<EndpointStats>, foldhash::fast::RandomState>>,
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
    /// Every remaining endpoint's breaker is open (or some are, and the others are ejected).
    BreakersOpen,
    /// Every remaining endpoint is ejected as an outlier (only possible with
    /// `max_ejection_percent = 100`).
    Ejected,
}

/// Why an endpoint was left out of a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Ejected as an outlier.
    Ejected,
    /// Its circuit breaker is open.
    BreakerOpen,
    /// Its breaker is half-open and its trial calls are taken.
    BreakerBusy,
}

impl Skip {
    /// The name in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Ejected => "ejected",
            Skip::BreakerOpen => "breaker_open",
            Skip::BreakerBusy => "breaker_half_open",
        }
    }
}

/// A state change an attempt caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The endpoint's breaker opened (tripped, or a half-open trial failed).
    BreakerOpened,
    /// The endpoint's breaker closed after its half-open trials succeeded.
    BreakerClosed,
    /// The endpoint was ejected for this many milliseconds.
    Ejected(u32),
}

/// Entries each list of [`Decisions`] holds.
const NOTED: usize = 4;

/// What the pool decided for one request, for its access-log line: endpoints left out of its
/// choices, and state changes its attempts caused. Fixed capacity, so noting never allocates,
/// and a request where nothing happened pays only for the (zeroed) space.
#[derive(Debug, Default, Clone)]
pub struct Decisions {
    skipped: [Option<(SocketAddr, Skip)>; NOTED],
    /// Skipped endpoints beyond those listed.
    unlisted: u32,
    changes: [Option<(SocketAddr, Change)>; NOTED],
}

impl Decisions {
    fn skip(&mut self, addr: SocketAddr, why: Skip) {
        if self
            .skipped
            .iter()
            .flatten()
            .any(|&(a, w)| a == addr && w == why)
        {
            return;
        }
        match self.skipped.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some((addr, why)),
            None => self.unlisted += 1,
        }
    }

    fn change(&mut self, addr: SocketAddr, change: Change) {
        // Full (four changes in one request): the latest replaces the last.
        let last = NOTED - 1;
        let slot = self
            .changes
            .iter()
            .position(Option::is_none)
            .unwrap_or(last);
        self.changes[slot] = Some((addr, change));
    }

    /// Whether nothing was noted.
    pub fn is_empty(&self) -> bool {
        self.skipped[0].is_none() && self.changes[0].is_none()
    }

    /// Endpoints left out, and why (each pair once).
    pub fn skipped(&self) -> impl Iterator<Item = (SocketAddr, Skip)> + '_ {
        self.skipped.iter().flatten().copied()
    }

    /// How many more endpoints were left out than [`Decisions::skipped`] lists.
    pub fn unlisted(&self) -> u32 {
        self.unlisted
    }

    /// State changes, in order.
    pub fn changes(&self) -> impl Iterator<Item = (SocketAddr, Change)> + '_ {
        self.changes.iter().flatten().copied()
    }

    /// Adds to an access-log line what was noted, and nothing when nothing was: `skipped`
    /// (see [`Decisions::skipped_json`]), `skippedUnlisted` (a count, when more were skipped than
    /// listed) and `changes` (see [`Decisions::changes_json`]).
    pub fn annotate(&self, line: &mut serde_json::Value) {
        if let Some(skipped) = self.skipped_json() {
            line["skipped"] = skipped;
        }
        if self.unlisted > 0 {
            line["skippedUnlisted"] = self.unlisted.into();
        }
        if let Some(changes) = self.changes_json() {
            line["changes"] = changes;
        }
    }

    /// `[{"endpoint": "…", "reason": "ejected"}, …]`, or `None` when nothing was skipped.
    pub fn skipped_json(&self) -> Option<serde_json::Value> {
        self.skipped[0]?;
        Some(
            self.skipped()
                .map(|(a, why)| serde_json::json!({ "endpoint": a.to_string(), "reason": why.as_str() }))
                .collect(),
        )
    }

    /// `[{"endpoint": "…", "event": "breaker_opened"}, {"endpoint": "…", "event": "ejected",
    /// "ejectedMs": 30000}, …]`, or `None` when the request changed nothing.
    pub fn changes_json(&self) -> Option<serde_json::Value> {
        self.changes[0]?;
        Some(
            self.changes()
                .map(|(a, change)| {
                    let endpoint = a.to_string();
                    match change {
                        Change::BreakerOpened => {
                            serde_json::json!({ "endpoint": endpoint, "event": "breaker_opened" })
                        }
                        Change::BreakerClosed => {
                            serde_json::json!({ "endpoint": endpoint, "event": "breaker_closed" })
                        }
                        Change::Ejected(ms) => serde_json::json!({
                            "endpoint": endpoint, "event": "ejected", "ejectedMs": ms
                        }),
                    }
                })
                .collect(),
        )
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

impl Pool {
    /// A pool over the addresses in `endpoints`, each guarded by a breaker set up as `breaker`
    /// (none without one: an address that stands for many instances, such as a shared socket).
    pub fn new(
        name: String,
        endpoints: watch::Receiver<Arc<Vec<SocketAddr>>>,
        strategy: Balance,
        breaker: Option<BreakerConfig>,
        places: Places,
    ) -> Self {
        Self {
            name,
            endpoints,
            strategy,
            breaker,
            places,
            admission: None,
            ejector: None,
            next: AtomicUsize::new(0),
            stats: Mutex::new(HashMap::default()),
        }
    }

    /// Caps the requests in flight to this pool at `n`.
    pub fn with_concurrency_limit(mut self, n: Option<u32>) -> Self {
        self.admission = n.map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize)));
        self
    }

    /// Ejects outliers as `spec` says (none without one).
    pub fn with_outlier(mut self, spec: Option<OutlierSpec>) -> Self {
        self.ejector = spec.map(|s| Ejector::new(s, &self.name, self.endpoints.clone()));
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
                    .or_insert_with(|| {
                        Arc::new(EndpointStats::new(
                            self.breaker.as_ref(),
                            &self.name,
                            *a,
                            self.ejector.as_ref(),
                        ))
                    })
                    .clone()
            })
            .collect()
    }

    /// Chooses an endpoint other than those in `exclude` (already tried) that is not ejected and
    /// whose breaker lets a call through; endpoints left out are noted in `decisions`.
    pub fn pick(
        &self,
        exclude: &[SocketAddr],
        decisions: &mut Decisions,
    ) -> Result<Pick, NoEndpoint> {
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
        let mut now = None;
        let mut breakers = false;
        loop {
            let open: Vec<bool> = stats
                .iter()
                .zip(&candidates)
                .map(|(s, a)| {
                    let skip = s.unavailable(&mut now);
                    if let Some(why) = skip {
                        breakers |= why != Skip::Ejected;
                        decisions.skip(*a, why);
                    }
                    skip.is_some()
                })
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
                return Err(if breakers {
                    NoEndpoint::BreakersOpen
                } else {
                    NoEndpoint::Ejected
                });
            }
            self.keep_one_level(&mut candidates, &mut stats);
            let i = self.choose(&candidates, &stats, exclude.is_empty());
            let permit = match stats[i].breaker.as_ref().map(|b| b.acquire()) {
                None => Ok(None),
                Some(acquired) => acquired.map(Some),
            };
            match permit {
                Ok(permit) => {
                    let chosen = stats[i].clone();
                    chosen.in_flight.fetch_add(1, Ordering::Relaxed);
                    return Ok(Pick {
                        addr: candidates[i],
                        stats: chosen,
                        permit,
                        started: Instant::now(),
                    });
                }
                Err(_) => {
                    // Half-open with its trial calls taken: leave it out this time.
                    decisions.skip(candidates[i], Skip::BreakerBusy);
                    breakers = true;
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

    fn pick(p: &Pool, exclude: &[SocketAddr]) -> Result<Pick, NoEndpoint> {
        p.pick(exclude, &mut Decisions::default())
    }

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
            Pool::new(
                "test".into(),
                rx,
                strategy,
                Some(breaker),
                Places::default(),
            ),
        )
    }

    #[test]
    fn round_robin_spreads_evenly_and_follows_changes() {
        let (tx, p) = pool(3, Balance::RoundRobin);
        let mut counts = HashMap::new();
        for _ in 0..30 {
            *counts
                .entry(pick(&p, &[]).unwrap().addr.port())
                .or_insert(0) += 1;
        }
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
        tx.send(Arc::new(vec![SocketAddr::from(([127, 0, 0, 1], 9100))]))
            .unwrap();
        assert_eq!(pick(&p, &[]).unwrap().addr.port(), 9100);
        tx.send(Arc::new(vec![])).unwrap();
        assert_eq!(pick(&p, &[]).unwrap_err(), NoEndpoint::Empty);
    }

    #[test]
    fn excluded_endpoints_are_skipped() {
        let (_tx, p) = pool(2, Balance::RoundRobin);
        let first = pick(&p, &[]).unwrap().addr;
        for _ in 0..5 {
            assert_ne!(pick(&p, &[first]).unwrap().addr, first);
        }
        let second = pick(&p, &[first]).unwrap().addr;
        assert_eq!(
            pick(&p, &[first, second]).unwrap_err(),
            NoEndpoint::AllTried
        );
    }

    #[test]
    fn least_request_avoids_busy_endpoints() {
        let (_tx, p) = pool(3, Balance::LeastRequest);
        let mut held: Vec<Pick> = (0..3).map(|_| pick(&p, &[]).unwrap()).collect();
        // Keep the first request in flight, finish the other two.
        held.truncate(1);
        let busy = held[0].addr;
        for _ in 0..10 {
            assert_ne!(pick(&p, &[]).unwrap().addr, busy);
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
            assert_ne!(pick(&p, &[]).unwrap().addr, slow);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_without_breakers_keeps_an_address_whatever_fails() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9000));
        let (_tx, rx) = watch::channel(Arc::new(vec![addr]));
        let p = Pool::new(
            "shared".into(),
            rx,
            Balance::RoundRobin,
            None,
            Places::default(),
        );
        let mut decisions = Decisions::default();
        for _ in 0..50 {
            pick(&p, &[])
                .unwrap()
                .report(Attempt::NoAnswer, &mut decisions);
        }
        assert!(decisions.is_empty(), "no breaker to open");
        assert_eq!(pick(&p, &[]).unwrap().addr, addr);
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_whose_breaker_opened_is_left_out_until_half_open() {
        let (_tx, p) = pool(2, Balance::RoundRobin);
        let bad = pick(&p, &[]).unwrap().addr;
        for _ in 0..2 {
            pick(
                &p,
                &[p.addresses().iter().copied().find(|a| *a != bad).unwrap()],
            )
            .unwrap()
            .report(Attempt::NoAnswer, &mut Decisions::default());
        }
        for _ in 0..6 {
            assert_ne!(pick(&p, &[]).unwrap().addr, bad);
        }
        let good = pick(&p, &[]).unwrap().addr;
        assert_eq!(pick(&p, &[good]).unwrap_err(), NoEndpoint::BreakersOpen);
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        // Half-open: one trial call goes to it, and its success closes the breaker.
        pick(&p, &[good])
            .unwrap()
            .report(Attempt::Answered(200), &mut Decisions::default());
        assert_eq!(pick(&p, &[good]).unwrap().addr, bad);
    }

    /// A pool over ports 9000.. (`levels` gives each one's priority level) that ejects as `spec`
    /// says, with breakers that never trip.
    fn ejecting_pool(levels: &[usize], spec: OutlierSpec) -> Pool {
        let addrs: Vec<SocketAddr> = (0..levels.len() as u16)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        let mut configured = vec![0; levels.iter().max().map_or(1, |m| m + 1)];
        levels.iter().for_each(|&l| configured[l] += 1);
        let places = Places {
            level: addrs.iter().copied().zip(levels.iter().copied()).collect(),
            configured,
            overprovisioning: 1.4,
        };
        // The receiver keeps the last list after the sender is gone.
        let (_, rx) = watch::channel(Arc::new(addrs));
        let breaker = BreakerConfig {
            trip: herd_config::Trip::consecutive_failures(1000),
            ..BreakerConfig::default()
        };
        Pool::new(
            "test".into(),
            rx,
            Balance::RoundRobin,
            Some(breaker),
            places,
        )
        .with_outlier(Some(spec))
    }

    /// Reports `attempt` for `target` (chosen by excluding every other endpoint).
    fn report_for(p: &Pool, target: SocketAddr, attempt: Attempt, d: &mut Decisions) {
        let others: Vec<SocketAddr> = p
            .addresses()
            .iter()
            .copied()
            .filter(|a| *a != target)
            .collect();
        let chosen = p.pick(&others, d).unwrap();
        assert_eq!(chosen.addr, target);
        chosen.report(attempt, d);
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_answering_5xx_is_ejected_noted_and_back_after_its_time() {
        let spec = OutlierSpec {
            consecutive_5xx: 3,
            base_ejection_time: std::time::Duration::from_secs(10),
            ..OutlierSpec::default()
        };
        let p = ejecting_pool(&[0, 0, 0], spec);
        let bad = SocketAddr::from(([127, 0, 0, 1], 9000));
        let mut d = Decisions::default();
        for _ in 0..2 {
            report_for(&p, bad, Attempt::Answered(500), &mut d);
        }
        // A success in between starts the run over.
        report_for(&p, bad, Attempt::Answered(404), &mut d);
        for _ in 0..2 {
            report_for(&p, bad, Attempt::Answered(500), &mut d);
        }
        assert!(d.is_empty(), "{d:?}");
        report_for(&p, bad, Attempt::Answered(503), &mut d);
        assert_eq!(
            d.changes().collect::<Vec<_>>(),
            vec![(bad, Change::Ejected(10_000))]
        );
        assert_eq!(
            d.changes_json().unwrap(),
            serde_json::json!([{ "endpoint": "127.0.0.1:9000", "event": "ejected", "ejectedMs": 10_000 }])
        );

        let mut d = Decisions::default();
        for _ in 0..12 {
            assert_ne!(p.pick(&[], &mut d).unwrap().addr, bad);
        }
        assert_eq!(
            d.skipped().collect::<Vec<_>>(),
            vec![(bad, Skip::Ejected)],
            "noted once"
        );
        assert_eq!(
            d.skipped_json().unwrap(),
            serde_json::json!([{ "endpoint": "127.0.0.1:9000", "reason": "ejected" }])
        );
        let others: Vec<SocketAddr> = p
            .addresses()
            .iter()
            .copied()
            .filter(|a| *a != bad)
            .collect();
        assert_eq!(pick(&p, &others).unwrap_err(), NoEndpoint::Ejected);

        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        let mut d = Decisions::default();
        assert_eq!(p.pick(&others, &mut d).unwrap().addr, bad);
        assert!(d.is_empty());
    }

    #[test]
    fn an_ejected_endpoint_counts_as_unavailable_for_its_priority_level() {
        let p = ejecting_pool(&[0, 0, 1, 1], OutlierSpec::default());
        let local = SocketAddr::from(([127, 0, 0, 1], 9000));
        let mut d = Decisions::default();
        for _ in 0..1000 {
            assert_eq!(p.places.level_of(&pick(&p, &[]).unwrap().addr), 0);
        }
        for _ in 0..5 {
            report_for(&p, local, Attempt::NoAnswer, &mut d);
        }
        assert!(matches!(d.changes().next(), Some((a, Change::Ejected(_))) if a == local));
        // One of two local endpoints left: 0.5 × 1.4 = 70 % stays local, 30 % spills over.
        let remote = (0..1000)
            .filter(|_| p.places.level_of(&pick(&p, &[]).unwrap().addr) == 1)
            .count();
        assert!(
            (200..400).contains(&remote),
            "{remote} of 1000 went to the other region"
        );
    }

    #[test]
    fn decisions_cost_nothing_until_something_happens_and_hold_a_few() {
        let mut d = Decisions::default();
        assert!(d.is_empty() && d.skipped_json().is_none() && d.changes_json().is_none());
        let mut line = serde_json::json!({ "status": 200 });
        d.annotate(&mut line);
        assert_eq!(line, serde_json::json!({ "status": 200 }));
        for port in 0..6 {
            d.skip(SocketAddr::from(([127, 0, 0, 1], port)), Skip::BreakerOpen);
        }
        assert_eq!((d.skipped().count(), d.unlisted()), (4, 2));
        let mut line = serde_json::json!({});
        d.annotate(&mut line);
        assert_eq!(line["skipped"].as_array().unwrap().len(), 4);
        assert_eq!(line["skippedUnlisted"], 2);
        assert!(line["changes"].is_null());
        for _ in 0..6 {
            d.change(SocketAddr::from(([127, 0, 0, 1], 1)), Change::BreakerOpened);
        }
        d.change(SocketAddr::from(([127, 0, 0, 1], 2)), Change::BreakerClosed);
        let changes: Vec<_> = d.changes().collect();
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[3].1, Change::BreakerClosed, "the latest is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_transitions_are_noted() {
        let (_tx, p) = pool(2, Balance::RoundRobin);
        let bad = SocketAddr::from(([127, 0, 0, 1], 9000));
        let mut d = Decisions::default();
        report_for(&p, bad, Attempt::NoAnswer, &mut d);
        assert!(d.is_empty());
        report_for(&p, bad, Attempt::Answered(502), &mut d);
        assert_eq!(
            d.changes().collect::<Vec<_>>(),
            vec![(bad, Change::BreakerOpened)]
        );
        let mut d = Decisions::default();
        let good = p.pick(&[], &mut d).unwrap().addr;
        assert_ne!(good, bad);
        assert_eq!(
            d.skipped().collect::<Vec<_>>(),
            vec![(bad, Skip::BreakerOpen)]
        );
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        let mut d = Decisions::default();
        report_for(&p, bad, Attempt::Answered(200), &mut d);
        assert_eq!(
            d.changes().collect::<Vec<_>>(),
            vec![(bad, Change::BreakerClosed)]
        );
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
