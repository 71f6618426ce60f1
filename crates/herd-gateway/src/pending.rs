//! Connections that have not sent a complete first request yet: bounded in time and in number.
//!
//! hyper's header read timeout starts only once it reads a request head, and the HTTP/1-or-2
//! detection before it waits for the first bytes without any deadline, so a client that
//! connects and sends nothing would hold its connection (and a file descriptor) for ever. Every
//! accepted connection is therefore registered here until its first request head has arrived:
//!
//! - it is closed when `header_read_timeout` passes from its accept without one (a client that
//!   sends nothing, or a TLS handshake or head that trickles in);
//! - at most `max_pending_connections` wait at once: a connection accepted past that closes the
//!   one that has waited longest. Holding the cap with idle connections thus does not lock out
//!   clients, whose request follows their connect at once, while an attacker's connections are
//!   the oldest and go first.
//!
//! `herd_gateway_pending_connections` is the number waiting, and
//! `herd_gateway_pending_closed_total{reason="timeout"|"capacity"}` counts the closed ones.
//! The request path pays one relaxed atomic load per request once the first has arrived, and
//! the connection's task stops polling the deadline then (`Pending::watch`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;

/// The connections without a first request, shared by every listener of a gateway.
pub struct Pending {
    max: usize,
    timeout: Duration,
    /// Waiting connections by accept order, so the oldest is the first entry.
    waiting: Mutex<BTreeMap<u64, std::sync::Arc<Slot>>>,
    next: AtomicU64,
    gauge: metrics::Gauge,
    timed_out: metrics::Counter,
    evicted: metrics::Counter,
}

/// One accepted connection's place among the pending.
pub struct Slot {
    id: u64,
    deadline: tokio::time::Instant,
    /// Set once its first request head arrived.
    served: AtomicBool,
    /// Signalled when a newer connection took its place.
    evict: Notify,
}

impl Pending {
    /// At most `max` waiting connections, each for at most `timeout`.
    pub fn new(max: usize, timeout: Duration) -> Self {
        Self {
            max: max.max(1),
            timeout,
            waiting: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            gauge: metrics::gauge!("herd_gateway_pending_connections"),
            timed_out: metrics::counter!("herd_gateway_pending_closed_total", "reason" => "timeout"),
            evicted: metrics::counter!("herd_gateway_pending_closed_total", "reason" => "capacity"),
        }
    }

    /// Registers a connection accepted now; past the cap, the one waiting longest is told to
    /// close.
    pub fn admit(&self) -> std::sync::Arc<Slot> {
        let slot = std::sync::Arc::new(Slot {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            deadline: tokio::time::Instant::now() + self.timeout,
            served: AtomicBool::new(false),
            evict: Notify::new(),
        });
        let (oldest, count) = {
            let mut waiting = self.waiting.lock().expect("pending poisoned");
            waiting.insert(slot.id, slot.clone());
            let oldest = if waiting.len() > self.max {
                waiting.pop_first().map(|(_, s)| s)
            } else {
                None
            };
            (oldest, waiting.len())
        };
        self.gauge.set(count as f64);
        if let Some(old) = oldest {
            // A permit is stored if its task is not waiting yet, so the signal is not lost.
            old.evict.notify_one();
        }
        slot
    }

    /// The connection of `slot` has a request: it leaves the pending ones for good.
    #[inline]
    pub fn served(&self, slot: &Slot) {
        if slot.served.load(Ordering::Relaxed) || slot.served.swap(true, Ordering::AcqRel) {
            return;
        }
        self.forget(slot);
    }

    /// The connection of `slot` ended (the client closed it, or it was closed here): it no
    /// longer waits, whether or not a request came.
    pub fn closed(&self, slot: &Slot) {
        self.served(slot);
    }

    fn forget(&self, slot: &Slot) {
        let count = {
            let mut waiting = self.waiting.lock().expect("pending poisoned");
            waiting.remove(&slot.id);
            waiting.len()
        };
        self.gauge.set(count as f64);
    }

    /// Runs `conn`, a connection's whole life, until it ends or until the connection of `slot`
    /// must be closed ([`Pending::expired`]), then counts it closed. Once its first request has
    /// arrived the deadline is dropped, so the wake-ups of the requests that follow poll no timer.
    pub async fn watch(&self, slot: &Slot, conn: impl Future<Output = ()>) {
        let mut conn = std::pin::pin!(conn);
        let mut expiry = Some(Box::pin(self.expired(slot)));
        std::future::poll_fn(|cx| {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if let Some(expired) = &mut expiry {
                // `expired` never resolves once a request arrived: stop polling it.
                if slot.served.load(Ordering::Relaxed) {
                    expiry = None;
                } else if expired.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await;
        self.closed(slot);
    }

    /// Resolves when the connection of `slot` must be closed: its time ran out, or a newer
    /// connection took its place, before a request arrived. Never resolves once one has.
    pub async fn expired(&self, slot: &Slot) {
        let timed_out = tokio::select! {
            _ = tokio::time::sleep_until(slot.deadline) => true,
            _ = slot.evict.notified() => false,
        };
        // A request that arrived meanwhile wins: the connection is in use.
        if slot.served.swap(true, Ordering::AcqRel) {
            return std::future::pending().await;
        }
        if timed_out {
            self.forget(slot);
            self.timed_out.increment(1);
            tracing::debug!(
                "closing a connection that sent no request within {:?}",
                self.timeout
            );
        } else {
            self.evicted.increment(1);
            tracing::debug!(
                "closing the longest-waiting connection without a request: more than {} wait",
                self.max
            );
        }
    }

    /// How many connections wait for their first request.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().expect("pending poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_expires_and_one_with_a_request_does_not() {
        let pending = Arc::new(Pending::new(10, Duration::from_secs(1)));
        let idle = pending.admit();
        let busy = pending.admit();
        pending.served(&busy);
        assert_eq!(pending.len(), 1);
        let started = tokio::time::Instant::now();
        pending.expired(&idle).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(pending.len(), 0);
        let p = pending.clone();
        let b = busy.clone();
        let waiting = tokio::spawn(async move { p.expired(&b).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "a served connection never expires");
        waiting.abort();
    }

    #[test]
    fn a_connection_closed_without_a_request_no_longer_counts() {
        let pending = Pending::new(10, Duration::from_secs(1));
        let slot = pending.admit();
        pending.closed(&slot);
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_cap_the_oldest_is_closed() {
        let pending = Pending::new(2, Duration::from_secs(60));
        let first = pending.admit();
        let second = pending.admit();
        let third = pending.admit();
        assert_eq!(pending.len(), 2);
        let started = tokio::time::Instant::now();
        pending.expired(&first).await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "closed at once, not at the timeout"
        );
        pending.served(&second);
        pending.served(&third);
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_arriving_as_the_connection_is_evicted_keeps_it() {
        let pending = Arc::new(Pending::new(1, Duration::from_secs(60)));
        let first = pending.admit();
        let _second = pending.admit();
        pending.served(&first);
        let p = pending.clone();
        let waiting = tokio::spawn(async move { p.expired(&first).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        waiting.abort();
    }
}
