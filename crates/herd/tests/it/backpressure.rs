//! Back-pressure on delivery: a subscriber app that stops answering holds at most its
//! subscription's `max_in_flight` deliveries, herd's memory stays flat while its topic keeps
//! growing on disk, and the same app's other subscription keeps flowing.
//!
//! The app is `tests/node/subscriber.js`; events whose `data.action` is `"hang"` are recorded
//! and never answered.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::state::Api;
use crate::util::{Client, free_port, get, node_available, wait_for};

/// Deliveries the stalled subscription may have at the app at once.
const STALLED_IN_FLIGHT: usize = 8;
/// Body of one message to the stalled topic: large, so that holding them would show in RSS.
const BIG: usize = 32 * 1024;
/// Messages per phase: 32 MiB, the embedded log's page cache.
const PHASE: usize = 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Publishes `n` messages `body(i)` to `topic` from 8 keep-alive connections.
fn publish_many(addr: SocketAddr, topic: &str, n: usize, body: impl Fn(usize) -> Value + Sync) {
    std::thread::scope(|s| {
        for lane in 0..8 {
            let body = &body;
            s.spawn(move || {
                let mut client = Client::new(addr);
                for i in (lane..n).step_by(8) {
                    let r = client
                        .request(
                            "POST",
                            &format!("/v1.0/publish/pubsub/{topic}"),
                            &[("Content-Type", "application/json")],
                            body(i).to_string().as_bytes(),
                        )
                        .unwrap();
                    assert_eq!(r.status, 204, "{}", r.body);
                }
            });
        }
    });
}

/// `herd_pubsub_in_flight` of topic `topic` on the admin listener's `/metrics`.
fn in_flight(admin: SocketAddr, topic: &str) -> Option<u64> {
    let text = get(admin, "/metrics").ok()?.body;
    let needle = format!("topic=\"{topic}\"");
    text.lines()
        .filter(|l| l.starts_with("herd_pubsub_in_flight{") && l.contains(&needle))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Deliveries recorded by the app on `path`, by `data.n`.
fn delivered(dir: &Path, path: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["path"] == path)
                .filter_map(|e| e["data"]["n"].as_u64()),
        );
    }
    out
}

#[test]
fn a_stalled_subscriber_holds_max_in_flight_and_stalls_nothing_else() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let events_dir = tempfile::tempdir().unwrap();
    let dir = events_dir.path();
    let subscriber = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/subscriber.js");
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        "[admin]\nlisten = \"{admin}\"\n\n[[service]]\nname = \"app\"\ncommand = [\"node\", \"{}\"]\nport = \"auto\"\nenv = {{ EVENTS_DIR = \"{}\" }}\n\n\
         [[subscription]]\nservice = \"app\"\npubsub = \"pubsub\"\ntopic = \"stalled\"\nroute = \"/stalled\"\nmax_in_flight = {STALLED_IN_FLIGHT}\n\n\
         [[subscription]]\nservice = \"app\"\npubsub = \"pubsub\"\ntopic = \"flowing\"\nroute = \"/flowing\"\nmax_in_flight = 4\n",
        subscriber.display(),
        dir.display()
    );
    let api = Api::start("bp", &config);
    let herd_pid = api.herd.child.as_ref().expect("running").id();
    // Deliveries of the stalled topic in flight, sampled all along: never above the window.
    let (done, most) = (AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(n) = in_flight(admin, "stalled") {
                    most.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let quick = run(&api, dir, herd_pid);
        done.store(true, Ordering::Relaxed);
        let most = most.load(Ordering::Relaxed);
        if quick {
            assert_eq!(
                most, STALLED_IN_FLIGHT as u64,
                "deliveries in flight to the stalled app reached max_in_flight and never passed it"
            );
        } else {
            // Deliveries timed out (60 s) and were handed back while new ones started.
            assert!(most <= 2 * STALLED_IN_FLIGHT as u64, "{most}");
        }
    });
}

/// Publishes, checks the other subscription and memory; whether it all took less than the
/// delivery timeout (else the stalled deliveries timed out and were delivered again).
fn run(api: &Api, dir: &Path, herd_pid: u32) -> bool {
    let pad = "x".repeat(BIG);
    let stalled = |offset: usize| {
        let pad = pad.clone();
        move |i: usize| json!({"n": offset + i, "action": "hang", "pad": pad})
    };

    // Phase 1 fills the app's window and the log's cache.
    let started = Instant::now();
    publish_many(api.addr, "stalled", PHASE, stalled(0));
    wait_for(
        "the stalled subscription to fill its window",
        Duration::from_secs(90),
        || (delivered(dir, "/stalled").len() >= STALLED_IN_FLIGHT).then_some(()),
    );
    let before = rss_kib(herd_pid);

    // Phase 2: as much again; held in memory it would add ~32 MiB.
    publish_many(api.addr, "stalled", PHASE, stalled(PHASE));
    // The other subscription of the same app flows meanwhile.
    publish_many(api.addr, "flowing", 200, |i| json!({"n": i}));
    let all: BTreeSet<u64> = (0..200).collect();
    wait_for(
        "every message of the other subscription delivered",
        Duration::from_secs(90),
        || {
            let got: BTreeSet<u64> = delivered(dir, "/flowing").into_iter().collect();
            (got == all).then_some(())
        },
    );
    let after = rss_kib(herd_pid);

    // Until the first deliveries time out (60 s), the app has seen exactly the window.
    let hung = delivered(dir, "/stalled");
    let quick = started.elapsed() < Duration::from_secs(55);
    if quick {
        assert_eq!(
            hung.len(),
            STALLED_IN_FLIGHT,
            "the stalled app got exactly max_in_flight deliveries, no more: {hung:?}"
        );
    }
    let growth = after.saturating_sub(before);
    eprintln!(
        "herd RSS: {before} KiB with the window full, {after} KiB after another {} MiB to the stalled topic (+{growth} KiB)",
        PHASE * BIG / (1024 * 1024)
    );
    assert!(
        growth < 16 * 1024,
        "herd's memory stays flat while a subscriber is stalled: {before} KiB -> {after} KiB"
    );
    quick
}
