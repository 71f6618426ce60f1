//! The last requests herd finished, for the dashboard: a small fixed ring that the gateway's
//! proxy path and the sidecar API push to.
//!
//! A push is one atomic increment and an uncontended lock of one slot: the slot is taken with
//! `try_lock`, so a writer never waits (if a reader or another writer holds that slot at that
//! instant, the entry is skipped; the ring is a sample, not a log). Nothing is formatted on the
//! request path; readers turn entries into text.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Entries kept.
pub const CAPACITY: usize = 128;

/// Where a finished request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A request proxied by the gateway; the target names route and upstream.
    Gateway,
    /// A request to the sidecar API; the target is the method and route template.
    Api,
}

impl Source {
    /// The lower-case name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Gateway => "gateway",
            Source::Api => "api",
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Finished {
    /// When it finished, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The W3C trace id (32 lower-case hex digits), when the request had one.
    pub trace_id: Option<[u8; 32]>,
    /// Where it came from.
    pub source: Source,
    /// What it addressed: shared, never built per request by the gateway.
    pub target: Arc<str>,
    /// The HTTP status answered.
    pub status: u16,
    /// How long it took, in microseconds.
    pub latency_us: u64,
}

impl Finished {
    /// An entry finished now.
    pub fn now(
        source: Source,
        target: Arc<str>,
        trace_id: Option<[u8; 32]>,
        status: u16,
        latency: std::time::Duration,
    ) -> Self {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            at_ms,
            trace_id,
            source,
            target,
            status,
            latency_us: latency.as_micros().min(u128::from(u64::MAX)) as u64,
        }
    }
}

/// A slot: the entry and its sequence number.
type Slot = Mutex<Option<(u64, Finished)>>;

static NEXT: AtomicU64 = AtomicU64::new(0);
static SLOTS: [Slot; CAPACITY] = [const { Mutex::new(None) }; CAPACITY];

/// Adds `entry` to the ring, replacing the oldest.
pub fn push(entry: Finished) {
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut slot) = SLOTS[(seq % CAPACITY as u64) as usize].try_lock() {
        *slot = Some((seq, entry));
    }
}

/// The trace id of a `traceparent` header value, when it has the W3C shape.
pub fn trace_id_of(traceparent: &[u8]) -> Option<[u8; 32]> {
    let tp = traceparent.trim_ascii();
    if tp.len() != 55 || tp[2] != b'-' || tp[35] != b'-' {
        return None;
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&tp[3..35]);
    id.iter().all(u8::is_ascii_hexdigit).then(|| {
        id.make_ascii_lowercase();
        id
    })
}

/// Up to `n` entries, newest first.
pub fn latest(n: usize) -> Vec<Finished> {
    let mut all: Vec<(u64, Finished)> = SLOTS
        .iter()
        .filter_map(|s| s.lock().ok().and_then(|s| s.clone()))
        .collect();
    all.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    all.into_iter().take(n).map(|(_, f)| f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_entries_newest_first() {
        let target: Arc<str> = Arc::from("recent-test");
        for i in 0..(CAPACITY as u16 + 10) {
            push(Finished::now(
                Source::Api,
                target.clone(),
                None,
                200 + i,
                std::time::Duration::from_micros(u64::from(i)),
            ));
        }
        let mine: Vec<u16> = latest(CAPACITY)
            .into_iter()
            .filter(|f| f.target == target)
            .map(|f| f.status)
            .collect();
        // Other tests in this process may push too; ours are still newest first, the last ten
        // pushed among them, and never more than the ring holds.
        assert!(mine.len() <= CAPACITY);
        assert_eq!(mine[0], 200 + CAPACITY as u16 + 9);
        assert!(mine.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn trace_ids_come_from_well_formed_traceparents() {
        let tp = b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01";
        assert_eq!(
            &trace_id_of(tp).unwrap(),
            b"0af7651916cd43dd8448eb211c80319c"
        );
        assert!(trace_id_of(b"00-zzz-b7ad6b7169203331-01").is_none());
        assert!(trace_id_of(b"").is_none());
    }
}
