//! Passive outlier ejection: an endpoint that keeps failing real requests leaves its pool, for a
//! time that grows with every ejection.
//!
//! This is Envoy's outlier detection by consecutive failures, with local-origin failures counted
//! apart from answers (Envoy's `split_external_local_origin_errors`). Each endpoint counts
//! consecutive 5xx answers, consecutive 502/503/504 answers, and consecutive attempts that got no
//! answer at all (refused or failed connection, reset, timeout); an answer below 500 clears all
//! three, any answer clears the last. When a count reaches its threshold the endpoint is ejected
//! for `base_ejection_time` × k, at most `max_ejection_time`, where k grows by one with each
//! ejection and drops by one for every `interval` the endpoint then spends in rotation. An
//! ejection happens only while (ejected + 1) × 100 ≤ `max_ejection_percent` × endpoints in
//! rotation (Envoy's rule, without its `always_eject_one_host`); a count that meets the cap
//! starts over. An ejected endpoint returns with its counts cleared.
//!
//! **Ejection and the circuit breaker.** Both see every attempt and either one keeps an endpoint
//! out of the choice, but they answer different questions. The breaker protects one endpoint from
//! load, knowing nothing of the pool: it opens on its trip condition for a fixed `timeout`, then
//! lets `maxRequests` trial calls decide whether it closes. Ejection removes an outlier from the
//! pool: it does not probe, it lasts longer each time the endpoint is ejected again, and it never
//! takes out more than its share of the pool, so unlike breakers it cannot empty a pool on its
//! own. Neither resets the other: an endpoint back from ejection keeps its breaker's state.
//!
//! The request path stays cheap: reporting an outcome is one atomic operation on the endpoint's
//! packed counts (a single load for a success when nothing was counted), and choosing reads one
//! atomic per endpoint, plus the clock once if some endpoint was ejected. Ejecting and returning
//! are rare and take the pool's mutex; a timer returns an endpoint when its time is up, so the
//! gauge and the log follow even without traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use herd_config::OutlierSpec;
use tokio::sync::watch;
use tokio::time::Instant;

/// How an attempt ended, as far as ejection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered with this status code.
    Answered(u16),
    /// No answer: the connection was refused or failed, was reset, or the attempt timed out.
    NoAnswer,
}

impl Attempt {
    /// An answer below 500: what clears every count (and what the breaker calls a success).
    pub fn succeeded(self) -> bool {
        matches!(self, Attempt::Answered(s) if s < 500)
    }
}

/// The count that ejected an endpoint; indexes its field in the packed counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `consecutive_5xx`.
    Consecutive5xx = 0,
    /// `consecutive_gateway_failure`.
    ConsecutiveGatewayFailure = 1,
    /// `consecutive_local_origin_failure`.
    ConsecutiveLocalOriginFailure = 2,
}

impl Reason {
    const ALL: [Reason; 3] = [
        Reason::Consecutive5xx,
        Reason::ConsecutiveGatewayFailure,
        Reason::ConsecutiveLocalOriginFailure,
    ];

    /// The config key, also the metric label.
    pub fn key(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Reason::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
        }
    }

    fn threshold(self, spec: &OutlierSpec) -> u32 {
        match self {
            Reason::Consecutive5xx => spec.consecutive_5xx,
            Reason::ConsecutiveGatewayFailure => spec.consecutive_gateway_failure,
            Reason::ConsecutiveLocalOriginFailure => spec.consecutive_local_origin_failure,
        }
    }
}

/// The three counts share one atomic word, 16 bits each (thresholds are at most 1000).
const FIELD_BITS: u32 = 16;
const FIELD_MAX: u32 = (1 << FIELD_BITS) - 1;

fn unpack(word: u64) -> [u32; 3] {
    [0, 1, 2].map(|i| ((word >> (i * FIELD_BITS)) as u32) & FIELD_MAX)
}

fn pack(counts: [u32; 3]) -> u64 {
    counts
        .iter()
        .enumerate()
        .map(|(i, &n)| u64::from(n.min(FIELD_MAX)) << (i as u32 * FIELD_BITS))
        .sum()
}

