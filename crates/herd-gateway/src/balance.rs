//! Choosing an endpoint: round-robin, least-request, or power-of-two-choices over peak-EWMA
//! latency.
//!
//! A [`Pool`] watches a list of addresses (a herd service's ready instances, or an upstream's
//! static list) and keeps per-address statistics: requests in flight, and a latency average
//! that jumps up to any slower sample at once and decays toward faster ones (peak EWMA, as in
//! Finagle and linkerd), so an endpoint that turns slow is avoided immediately. The p2c cost is
//! latency × (in flight + 1); an endpoint without samples costs nothing, which sends it a probe.
//! The statistics map is behind a std mutex held for a lookup, never across an `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use herd_config::Balance;
use tokio::sync::watch;

/// Per-endpoint statistics.
#[derive(Debug, Default)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    ewma_us: AtomicU64,
}

impl EndpointStats {
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
    next: AtomicUsize,
    stats: Mutex<HashMap<SocketAddr, Arc<EndpointStats>>>,
}

/// A chosen endpoint; dropping it ends the request's accounting.
#[derive(Debug)]
pub struct Pick {
    /// The address.
    pub addr: SocketAddr,
    stats: Arc<EndpointStats>,
    started: Instant,
}

impl Pick {
    /// Records the request's latency (call when the response head arrived).
    pub fn observe(&self) {
        self.stats
            .observe(self.started.elapsed().as_micros().min(u64::MAX as u128) as u64);
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool over the addresses in `endpoints`.
    pub fn new(
        name: String,
        endpoints: watch::Receiver<Arc<Vec<SocketAddr>>>,
        strategy: Balance,
    ) -> Self {
        Self {
            name,
            endpoints,
            strategy,
            next: AtomicUsize::new(0),
            stats: Mutex::new(HashMap::new()),
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
            .map(|a| map.entry(*a).or_default().clone())
            .collect()
    }

    /// Chooses an endpoint other than those in `exclude` (already tried), or `None` when none
    /// is left.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<Pick> {
        let all = self.addresses();
        let candidates: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| !exclude.contains(a))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let stats = self.stats_of(&candidates);
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let i = match self.strategy {
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
        };
        let chosen = stats[i].clone();
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            addr: candidates[i],
            stats: chosen,
            started: Instant::now(),
        })
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
        (tx, Pool::new("test".into(), rx, strategy))
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
        assert!(p.pick(&[]).is_none());
    }

    #[test]
    fn excluded_endpoints_are_skipped() {
        let (_tx, p) = pool(2, Balance::RoundRobin);
        let first = p.pick(&[]).unwrap().addr;
        for _ in 0..5 {
            assert_ne!(p.pick(&[first]).unwrap().addr, first);
        }
        let second = p.pick(&[first]).unwrap().addr;
        assert!(p.pick(&[first, second]).is_none());
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

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = EndpointStats::default();
        s.observe(1000);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 1000);
        s.observe(200);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 800);
        s.observe(5000);
        assert_eq!(s.ewma_us.load(Ordering::Relaxed), 5000);
    }
}
