/work/main/bench/loadgen/target/release/deps/loadgen-e4ba3618de70699f.d: src/main.rs src/args.rs src/run.rs src/serve.rs Cargo.toml

/work/main/bench/loadgen/target/release/deps/libloadgen-e4ba3618de70699f.rmeta: src/main.rs src/args.rs src/run.rs src/serve.rs Cargo.toml

src/main.rs:
src/args.rs:
src/run.rs:
src/serve.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# env-dep:CLIPPY_CONF_DIR
