//! Resiliency policies end to end: a state store behind a proxy the test takes down (retries as
//! configured, then the breaker refuses without calling, then a half-open trial closes it once
//! the backend is back), pub/sub delivery under a Dapr `Resiliency` file (exactly
//! `maxRetries + 1` deliveries, spaced by the constant policy, then the dead-letter topic), the
//! activations on `/metrics`, and config errors naming file, line and key.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::state::{Api, call_at, redis_host, run_id, skipped};
use crate::util::{Herd, free_port, get, wait_for};

/// The sum of the samples on `admin`'s `/metrics` whose series name every one of `want`.
fn metric(admin: SocketAddr, want: &[&str]) -> f64 {
    let r = get(admin, "/metrics").unwrap();
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TCP proxy to `upstream` that the test can take down: while down it accepts and closes
/// every connection at once, and taking it down cuts the connections it carries.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Proxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let live = Arc::new(Mutex::new(Vec::new()));
        let (is_up, carried) = (up.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !is_up.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut held = carried.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { port, up, live }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn save(api: &Api, n: u32) -> crate::util::Response {
    let body = json!([{"key": "k", "value": n}]).to_string();
    call_at(api.addr, "POST", "/v1.0/state/store", &[], &body)
}

#[test]
fn a_state_store_is_retried_then_its_breaker_opens_and_a_trial_closes_it() {
    let Some(redis) = redis_host() else {
        return skipped("HERD_TEST_REDIS_URL");
    };
    let proxy = Proxy::start(redis);
    let admin_port = free_port();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{admin_port}"

[[component]]
name = "store"
type = "state.redis"
metadata = {{ redisHost = "127.0.0.1:{}" }}

[resiliency.policies.timeouts]
quick = "1s"
[resiliency.policies.retries.twice]
policy = "constant"
duration = "100ms"
maxRetries = 2
[resiliency.policies.circuitBreakers.storeCB]
trip = "consecutiveFailures >= 6"
timeout = "2s"
maxRequests = 1
[resiliency.targets.components.store.outbound]
timeout = "quick"
retry = "twice"
circuitBreaker = "storeCB"
"#,
        proxy.port
    );
    let api = Api::start(&format!("res{}", run_id()), &config);
    assert_eq!(save(&api, 1).status, 204);
    let retries = || {
        metric(
            admin,
            &[
                "herd_resiliency_activations_total",
                "target=\"component_store\"",
                "kind=\"retry\"",
                "policy=\"twice\"",
            ],
        )
    };
    let breaker = |status: &str| {
        let status = format!("status=\"{status}\"");
        metric(
            admin,
            &[
                "herd_resiliency_cb_state",
                "target=\"component_store\"",
                &status,
            ],
        )
    };
    assert_eq!(retries(), 0.0);
    assert_eq!(breaker("closed"), 1.0);

    // Backend gone: each request is tried three times (two retries), and the sixth consecutive
    // failure opens the breaker.
    proxy.down();
    for expected in [2.0, 4.0] {
        let r = save(&api, 2);
        assert_eq!(r.status, 500, "{}", r.body);
        assert_eq!(r.json()["errorCode"], "ERR_STATE_SAVE");
        assert_eq!(retries(), expected);
    }
    let opened = Instant::now();
    assert_eq!(breaker("open"), 1.0);

    // Open: refused at once, without an attempt.
    let started = Instant::now();
    let r = save(&api, 3);
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["errorCode"], "ERR_STATE_SAVE");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("circuit breaker is open"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(retries(), 4.0, "a refused call is not retried");
    let refused = &[
        "herd_resiliency_activations_total",
        "target=\"component_store\"",
        "kind=\"circuit_breaker\"",
        "status=\"refused\"",
    ];
    assert_eq!(metric(admin, refused), 1.0);

    // Backend back: after the breaker's timeout a half-open trial goes through and closes it.
    proxy.restore();
    wait_for("a save to succeed again", Duration::from_secs(30), || {
        (save(&api, 4).status == 204).then_some(())
    });
    // `opened` was taken just after the breaker opened, so allow for that gap.
    assert!(
        opened.elapsed() >= Duration::from_millis(1900),
        "the breaker stayed open for its timeout"
    );
    assert_eq!(breaker("closed"), 1.0);
    assert_eq!(breaker("open"), 0.0);
    for status in ["open", "half-open", "closed"] {
        let status = format!("status=\"{status}\"");
        let changes = metric(
            admin,
            &[
                "herd_resiliency_activations_total",
                "kind=\"circuit_breaker\"",
                &status,
            ],
        );
        assert!(changes >= 1.0, "{status}: {changes}");
    }
    let r = call_at(api.addr, "GET", "/v1.0/state/store/k", &[], "");
    assert_eq!(r.body, "4");
    let log = api.herd.stderr();
    assert!(
        log.contains("circuit breaker storeCB of component_store"),
        "{log}"
    );
}

/// A subscriber that answers 500 to the first `data.fail` deliveries of each event on `/jobs`
/// and records every delivery with its time.
const SUBSCRIBER: &str = r#"
const http = require("http"), fs = require("fs");
const counts = new Map();
http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    if (req.method !== "POST") { res.statusCode = 404; res.end(); return; }
    let e = {};
    try { e = JSON.parse(body); } catch (_) {}
    const n = (counts.get(e.id) || 0) + 1;
    counts.set(e.id, n);
    const data = e.data || {};
    fs.appendFileSync(process.env.EVENTS, JSON.stringify({ path: req.url, name: data.name, at: Date.now() }) + "\n");
    res.statusCode = req.url === "/jobs" && n <= (data.fail || 0) ? 500 : 200;
    res.end();
  });
}).listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));
"#;

const RESILIENCY_YAML: &str = "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: delivery
scopes:
  - worker
spec:
  policies:
    retries:
      steady:
        policy: constant
        duration: 400ms
        maxRetries: 2
  targets:
    components:
      pubsub:
        inbound:
          retry: steady
";

fn deliveries(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn delivery_follows_the_inbound_policy_of_a_dapr_resiliency_file_then_dead_letters() {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return eprintln!("skipped: node is not on PATH");
    }
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("subscriber.js");
    std::fs::write(&script, SUBSCRIBER).unwrap();
    let events = work.path().join("events.jsonl");
    let admin_port = free_port();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{admin_port}"

[[service]]
name = "worker"
command = ["node", "{}"]
port = "auto"
env = {{ EVENTS = "{}" }}

[[subscription]]
service = "worker"
pubsub = "pubsub"
topic = "jobs"
route = "/jobs"
dead_letter_topic = "dead"
max_deliveries = 10

[[subscription]]
service = "worker"
pubsub = "pubsub"
topic = "dead"
route = "/dead"
"#,
        script.display(),
        events.display()
    );
    let api = Api::start_with(
        &format!("res{}", run_id()),
        "resources_path = [\"resources\"]",
        &config,
        |dir| {
            std::fs::create_dir(dir.join("resources")).unwrap();
            let mut f = std::fs::File::create(dir.join("resources/resiliency.yaml")).unwrap();
            f.write_all(RESILIENCY_YAML.as_bytes()).unwrap();
        },
    );
    wait_for("both subscriptions", Duration::from_secs(20), || {
        let meta = api.call("GET", "/v1.0/metadata", "").json();
        (meta["subscriptions"].as_array().map_or(0, Vec::len) >= 2).then_some(())
    });
    for (name, fail) in [("poison", 100), ("flaky", 2), ("fine", 0)] {
        let body = json!({"name": name, "fail": fail}).to_string();
        let r = call_at(api.addr, "POST", "/v1.0/publish/pubsub/jobs", &[], &body);
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let of = |all: &[Value], name: &str, path: &str| -> Vec<u64> {
        all.iter()
            .filter(|e| e["name"] == name && e["path"] == path)
            .filter_map(|e| e["at"].as_u64())
            .collect()
    };
    let all = wait_for("poison dead-lettered", Duration::from_secs(30), || {
        let all = deliveries(&events);
        (!of(&all, "poison", "/dead").is_empty() && of(&all, "flaky", "/jobs").len() >= 3)
            .then_some(all)
    });
    let poison = of(&all, "poison", "/jobs");
    assert_eq!(poison.len(), 3, "maxRetries + 1 deliveries: {all:?}");
    for pair in poison.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= 390, "retries 400ms apart, got {gap}ms: {poison:?}");
    }
    assert_eq!(of(&all, "flaky", "/jobs").len(), 3);
    assert!(of(&all, "flaky", "/dead").is_empty());
    assert_eq!(of(&all, "fine", "/jobs").len(), 1);
    let retries = metric(
        admin,
        &[
            "herd_resiliency_activations_total",
            "flow_direction=\"inbound\"",
            "target=\"component_pubsub\"",
            "kind=\"retry\"",
            "policy=\"steady\"",
        ],
    );
    assert_eq!(retries, 4.0, "two retries each for poison and flaky");
    assert_eq!(metric(admin, &["herd_resiliency_loaded"]), 1.0);
}

/// Runs `herd check` and expects exit code 2 with every one of `expected` in stderr.
fn refused(herd: &Herd, expected: &[String]) {
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in expected {
        assert!(err.contains(want), "expected {want:?} in:\n{err}");
    }
}

#[test]
fn bad_resiliency_settings_are_refused_with_file_line_and_key() {
    let herd = Herd::prepare(
        "[resiliency.policies.circuitBreakers.cb]\ntrip = \"failures > 3\"\n\n[resiliency.targets.components.statestore.outbound]\nretry = \"missing\"\n",
    );
    let file = herd.config().display().to_string();
    refused(
        &herd,
        &[
            format!(
                "{file}:2:1: resiliency.policies.circuitBreakers.cb.trip: invalid trip expression"
            ),
            format!(
                "{file}:5:1: resiliency.targets.components.statestore.outbound.retry: no retries policy named \"missing\""
            ),
        ],
    );

    let herd = Herd::prepare("[api]\nresources_path = [\"resources\"]\n");
    let dir = herd.dir.path().join("resources");
    std::fs::create_dir(&dir).unwrap();
    let yaml = RESILIENCY_YAML
        .replace("duration: 400ms", "duration: soon")
        .replace("retry: steady", "timeout: general");
    std::fs::write(dir.join("resiliency.yaml"), yaml).unwrap();
    let file = dir.join("resiliency.yaml").display().to_string();
    refused(
        &herd,
        &[
            format!("{file}:5: delivery: scopes: no app named \"worker\""),
            format!("{file}:12: delivery: spec.policies.retries.steady.duration: not a duration"),
            format!(
                "{file}:18: delivery: spec.targets.components.pubsub.inbound.timeout: no timeouts policy named \"general\""
            ),
        ],
    );
}
