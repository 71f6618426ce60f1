/work/main/bench/loadgen/target/release/deps/atomic_waker-b11ede1b38d5b804.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/atomic-waker-1.1.2/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libatomic_waker-b11ede1b38d5b804.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/atomic-waker-1.1.2/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libatomic_waker-b11ede1b38d5b804.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/atomic-waker-1.1.2/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/atomic-waker-1.1.2/src/lib.rs:
