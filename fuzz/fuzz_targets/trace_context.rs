//! `traceparent` and `tracestate` headers: parsed, and sent on unchanged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_telemetry::fuzzing::trace_context(data));
