//! `redb-direct`: redb used directly, the peer of herd's embedded state store in figure P5
//! (`bench/state.sh`).
//!
//! ```text
//! redb-direct --path FILE --op get|set --value TEXT --workers N --duration S [--warmup S] [--key K]
//! ```
//!
//! N threads share one redb database at FILE (created if missing) and, until the duration is
//! over, each does one operation after the other on the key K (default `herd||p5key`, what herd's
//! embedded store keeps the API's key `p5key` under: `<app id>||<key>`) of the table `state`:
//! - `set`: one write transaction per operation (`Durability::Immediate`: redb fsyncs before the
//!   commit returns), inserting the record herd's embedded store keeps for TEXT
//!   (`[version u64 LE][expires at u64 LE][TEXT]`, so the same number of bytes). redb takes one
//!   write transaction at a time: concurrent writers queue, one commit (and fsync) each.
//! - `get`: one read transaction per operation; a record that is not the one written counts as
//!   an error.
//!
//! The key is written once before the run. `--warmup` seconds of the same operations run first,
//! unmeasured. Prints one line:
//! `REDB op= workers= ops= errors= duration_us= p50_us= p99_us= max_us= cpu_ticks=`
//! (latency per operation, from before the transaction begins to after its commit or read;
//! `cpu_ticks`: this process's user + system time during the measured run, in clock ticks).
//! Exits 1 on a usage error, when any operation failed, or when none completed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

/// The table of herd's embedded store.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// herd's page cache per redb database (`herd-storage`).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Set,
}

struct Args {
    path: PathBuf,
    key: String,
    op: Op,
    value: Vec<u8>,
    workers: usize,
    duration: Duration,
    warmup: Duration,
}

fn seconds(key: &str, v: &str) -> Result<Duration, Error> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("--{key}: `{v}` is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("--{key}: {v} is out of range").into());
    }
    Ok(Duration::from_secs_f64(s))
}

impl Args {
    fn parse(argv: &[String]) -> Result<Self, Error> {
        let mut a = Args {
            path: PathBuf::new(),
            key: "herd||p5key".into(),
            op: Op::Get,
            value: Vec::new(),
            workers: 1,
            duration: Duration::ZERO,
            warmup: Duration::ZERO,
        };
        let mut it = argv.iter();
        while let Some(name) = it.next() {
            let key = name
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument `{name}`"))?;
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            match key {
                "path" => a.path = PathBuf::from(v),
                "key" => a.key = v.clone(),
                "op" => {
                    a.op = match v.as_str() {
                        "get" => Op::Get,
                        "set" => Op::Set,
                        _ => return Err(format!("--op: `{v}` is neither get nor set").into()),
                    }
                }
                "value" => a.value = v.as_bytes().to_vec(),
                "workers" => {
                    a.workers = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=4096).contains(n))
                        .ok_or_else(|| format!("--workers: `{v}` is not 1..=4096"))?
                }
                "duration" => a.duration = seconds(key, v)?,
                "warmup" => a.warmup = seconds(key, v)?,
                _ => return Err(format!("unknown option --{key}").into()),
            }
        }
        if a.path.as_os_str().is_empty() || a.duration.is_zero() || a.value.is_empty() {
            return Err("--path, --value and --duration are required".into());
        }
        Ok(a)
    }
}

/// The record herd's embedded store writes: version, expiry (0: never), the value.
fn record(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn set(db: &Database, key: &str, version: u64, value: &[u8]) -> Result<(), Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut table = txn.open_table(STATE)?;
        table.insert(key, record(version, value).as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

fn get(db: &Database, key: &str, value: &[u8]) -> Result<(), Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(STATE)?;
    let guard = table.get(key)?.ok_or_else(|| format!("{key} is missing"))?;
    let bytes = guard.value();
    if bytes.len() != 16 + value.len() || &bytes[16..] != value {
        return Err(format!("{key} holds another record ({} bytes)", bytes.len()).into());
    }
    Ok(())
}

/// This process's user + system CPU time so far, in clock ticks (`/proc/self/stat`).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are 12 and 13 after the command name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

struct Outcome {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
}

fn run(a: Args) -> Result<bool, Error> {
    let db = Arc::new(
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&a.path)?,
    );
    let version = Arc::new(AtomicU64::new(1));
    set(&db, &a.key, 0, &a.value)?;
    let value: Arc<[u8]> = a.value.into();
    let key: Arc<str> = a.key.into();
    let start = Arc::new(Barrier::new(a.workers + 1));
    // Set by the main thread once every worker waits at the barrier.
    let times = Arc::new(std::sync::OnceLock::<(Instant, Instant)>::new());
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let workers: Vec<_> = (0..a.workers)
        .map(|_| {
            let (db, key, value, version, start, times, first_error) = (
                db.clone(),
                key.clone(),
                value.clone(),
                version.clone(),
                start.clone(),
                times.clone(),
                first_error.clone(),
            );
            let op = a.op;
            std::thread::spawn(move || {
                let mut out = Outcome {
                    hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
                    ops: 0,
                    errors: 0,
                };
                start.wait();
                let (measure_from, end) = *times.get().expect("set before the barrier opens");
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let result = match op {
                        Op::Set => set(&db, &key, version.fetch_add(1, Ordering::Relaxed), &value),
                        Op::Get => get(&db, &key, &value),
                    };
                    if t0 < measure_from {
                        continue;
                    }
                    match result {
                        Ok(()) => {
                            let us = t0.elapsed().as_micros().max(1) as u64;
                            out.hist.saturating_record(us);
                            out.ops += 1;
                        }
                        Err(e) => {
                            out.errors += 1;
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                out
            })
        })
        .collect();
    let now = Instant::now();
    let measure_from = now + a.warmup;
    times
        .set((measure_from, measure_from + a.duration))
        .expect("set once");
    start.wait();
    let sleep = measure_from.saturating_duration_since(Instant::now());
    std::thread::sleep(sleep);
    let cpu0 = cpu_ticks();
    let mut total = Outcome {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        ops: 0,
        errors: 0,
    };
    for w in workers {
        let o = w.join().map_err(|_| "a worker panicked")?;
        total.hist.add(&o.hist)?;
        total.ops += o.ops;
        total.errors += o.errors;
    }
    let elapsed = measure_from.elapsed();
    let cpu = cpu_ticks().saturating_sub(cpu0);
    // What the last write left must read back.
    if let Err(e) = get(&db, &key, &value) {
        total.errors += 1;
        first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| format!("after the run: {e}"));
    }
    if let Some(e) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        eprintln!("redb-direct: first error: {e}");
    }
    println!(
        "REDB op={} workers={} ops={} errors={} duration_us={} p50_us={} p99_us={} max_us={} cpu_ticks={}",
        if a.op == Op::Get { "get" } else { "set" },
        a.workers,
        total.ops,
        total.errors,
        elapsed.as_micros(),
        total.hist.value_at_quantile(0.5),
        total.hist.value_at_quantile(0.99),
        total.hist.max(),
        cpu
    );
    Ok(total.errors == 0 && total.ops > 0)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match Args::parse(&argv).and_then(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("redb-direct: {e}");
            eprintln!(
                "usage: redb-direct --path FILE --op get|set --value TEXT --workers N --duration S [--warmup S] [--key K]"
            );
            ExitCode::FAILURE
        }
    }
}
