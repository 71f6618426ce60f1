//! `loadgen run`: a fixed request rate, latency measured against the schedule.
//!
//! Each of the C connections sends its share of the requests at fixed times (connection i at
//! `start + (i + k·C) / rate`, k = 0, 1, …), like wrk2. When an answer comes back after the
//! connection's next request was due, that request goes out at once and its latency counts from
//! the time it was due, not from when it could be sent: the wait a slow answer imposes on the
//! requests behind it is measured (no coordinated omission). When the connection was free, the
//! latency counts from the moment the request was actually sent, so the generator's own timer
//! granularity (tokio's timer wheel ticks in milliseconds) is not charged to the server; sends
//! that woke more than 2 ms late are counted (`late=`) as a sign of a starved generator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::args::RunArgs;

type Error = Box<dyn std::error::Error>;

/// A request's longest wait for its answer before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A send that woke this much later than scheduled counts as late.
const LATE: Duration = Duration::from_millis(2);

/// Everything a connection sends, shared by all of them.
struct Target {
    addr: SocketAddr,
    method: Method,
    path: Uri,
    host: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    expect: Option<u16>,
    unique: Option<(HeaderName, String)>,
    record: bool,
}

/// One connection's (and, merged, the run's) counts.
struct Stats {
    hist: Histogram<u64>,
    ok: u64,
    bad: u64,
    errors: u64,
    late: u64,
    statuses: BTreeMap<u16, u64>,
    /// With `--record`: (request number, status or 0 for an error) of every request sent.
    outcomes: Vec<(u64, u16)>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            // 1 µs to 60 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ok: 0,
            bad: 0,
            errors: 0,
            late: 0,
            statuses: BTreeMap::new(),
            outcomes: Vec::new(),
        }
    }

    fn merge(&mut self, other: Stats) {
        self.hist.add(&other.hist).expect("same bounds");
        self.ok += other.ok;
        self.bad += other.bad;
        self.errors += other.errors;
        self.late += other.late;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.outcomes.extend(other.outcomes);
    }
}