/// One endpoint's ejection state. Time is kept in nanoseconds since its [`Ejector`]'s epoch.
#[derive(Debug)]
pub struct Detector {
    /// Consecutive 5xx answers, gateway failures and attempts without an answer, packed.
    counts: AtomicU64,
    /// End of the current ejection; 0 while in rotation.
    until: AtomicU64,
    /// End of the last ejection; 0 if never ejected.
    returned: AtomicU64,
    /// The k in `base_ejection_time` × k of the last ejection (Envoy's ejection backoff).
    multiplier: AtomicU32,
    /// Ejections by [`Reason`].
    ejections: [metrics::Counter; 3],
}

impl Detector {
    /// Clears the counts after an answer below 500; a load alone when they are clear already.
    pub fn succeeded(&self) {
        if self.counts.load(Relaxed) != 0 {
            self.counts.store(0, Relaxed);
        }
    }

    /// Counts a failed attempt; returns the count that reached its threshold, if one did. The
    /// count that did starts over, so among concurrent reports only one sees it trip.
    fn count(&self, attempt: Attempt, spec: &OutlierSpec) -> Option<Reason> {
        let mut tripped = None;
        let _ = self.counts.fetch_update(Relaxed, Relaxed, |word| {
            let mut n = unpack(word);
            match attempt {
                Attempt::Answered(s) if s < 500 => n = [0; 3],
                Attempt::Answered(s) => {
                    n[0] += 1;
                    n[1] = if (502..=504).contains(&s) {
                        n[1] + 1
                    } else {
                        0
                    };
                    n[2] = 0;
                }
                Attempt::NoAnswer => n[2] += 1,
            }
            tripped = None;
            for r in Reason::ALL {
                let threshold = r.threshold(spec);
                if threshold > 0 && n[r as usize] >= threshold {
                    tripped = tripped.or(Some(r));
                    n[r as usize] = 0;
                }
            }
            Some(pack(n))
        });
        tripped
    }

    /// The length of an ejection starting `now`: the multiplier first loses one step per whole
    /// `interval` since the last ejection ended, then grows by one while base × k < max + base
    /// (as in Envoy), and the length is capped at the maximum.
    fn next_ejection(&self, spec: &OutlierSpec, now: u64) -> Duration {
        let mut k = self.multiplier.load(Relaxed);
        let returned = self.returned.load(Relaxed);
        if returned != 0 {
            let interval = spec.interval.as_nanos().max(1);
            let steps = u128::from(now.saturating_sub(returned)) / interval;
            k = k.saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX));
        }
        let base = spec.base_ejection_time;
        if base.saturating_mul(k) < spec.max_ejection_time.saturating_add(base) {
            k += 1;
        }
        self.multiplier.store(k, Relaxed);
        base.saturating_mul(k).min(spec.max_ejection_time)
    }
}

/// A pool's ejections: which endpoints are out, the cap, metrics and the timers that bring them
/// back.
#[derive(Debug)]
pub struct Ejector {
    spec: OutlierSpec,
    epoch: Instant,
    /// The pool's endpoints in rotation, for the cap.
    endpoints: watch::Receiver<Arc<Vec<SocketAddr>>>,
    /// The pool's name, for logs and metric labels.
    upstream: String,
    /// Endpoints ejected now (and, until swept, ones whose time just ran out).
    ejected: Mutex<Vec<(SocketAddr, Arc<Detector>)>>,
    gauge: metrics::Gauge,
    capped: metrics::Counter,
    me: Weak<Ejector>,
}

impl Ejector {
    /// Ejection over the pool `upstream`, whose endpoints in rotation `endpoints` lists.
    pub fn new(
        spec: OutlierSpec,
        upstream: &str,
        endpoints: watch::Receiver<Arc<Vec<SocketAddr>>>,
    ) -> Arc<Self> {
        let gauge =
            metrics::gauge!("herd_gateway_ejected_endpoints", "upstream" => upstream.to_string());
        gauge.set(0.0);
        Arc::new_cyclic(|me| Self {
            spec,
            epoch: Instant::now(),
            endpoints,
            upstream: upstream.to_string(),
            ejected: Mutex::new(Vec::new()),
            gauge,
            capped: metrics::counter!(
                "herd_gateway_ejections_capped_total",
                "upstream" => upstream.to_string()
            ),
            me: me.clone(),
        })
    }

