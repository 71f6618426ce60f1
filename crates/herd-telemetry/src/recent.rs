//! The last requests herd finished, for the dashboard: a small fixed ring that the gateway's
//! proxy path and the sidecar API push to.
//!
//! A push is one atomic increment and an uncontended lock of one slot: the slot is taken with
//! `try_lock`, so a writer never waits (if a reader or another writer holds that slot at that
//! instant, the entry is skipped; the ring is a sample, not a log). Nothing is formatted on the
//! request path and the clock is not read again (the caller hands in the `Instant` it has);
//! readers turn entries into text and wall-clock times.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// When it finished: an `Instant` the caller already had (reading the clock again costs
    /// as much as the rest of a push), turned into wall-clock time only when read.
    pub at: Instant,
    /// The W3C trace id (32 lower-case hex digits), when the request had one.
    pub trace_id: Option<[u8; 32]>,
    /// Where it came from.
    pub source: Source,
    /// What it addressed: shared, never built per request by the gateway.
    pub target: Arc<str>,
    /// The HTTP status answered.
    pub status: u16,
    /// How long it took.
    pub latency: Duration,
}

impl Finished {
    /// A request that started at `started` and took `latency`.
    pub fn new(
        source: Source,
        target: Arc<str>,
        trace_id: Option<[u8; 32]>,
        status: u16,
        started: Instant,
        latency: Duration,
    ) -> Self {
        Self {
            at: started + latency,
            trace_id,
            source,
            target,
            status,
            latency,
        }
    }

    /// When it finished, in milliseconds since the Unix epoch, given the wall-clock time and
    /// the `Instant` of one moment.
    pub fn unix_ms(&self, reference: (SystemTime, Instant)) -> u64 {
        let (wall, now) = reference;
        let ago = now.saturating_duration_since(self.at);
        wall.checked_sub(ago)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
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
            push(Finished::new(
                Source::Api,
                target.clone(),
                None,
                200 + i,
                Instant::now(),
                Duration::from_micros(u64::from(i)),
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
    fn finish_times_become_wall_clock_times_when_read() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_millis(10_000);
        let f = Finished::new(
            Source::Gateway,
            Arc::from("t"),
            None,
            200,
            now - Duration::from_millis(300),
            Duration::from_millis(100),
        );
        assert_eq!(f.unix_ms((wall, now)), 9_800);
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
