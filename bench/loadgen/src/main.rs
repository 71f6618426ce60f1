//! `loadgen`: the fixed-rate HTTP load generator and the echo app of herd's benchmarks.
//!
//! ```text
//! loadgen run --url URL --rate R --duration S [--conns C] [--warmup S] [--method M]
//!             [--body-bytes N | --body-file F] [--header 'name: value']... [--expect STATUS]
//!             [--label NAME]
//! loadgen serve [--port P]
//! ```
//!
//! `run` sends R requests per second on C keep-alive connections, each connection on its own
//! fixed schedule (wrk2's model), and prints one line
//! `LOADGEN label= ... p50_us= p99_us= p999_us= ...` with latencies measured against the
//! schedule, so a slow answer also delays (and is charged to) the requests queued behind it.
//! `serve` answers every request 200 with the request's own body (`{}` when empty); it takes
//! its listening socket from fd 3 (systemd socket activation, as herd hands it over) or binds
//! `127.0.0.1:$PORT`.

mod args;
mod run;
mod serve;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let rest: Vec<String> = argv.collect();
    let result = match command.as_str() {
        "run" => args::RunArgs::parse(&rest).and_then(run::main),
        "serve" => args::ServeArgs::parse(&rest).and_then(serve::main),
        _ => Err("usage: loadgen run --url URL --rate R --duration S ... | loadgen serve".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
