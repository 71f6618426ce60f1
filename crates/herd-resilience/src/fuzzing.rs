//! Entry point for the fuzz target in `fuzz/` and the corpus replay test: Dapr `trip`
//! expressions as circuit breakers read them (retry backoff is fuzzed from `herd-config`, which
//! parses its durations). Not part of the API.
//!
//! What must hold: parsing never panics; an expression herd accepted reads back the same from
//! how it is shown; evaluating it never panics.

use crate::{Counts, Trip};

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
