/work/main/bench/loadgen/target/release/loadgen: /work/main/bench/loadgen/src/args.rs /work/main/bench/loadgen/src/main.rs /work/main/bench/loadgen/src/run.rs /work/main/bench/loadgen/src/serve.rs
