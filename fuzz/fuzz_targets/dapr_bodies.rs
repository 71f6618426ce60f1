//! Requests to the sidecar API's state, lock, publish and metadata routes, over the real router
//! and embedded stores: never a panic, never a 5xx for what a client sent, errors in Dapr JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_api::fuzzing::request(data));
