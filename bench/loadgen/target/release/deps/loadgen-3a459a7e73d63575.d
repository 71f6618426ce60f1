/work/main/bench/loadgen/target/release/deps/loadgen-3a459a7e73d63575.d: src/main.rs src/args.rs src/run.rs src/serve.rs

/work/main/bench/loadgen/target/release/deps/loadgen-3a459a7e73d63575: src/main.rs src/args.rs src/run.rs src/serve.rs

src/main.rs:
src/args.rs:
src/run.rs:
src/serve.rs:
