//! The embedded pub/sub log opened from arbitrary file contents: an error or a working log,
//! never a panic or a hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_pubsub::fuzzing::recover(data));
