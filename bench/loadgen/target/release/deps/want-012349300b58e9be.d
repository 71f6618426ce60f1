/work/main/bench/loadgen/target/release/deps/want-012349300b58e9be.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/want-0.3.2/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libwant-012349300b58e9be.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/want-0.3.2/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/want-0.3.2/src/lib.rs:
