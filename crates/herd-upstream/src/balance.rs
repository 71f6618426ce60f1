//! Choosing an endpoint: round-robin, least-request, or power-of-two-choices over peak-EWMA
//! latency.
//!
//! A [`Pool`] watches a list of addresses (a herd service's ready instances, an upstream's
//! endpoints, or the peer herds that run an app) and keeps statistics per address
//! (`endpoint.rs`). The p2c cost is latency × (in flight + 1); an endpoint without samples costs
//! nothing, which sends it a probe. The statistics map is behind a std mutex held for a lookup,
//! never across an `.await`.
//!
//! Every endpoint also has a circuit breaker (`herd-resilience`; none in a pool whose one
//! address stands for many instances), and an upstream with `outlier` set adds passive outlier
//! ejection (`outlier.rs`): an endpoint that is ejected, or whose breaker is open, is left out of
//! the choice, and counts as unavailable for its region's priority level (`priority.rs`), which
//! is drawn before the endpoint. Each request's [`Decisions`] record what was left out and what
//! its attempts changed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::Addresses;
use crate::decisions::{Decisions, Skip};
use crate::endpoint::{EndpointStats, Pick};
use crate::outlier::Ejector;
use crate::priority::Places;
use herd_config::{Balance, BreakerConfig, OutlierSpec};
use smallvec::SmallVec;

/// A set of endpoints and how to choose among them.
#[derive(Debug)]
pub struct Pool {
    /// `service hello` or `upstream backend`, for errors and logs.
    pub name: String,
    endpoints: Addresses,
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

/// Candidates a pick keeps on the stack; larger pools' go to the heap.
const INLINE: usize = 8;

/// The endpoints a pick chooses among, with their statistics.
type Candidates = SmallVec<[(SocketAddr, Arc<EndpointStats>); INLINE]>;

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

impl Pool {
    /// A pool over the addresses in `endpoints`, each guarded by a breaker set up as `breaker`
    /// (none without one: an address that stands for many instances, such as a shared socket).
    pub fn new(
        name: String,
        endpoints: Addresses,
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

    /// The candidates (`all` but those in `exclude`) with their statistics, in one list, on the
    /// stack for up to [`INLINE`] of them: a pick over a small pool allocates nothing.
    fn candidates(&self, all: &[SocketAddr], exclude: &[SocketAddr]) -> Candidates {
        let mut map = self.stats.lock().expect("stats poisoned");
        if map.len() > all.len() * 2 + 16 {
            map.retain(|a, _| all.contains(a));
        }
        all.iter()
            .filter(|a| !exclude.contains(a))
            .map(|a| {
                let stats = map.entry(*a).or_insert_with(|| {
                    let stats = Arc::new(EndpointStats::new(
                        self.breaker.as_ref(),
                        &self.name,
                        *a,
                        self.ejector.as_ref(),
                    ));
                    crate::drain::register(*a, &stats);
                    stats
                });
                (*a, stats.clone())
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
        let mut candidates = self.candidates(&all, exclude);
        if candidates.is_empty() {
            return Err(NoEndpoint::AllTried);
        }
        let mut now = None;
        let mut breakers = false;
        loop {
            candidates.retain(|(a, s)| {
                let skip = s.unavailable(&mut now);
                if let Some(why) = skip {
                    breakers |= why != Skip::Ejected;
                    decisions.skip(*a, why);
                }
                skip.is_none()
            });
            if candidates.is_empty() {
                return Err(if breakers {
                    NoEndpoint::BreakersOpen
                } else {
                    NoEndpoint::Ejected
                });
            }
            self.keep_one_level(&mut candidates);
            let i = self.choose(&candidates, exclude.is_empty());
            let (addr, stats) = &candidates[i];
            match stats.take(*addr) {
                Some(pick) => return Ok(pick),
                None => {
                    // Half-open with its trial calls taken: leave it out this time.
                    decisions.skip(*addr, Skip::BreakerBusy);
                    breakers = true;
                    candidates.remove(i);
                }
            }
        }
    }

    /// Narrows the candidates to one region priority level, drawn by the levels' shares.
    fn keep_one_level(&self, candidates: &mut Candidates) {
        let Some(level) = self.places.draw_level(candidates.iter().map(|(a, _)| a)) else {
            return;
        };
        candidates.retain(|(a, _)| self.places.level_of(a) == level);
    }

    /// Index of the candidate to use. Only a request's first attempt advances the rotation, so
    /// retries do not shift the turn of the requests that follow.
    fn choose(&self, candidates: &[(SocketAddr, Arc<EndpointStats>)], first: bool) -> usize {
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
                    .min_by_key(|&j| candidates[j].1.in_flight())
                    .expect("non-empty")
            }
            Balance::P2cEwma if candidates.len() == 1 => 0,
            Balance::P2cEwma => {
                let a = fastrand::usize(..candidates.len());
                let mut b = fastrand::usize(..candidates.len() - 1);
                if b >= a {
                    b += 1;
                }
                if candidates[b].1.cost() < candidates[a].1.cost() {
                    b
                } else {
                    a
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
