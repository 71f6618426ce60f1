//! Resiliency expressions: circuit breaker `trip` conditions, retry backoff durations, and
//! subscription rule `match` expressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    herd_resilience::fuzzing::trip(data);
    herd_config::fuzzing::retry(data);
    herd_config::fuzzing::match_rule(data);
});