    /// A detector for the endpoint `addr`, in rotation.
    pub fn detector(&self, addr: SocketAddr) -> Arc<Detector> {
        Arc::new(Detector {
            counts: AtomicU64::new(0),
            until: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            multiplier: AtomicU32::new(0),
            ejections: Reason::ALL.map(|r| {
                metrics::counter!(
                    "herd_gateway_ejections_total",
                    "upstream" => self.upstream.clone(),
                    "endpoint" => addr.to_string(),
                    "reason" => r.key()
                )
            }),
        })
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether `d`'s endpoint is ejected; `now` caches the clock across the endpoints of one
    /// choice and is read only for an endpoint that was ejected at some point.
    pub fn is_ejected(&self, d: &Detector, now: &mut Option<u64>) -> bool {
        let until = d.until.load(Relaxed);
        until != 0 && until > *now.get_or_insert_with(|| self.nanos(Instant::now()))
    }

    /// Counts a failed attempt of the endpoint `addr` at `now`; returns the ejection's length if
    /// it ejected the endpoint. Late failures of an endpoint already ejected are not counted.
    pub fn failed(
        &self,
        addr: SocketAddr,
        d: &Arc<Detector>,
        attempt: Attempt,
        now: Instant,
    ) -> Option<Duration> {
        let until = d.until.load(Relaxed);
        if until != 0 && until > self.nanos(now) {
            return None;
        }
        let reason = d.count(attempt, &self.spec)?;
        self.eject(addr, d, reason, now)
    }

    fn eject(
        &self,
        addr: SocketAddr,
        d: &Arc<Detector>,
        reason: Reason,
        now: Instant,
    ) -> Option<Duration> {
        let now_ns = self.nanos(now);
        let mut ejected = self.ejected.lock().expect("ejections poisoned");
        self.sweep_locked(&mut ejected, now_ns);
        if d.until.load(Relaxed) != 0 {
            return None;
        }
        let in_rotation = self.endpoints.borrow().clone();
        let active = ejected
            .iter()
            .filter(|(a, _)| in_rotation.contains(a))
            .count() as u64;
        let hosts = in_rotation.len() as u64;
        if (active + 1) * 100 > u64::from(self.spec.max_ejection_percent) * hosts {
            self.capped.increment(1);
            tracing::info!(
                upstream = %self.upstream, endpoint = %addr,
                "not ejected: {active} of {hosts} endpoint(s) ejected already (max_ejection_percent = {})",
                self.spec.max_ejection_percent
            );
            return None;
        }
        let time = d.next_ejection(&self.spec, now_ns);
        d.counts.store(0, Relaxed);
        d.until.store(
            now_ns.saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)),
            Relaxed,
        );
        ejected.push((addr, d.clone()));
        self.gauge.set(ejected.len() as f64);
        drop(ejected);
        d.ejections[reason as usize].increment(1);
        tracing::warn!(
            upstream = %self.upstream, endpoint = %addr,
            "ejected for {time:?} after {} {}",
            reason.threshold(&self.spec),
            match reason {
                Reason::Consecutive5xx => "consecutive 5xx answers",
                Reason::ConsecutiveGatewayFailure => "consecutive 502/503/504 answers",
                Reason::ConsecutiveLocalOriginFailure => "consecutive attempts without an answer",
            }
        );
        self.sweep_at(now + time);
        Some(time)
    }

    /// Returns the endpoints whose ejection is over at `now`.
    pub fn sweep(&self, now: Instant) {
        let mut ejected = self.ejected.lock().expect("ejections poisoned");
        self.sweep_locked(&mut ejected, self.nanos(now));
    }

    fn sweep_locked(&self, ejected: &mut Vec<(SocketAddr, Arc<Detector>)>, now: u64) {
        let before = ejected.len();
        ejected.retain(|(addr, d)| {
            let until = d.until.load(Relaxed);
            if until > now {
                return true;
            }
            d.returned.store(until, Relaxed);
            d.counts.store(0, Relaxed);
            d.until.store(0, Relaxed);
            tracing::info!(upstream = %self.upstream, endpoint = %addr, "ejection over: back in rotation");
            false
        });
        if ejected.len() != before {
            self.gauge.set(ejected.len() as f64);
        }
    }

    /// Sweeps at `when`, on the current runtime (none in plain unit tests: choosing does not
    /// depend on sweeps, only the gauge and the log do).
    fn sweep_at(&self, when: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.me.clone();
        // Ends at `when`; holds no strong reference, so a pool replaced meanwhile is dropped.
        runtime.spawn(async move {
            tokio::time::sleep_until(when).await;
            if let Some(ejector) = me.upgrade() {
                ejector.sweep(Instant::now());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 2,
            consecutive_local_origin_failure: 4,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(100),
            max_ejection_percent: 50,
            interval: Duration::from_secs(10),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// An ejector over `n` endpoints on ports 1..=n.
    fn ejector(spec: OutlierSpec, n: u16) -> (watch::Sender<Arc<Vec<SocketAddr>>>, Arc<Ejector>) {
        let (tx, rx) = watch::channel(Arc::new((1..=n).map(addr).collect()));
        (tx, Ejector::new(spec, "test", rx))
    }

    fn ejected(e: &Ejector, d: &Detector, at: Instant) -> bool {
        e.is_ejected(d, &mut Some(e.nanos(at)))
    }

    #[test]
    fn counts_pack_into_one_word() {
        assert_eq!(unpack(pack([1, 2, 3])), [1, 2, 3]);
        assert_eq!(unpack(pack([FIELD_MAX + 5, 0, 7])), [FIELD_MAX, 0, 7]);
    }

    #[test]
    fn each_count_trips_at_its_threshold_and_successes_clear_them() {
        let (_tx, e) = ejector(spec(), 2);
        let d = e.detector(addr(1));
        let s = e.spec;
        assert_eq!(d.count(Attempt::Answered(500), &s), None);
        assert_eq!(d.count(Attempt::Answered(500), &s), None);
        d.succeeded();
        assert_eq!(d.count(Attempt::Answered(500), &s), None);
        assert_eq!(d.count(Attempt::Answered(500), &s), None);
        assert_eq!(
            d.count(Attempt::Answered(500), &s),
            Some(Reason::Consecutive5xx)
        );
        assert_eq!(
            unpack(d.counts.load(Relaxed)),
            [0, 0, 0],
            "the count starts over"
        );

        // 502/503/504 count as gateway failures too; a 500 in between clears that run only.
        assert_eq!(d.count(Attempt::Answered(502), &s), None);
        assert_eq!(d.count(Attempt::Answered(500), &s), None);
        assert_eq!(
            d.count(Attempt::Answered(504), &s),
            Some(Reason::Consecutive5xx)
        );
        assert_eq!(unpack(d.counts.load(Relaxed)), [0, 1, 0]);
        assert_eq!(
            d.count(Attempt::Answered(503), &s),
            Some(Reason::ConsecutiveGatewayFailure)
        );

        // Attempts without an answer count apart; any answer ends their run.
        d.succeeded();
        for _ in 0..3 {
            assert_eq!(d.count(Attempt::NoAnswer, &s), None);
        }
        assert_eq!(d.count(Attempt::Answered(500), &s), None);
        assert_eq!(unpack(d.counts.load(Relaxed)), [1, 0, 0]);
        for _ in 0..3 {
            assert_eq!(d.count(Attempt::NoAnswer, &s), None);
        }
        assert_eq!(
            d.count(Attempt::NoAnswer, &s),
            Some(Reason::ConsecutiveLocalOriginFailure)
        );
        assert_eq!(unpack(d.counts.load(Relaxed)), [1, 0, 0], "5xx run kept");

        let off = OutlierSpec {
            consecutive_5xx: 0,
            ..spec()
        };
        d.succeeded();
        for _ in 0..10 {
            assert_eq!(d.count(Attempt::Answered(500), &off), None, "0 is off");
        }
    }

    #[test]
    fn ejection_lasts_longer_each_time_up_to_the_maximum_and_ends_on_time() {
        let (_tx, e) = ejector(spec(), 2);
        let d = e.detector(addr(1));
        let mut t = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..6 {
            let eject = |t| {
                (0..3)
                    .find_map(|_| e.failed(addr(1), &d, Attempt::Answered(500), t))
                    .expect("ejected on the third 5xx")
            };
            let length = eject(t);
            assert!(ejected(&e, &d, t));
            assert!(ejected(&e, &d, t + length - Duration::from_millis(1)));
            // Failures reported while ejected (late answers) are not counted.
            assert_eq!(e.failed(addr(1), &d, Attempt::Answered(500), t), None);
            assert_eq!(unpack(d.counts.load(Relaxed)), [0, 0, 0]);
            t += length;
            assert!(!ejected(&e, &d, t), "back exactly when its time is up");
            lengths.push(length.as_secs());
        }
        // 30 s × 1, × 2, × 3, then capped at 100 s; the multiplier stops once base × k passes
        // max + base, so a long-ejected endpoint needs no more decay steps than that.
        assert_eq!(lengths, vec![30, 60, 90, 100, 100, 100]);
        assert_eq!(d.multiplier.load(Relaxed), 5);
    }

    #[test]
    fn the_multiplier_drops_one_step_per_interval_in_rotation() {
        let (_tx, e) = ejector(spec(), 2);
        let d = e.detector(addr(1));
        let eject = |t| {
            (0..3)
                .find_map(|_| e.failed(addr(1), &d, Attempt::Answered(500), t))
                .expect("ejected")
        };
        let mut t = Instant::now();
        for want in [30, 60, 90] {
            let length = eject(t);
            assert_eq!(length.as_secs(), want);
            t += length;
        }
        // 25 s in rotation: two whole intervals, so k goes 3 → 1, and the next is 1 + 1 = 2.
        t += Duration::from_secs(25);
        assert_eq!(eject(t).as_secs(), 60);
        t += Duration::from_secs(60);
        // Long healthy: back to the base time.
        t += Duration::from_secs(3600);
        assert_eq!(eject(t).as_secs(), 30);
    }

    #[test]
    fn at_most_max_ejection_percent_of_the_endpoints_are_ejected_at_once() {
        let spec = OutlierSpec {
            max_ejection_percent: 34,
            ..spec()
        };
        let (tx, e) = ejector(spec, 3);
        let t = Instant::now();
        let (a, b) = (e.detector(addr(1)), e.detector(addr(2)));
        let fail = |port, d: &Arc<Detector>| {
            (0..3).find_map(|_| e.failed(addr(port), d, Attempt::Answered(500), t))
        };
        assert!(fail(1, &a).is_some(), "1 of 3 is 33 % ≤ 34 %");
        assert!(fail(2, &b).is_none(), "2 of 3 is 67 % > 34 %");
        assert!(!ejected(&e, &b, t));
        assert_eq!(
            unpack(b.counts.load(Relaxed)),
            [0, 0, 0],
            "its count starts over"
        );

        // Once the first is back, the second may go.
        let later = t + Duration::from_secs(30);
        let fail_later = |d: &Arc<Detector>| {
            (0..3).find_map(|_| e.failed(addr(2), d, Attempt::Answered(500), later))
        };
        assert!(fail_later(&b).is_some());
        assert!(!ejected(&e, &a, later));

        // The cap counts the endpoints listed now: with two listed and one of them ejected,
        // the other may not go.
        tx.send(Arc::new(vec![addr(2), addr(3)])).unwrap();
        let c = e.detector(addr(3));
        let fail_c = |d: &Arc<Detector>| {
            (0..3).find_map(|_| e.failed(addr(3), d, Attempt::Answered(500), later))
        };
        assert!(fail_c(&c).is_none(), "1 of 2 ejected already");

        // A pool of one endpoint never loses it at 50 %; at 100 % it may.
        let half = ejector(
            OutlierSpec {
                max_ejection_percent: 50,
                ..e.spec
            },
            1,
        )
        .1;
        let d = half.detector(addr(1));
        assert!(
            (0..10)
                .find_map(|_| half.failed(addr(1), &d, Attempt::Answered(500), t))
                .is_none()
        );
        let all = ejector(
            OutlierSpec {
                max_ejection_percent: 100,
                ..e.spec
            },
            1,
        )
        .1;
        let d = all.detector(addr(1));
        assert!(
            (0..3)
                .find_map(|_| all.failed(addr(1), &d, Attempt::Answered(500), t))
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_returns_the_endpoint_when_its_time_is_up() {
        let (_tx, e) = ejector(spec(), 2);
        let d = e.detector(addr(1));
        let now = Instant::now();
        let length = (0..3)
            .find_map(|_| e.failed(addr(1), &d, Attempt::Answered(500), now))
            .unwrap();
        assert_eq!(e.ejected.lock().unwrap().len(), 1);
        tokio::time::sleep(length + Duration::from_millis(1)).await;
        assert!(e.ejected.lock().unwrap().is_empty(), "swept by the timer");
        assert_eq!(d.until.load(Relaxed), 0);
        assert_eq!(d.returned.load(Relaxed), e.nanos(now + length));
    }
}
