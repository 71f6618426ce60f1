//! Query strings (`metadata.*` and the rest) on every sidecar API route, with a valid body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_api::fuzzing::query(data));
