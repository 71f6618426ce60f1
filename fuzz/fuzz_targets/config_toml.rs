//! `herd.toml` text: loading reports errors that name the file and a line in it, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_config::fuzzing::config(data));