/// Runs the load and prints the result line.
pub fn main(args: RunArgs) -> Result<(), Error> {
    let target = target(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut stats = rt.block_on(drive(&args, target))?;
    if let Some(path) = &args.record {
        stats.outcomes.sort_unstable();
        let mut out = String::with_capacity(stats.outcomes.len() * 8);
        for (n, status) in &stats.outcomes {
            match status {
                0 => out.push_str(&format!("{n} error\n")),
                s => out.push_str(&format!("{n} {s}\n")),
            }
        }
        std::fs::write(path, out).map_err(|e| format!("--record {}: {e}", path.display()))?;
    }
    print_result(&args, &stats);
    Ok(())
}

fn target(args: &RunArgs) -> Result<Target, Error> {
    let uri: Uri = args.url.parse().map_err(|e| format!("--url: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("--url: only http:// is supported".into());
    }
    let authority = uri.authority().ok_or("--url has no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))?
        .next()
        .ok_or("--url: host did not resolve")?;
    let path: Uri = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()?;
    let mut headers = Vec::new();
    for (n, v) in &args.headers {
        headers.push((
            HeaderName::try_from(n.as_str())?,
            HeaderValue::try_from(v.as_str())?,
        ));
    }
    if !args.body.is_empty() && !headers.iter().any(|(n, _)| n == CONTENT_TYPE) {
        headers.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    }
    Ok(Target {
        addr,
        method: Method::from_bytes(args.method.as_bytes())?,
        path,
        host: HeaderValue::try_from(authority.as_str())?,
        headers,
        body: Bytes::from(args.body.clone()),
        expect: args.expect,
        unique: args
            .unique_header
            .as_ref()
            .map(|(n, prefix)| Ok::<_, Error>((HeaderName::try_from(n.as_str())?, prefix.clone())))
            .transpose()?,
        record: args.record.is_some(),
    })
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn drive(args: &RunArgs, target: Target) -> Result<Stats, Error> {
    let target = std::sync::Arc::new(target);
    // Every connection is open before the schedule starts.
    let mut senders = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        senders.push(
            connect(target.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", target.addr))?,
        );
    }
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, sender) in senders.into_iter().enumerate() {
        let target = target.clone();
        let (conns, rate) = (args.conns, args.rate);
        tasks.spawn(async move {
            connection(i, conns, rate, start, measure_from, end, sender, &target).await
        });
    }
    let mut total = Stats::new();
    while let Some(r) = tasks.join_next().await {
        total.merge(r?);
    }
    Ok(total)
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    i: usize,
    conns: usize,
    rate: f64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    sender: SendRequest<Full<Bytes>>,
    target: &Target,
) -> Stats {
    let mut stats = Stats::new();
    let record = target.record;
    let mut sender = Some(sender);
    let mut prev_done = start;
    for k in 0u64.. {
        let due = start + Duration::from_secs_f64((i as f64 + k as f64 * conns as f64) / rate);
        if due >= end {
            break;
        }
        let free = prev_done <= due;
        if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
        }
        let woke = Instant::now();
        let from = if free { woke } else { due };
        let measured = due >= measure_from;
        if measured && free && woke > due + LATE {
            stats.late += 1;
        }
        let seq = i as u64 + k * conns as u64;
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, send(&mut sender, target, seq)).await;
        prev_done = Instant::now();
        if record {
            // Every request is recorded, warm-up included: a script checks what became of each.
            let status = match &outcome {
                Ok(Ok(status)) => *status,
                _ => 0,
            };
            stats.outcomes.push((seq, status));
        }
        if !measured {
            if !matches!(outcome, Ok(Ok(_))) {
                sender = None;
            }
            continue;
        }
        match outcome {
            Ok(Ok(status)) => {
                let us = (prev_done - from).as_micros().clamp(1, 60_000_000) as u64;
                stats.hist.saturating_record(us);
                *stats.statuses.entry(status).or_default() += 1;
                let good = match target.expect {
                    Some(s) => status == s,
                    None => (200..300).contains(&status),
                };
                if good {
                    stats.ok += 1;
                } else {
                    stats.bad += 1;
                }
            }
            Ok(Err(_)) | Err(_) => {
                stats.errors += 1;
                sender = None; // a fresh connection for the next request
            }
        }
    }
    stats
}

/// One request on the connection (opened anew when the last one failed); the answer's status
/// once its whole body has arrived.
async fn send(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    target: &Target,
    seq: u64,
) -> Result<u16, Error> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(target.addr).await?);
    }
    let s = sender.as_mut().expect("connected above");
    s.ready().await?;
    let mut req = Request::builder()
        .method(target.method.clone())
        .uri(target.path.clone())
        .header(HOST, target.host.clone());
    for (n, v) in &target.headers {
        req = req.header(n, v);
    }
    if let Some((name, prefix)) = &target.unique {
        req = req.header(name, format!("{prefix}{seq}"));
    }
    let req = req.body(Full::new(target.body.clone()))?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

fn print_result(args: &RunArgs, s: &Stats) {
    let q = |p: f64| s.hist.value_at_quantile(p);
    let secs = args.duration.as_secs_f64();
    let statuses: Vec<String> = s.statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "LOADGEN label={} rate={} conns={} duration_s={} body_bytes={} requests={} ok={} bad={} errors={} achieved_rps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} mean_us={:.0} late={} statuses={}",
        args.label,
        args.rate,
        args.conns,
        secs,
        args.body.len(),
        s.ok + s.bad + s.errors,
        s.ok,
        s.bad,
        s.errors,
        (s.ok + s.bad) as f64 / secs,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        s.hist.max(),
        s.hist.mean(),
        s.late,
        if statuses.is_empty() {
            "-".to_string()
        } else {
            statuses.join(",")
        },
    );
}
