//! Control-socket request lines as `herd up` reads them, and reply lines as the CLI reads them:
//! parsing never panics, and what parses is written back the same way.
//!
//! The protocol's types live in the binary crate; they are compiled here from the same file.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/herd/src/control/proto.rs"]
mod proto;

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto::check_wire(data));
