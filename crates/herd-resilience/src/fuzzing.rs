//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: Dapr `trip`
//! expressions and retry backoff as policies read them. Not part of the API.
//!
//! What must hold: parsing never panics; an expression herd accepted reads back the same from
//! how it is shown; evaluating it and computing any retry delay never panics.

use std::time::Duration;

use crate::{Backoff, Counts, Trip};

/// Eight bytes of counters, then the expression.
pub fn trip(data: &[u8]) {
    let Some((counts, expr)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Ok(expr) = std::str::from_utf8(expr) else {
        return;
    };
    let Ok(trip) = Trip::parse(expr) else {
        return;
    };
    let again = Trip::parse(&trip.to_string()).expect("a shown expression parses");
    let counts = Counts {
        requests: u32::from(u16::from_le_bytes([counts[0], counts[1]])),
        total_failures: u32::from(u16::from_le_bytes([counts[2], counts[3]])),
        consecutive_failures: u32::from(u16::from_le_bytes([counts[4], counts[5]])),
        consecutive_successes: u32::from(u16::from_le_bytes([counts[6], counts[7]])),
    };
    assert_eq!(trip.holds(&counts), again.holds(&counts));
}

/// A retry policy's `duration` and `maxInterval` (two lines, Go-style durations as in Dapr's
/// resiliency spec), then an attempt number: the delay never panics and stays within bounds.
pub fn retry(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let mut duration = || {
        lines
            .next()
            .and_then(|l| humantime::parse_duration(l.trim()).ok())
    };
    let (Some(initial), Some(max)) = (duration(), duration()) else {
        return;
    };
    let attempt = text.len() as u32;
    for backoff in [
        Backoff::Constant(initial),
        Backoff::Exponential { initial, max },
    ] {
        for jitter in [0.0, 0.5, 0.999_999] {
            let d = backoff.delay(attempt, jitter);
            assert!(d <= initial.max(max), "{backoff:?} {attempt}: {d:?}");
        }
        let _ = backoff.delay(u32::MAX, 1.0) + Duration::ZERO;
    }
}
