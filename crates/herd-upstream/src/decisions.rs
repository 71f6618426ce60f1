//! What a pool decided for one request: endpoints it left out of its choices (ejected, breaker
//! open or busy) and state changes its attempts caused (a breaker opened or closed, an
//! ejection), for the request's access-log line (the gateway writes them out).

use std::net::SocketAddr;

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
    /// Notes that `addr` was left out, for `why` (each pair once).
    pub(crate) fn skip(&mut self, addr: SocketAddr, why: Skip) {
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

    /// Notes a state change of `addr`.
    pub(crate) fn change(&mut self, addr: SocketAddr, change: Change) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_cost_nothing_until_something_happens_and_hold_a_few() {
        let mut d = Decisions::default();
        assert!(d.is_empty() && d.skipped().next().is_none() && d.changes().next().is_none());
        for port in 0..6 {
            d.skip(SocketAddr::from(([127, 0, 0, 1], port)), Skip::BreakerOpen);
        }
        assert_eq!((d.skipped().count(), d.unlisted()), (4, 2));
        assert!(!d.is_empty() && d.changes().next().is_none());
        for _ in 0..6 {
            d.change(SocketAddr::from(([127, 0, 0, 1], 1)), Change::BreakerOpened);
        }
        d.change(SocketAddr::from(([127, 0, 0, 1], 2)), Change::BreakerClosed);
        let changes: Vec<_> = d.changes().collect();
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[3].1, Change::BreakerClosed, "the latest is kept");
    }
}
