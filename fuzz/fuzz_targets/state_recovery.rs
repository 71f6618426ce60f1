//! The embedded state store opened from arbitrary file contents: an error or a working store,
//! never a panic or a hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_state::fuzzing::recover(data));
