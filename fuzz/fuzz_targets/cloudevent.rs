//! CloudEvents envelopes a publish builds from a body and content type, with caller attributes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_api::fuzzing::cloudevent(data));
