//! A Dapr resource file (components, subscriptions, resiliency) in `resources_path`: loading
//! reports errors that name the file, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_config::fuzzing::resources(data));
