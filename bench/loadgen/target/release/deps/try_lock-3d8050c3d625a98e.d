/work/main/bench/loadgen/target/release/deps/try_lock-3d8050c3d625a98e.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/try-lock-0.2.5/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libtry_lock-3d8050c3d625a98e.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/try-lock-0.2.5/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libtry_lock-3d8050c3d625a98e.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/try-lock-0.2.5/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/try-lock-0.2.5/src/lib.rs:
