/work/main/bench/loadgen/target/release/deps/want-d3ed4ae0db063601.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/want-0.3.2/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libwant-d3ed4ae0db063601.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/want-0.3.2/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libwant-d3ed4ae0db063601.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/want-0.3.2/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/want-0.3.2/src/lib.rs:
