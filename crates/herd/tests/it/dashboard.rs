//! The dashboard and `herd monit`: a herd with a service behind the gateway, the embedded state
//! store and a subscription, under load this test makes; the overview JSON, the Prometheus text
//! of `/metrics`, `herd monit --once`, and the page itself in headless Chromium (skipped when no
//! Chromium is installed), whose live numbers must move while the load runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::state::call_at;
use crate::util::{Client, Herd, free_port, get, wait_for};

/// A herd with `web` (two hello instances) behind the gateway at `/`, the sidecar API, the
/// admin listener, and `web` subscribed to `orders` on the embedded pub/sub.
struct Stack {
    herd: Herd,
    gateway: SocketAddr,
    api: SocketAddr,
    admin: SocketAddr,
}

impl Stack {
    fn start() -> Self {
        let (gateway, api, admin) = (free_port(), free_port(), free_port());
        let herd = Herd::start(&format!(
            r#"
[admin]
listen = "127.0.0.1:{admin}"

[api]
listen = "127.0.0.1:{api}"

[[service]]
name = "web"
command = ["{{hello}}"]
instances = 2
port = "auto"
ready = {{ mode = "http" }}

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{gateway}"

[[route]]
path_prefix = "/"
service = "web"

[[subscription]]
service = "web"
pubsub = "pubsub"
topic = "orders"
route = "/orders"
"#
        ));
        let stack = Stack {
            herd,
            gateway: ([127, 0, 0, 1], gateway).into(),
            api: ([127, 0, 0, 1], api).into(),
            admin: ([127, 0, 0, 1], admin).into(),
        };
        wait_for("components connected", Duration::from_secs(20), || {
            (call_at(stack.api, "GET", "/v1.0/healthz/outbound", &[], "").status == 204)
                .then_some(())
        });
        stack
    }

    /// One round of traffic: gateway requests, a state save and read, a publish.
    fn traffic(&self, client: &mut Client, n: usize) {
        for _ in 0..n {
            let r = client.get("/", &[]).expect("gateway answers");
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let tp = [(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )];
        let r = call_at(
            self.api,
            "POST",
            "/v1.0/state/statestore",
            &[],
            r#"[{"key":"k","value":1}]"#,
        );
        assert_eq!(r.status, 204, "{}", r.body);
        assert_eq!(
            call_at(self.api, "GET", "/v1.0/state/statestore/k", &tp, "").status,
            200
        );
        let r = call_at(
            self.api,
            "POST",
            "/v1.0/publish/pubsub/orders",
            &[("Content-Type", "application/json")],
            r#"{"n":1}"#,
        );
        assert_eq!(r.status, 204, "{}", r.body);
    }

    fn overview(&self) -> Value {
        let r = get(self.admin, "/api/overview").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        r.json()
    }
}

/// The first row of `rows` whose `field` is `value`.
fn row<'a>(rows: &'a Value, field: &str, value: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r[field] == value)
}

#[test]
fn overview_metrics_and_monit_show_gateway_state_and_pubsub_traffic() {
    let stack = Stack::start();
    let mut client = Client::new(stack.gateway);
    for _ in 0..3 {
        stack.traffic(&mut client, 20);
    }

    // Rates need two samples a second apart that both saw traffic: keep some flowing.
    let o = wait_for(
        "the overview to show the traffic",
        Duration::from_secs(20),
        || {
            stack.traffic(&mut client, 5);
            let o = stack.overview();
            let route = row(&o["routes"], "route", "route[0]")?;
            let sub = row(&o["subscriptions"], "topic", "orders")?;
            let store = row(&o["stores"], "store", "statestore")?;
            let ok = route["requests"].as_u64()? >= 60
                && route["rps"].as_f64()? > 0.0
                && route["p50_ms"].as_f64().is_some()
                && sub["delivered"].as_u64()? >= 3
                && store["requests"].as_u64()? >= 6
                && row(&o["publishers"], "pubsub", "pubsub")?["published"].as_u64()? >= 3;
            ok.then_some(o)
        },
    );
    let route = row(&o["routes"], "route", "route[0]").unwrap();
    assert_eq!(route["upstream"], "service web");
    assert!(route["p99_ms"].as_f64().unwrap() >= route["p50_ms"].as_f64().unwrap());
    let sub = row(&o["subscriptions"], "topic", "orders").unwrap();
    assert_eq!(sub["app"], "web");
    assert_eq!(sub["pubsub"], "pubsub");
    assert_eq!(sub["dead_letters"], 0);
    let web = row(&o["services"], "name", "web").unwrap();
    assert_eq!(web["ready"], 2);
    let pids: Vec<u64> = web["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    let mut expected: Vec<u64> = stack.herd.pids("web").into_iter().map(u64::from).collect();
    expected.sort();
    let mut seen = pids.clone();
    seen.sort();
    assert_eq!(seen, expected, "the services are the supervisor's");
    assert!(
        o["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["upstream"] == "service web" && e["breaker"] == "closed"),
        "{}",
        o["endpoints"]
    );
    let mut endpoints_before: Vec<String> = o["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap().to_string())
        .collect();
    endpoints_before.sort();
    let traces = o["traces"].as_array().unwrap();
    let gateway = traces
        .iter()
        .find(|t| t["source"] == "gateway")
        .expect("a gateway request among the recent ones");
    assert_eq!(gateway["target"], "route[0] → service web");
    assert_eq!(gateway["status"], 200);
    assert_eq!(gateway["trace_id"].as_str().unwrap().len(), 32);
    let read = traces
        .iter()
        .find(|t| t["target"] == "GET /v1.0/state/{store}/{key}")
        .expect("an API request among the recent ones");
    assert_eq!(read["source"], "api");
    assert_eq!(read["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    // /metrics is valid Prometheus text with the series the views are built from.
    let text = get(stack.admin, "/metrics").unwrap().body;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("/metrics parses");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "herd_gateway_requests_total",
        "herd_gateway_request_duration_seconds",
        "herd_state_requests_total",
        "herd_pubsub_publish_total",
        "herd_pubsub_deliveries_total",
        "herd_pubsub_in_flight",
        "herd_service_ready_instances",
        "herd_service_instances",
        "herd_instance_memory_bytes",
    ] {
        assert!(names.contains(name), "{name} missing from:\n{text}");
    }
    let ready = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "herd_service_ready_instances" && s.labels.get("service") == Some("web")
        })
        .expect("ready instances of web");
    assert!(matches!(ready.value, prometheus_parse::Value::Gauge(v) if v == 2.0));
    // The parser skips lines it does not understand, so every line must be accounted for: one
    // sample per line, except a histogram's buckets, one sample per series (beside its sum and
    // count lines).
    let histograms: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|t| t.strip_suffix(" histogram"))
        .collect();
    let samples = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let name = |l: &str| l.split(['{', ' ']).next().unwrap().to_string();
    let bucket = |l: &str| histograms.iter().any(|h| name(l) == format!("{h}_bucket"));
    let count = |l: &str| histograms.iter().any(|h| name(l) == format!("{h}_count"));
    let plain = samples.clone().filter(|l| !bucket(l)).count();
    let histogram_series = samples.filter(|l| count(l)).count();
    assert!(histogram_series > 0);
    assert_eq!(scrape.samples.len(), plain + histogram_series, "{text}");

    // herd monit --once (stdout is not a terminal here): the same overview as text.
    let out = stack.herd.cli(&["monit", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let monit = String::from_utf8(out.stdout).unwrap();
    assert!(monit.contains("SERVICES  2/2 instances ready"), "{monit}");
    let route_line = monit
        .lines()
        .find(|l| l.contains("route[0]"))
        .unwrap_or_else(|| panic!("no route line in:\n{monit}"));
    // Columns are padded to their widest cell: the header places them.
    let header = monit.lines().find(|l| l.contains("REQUESTS")).unwrap();
    let at = header.find("REQUESTS").unwrap();
    let requests: u64 = route_line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(requests >= 60, "{route_line}");
    assert!(
        monit
            .lines()
            .any(|l| l.contains("pubsub") && l.contains("orders") && l.contains("web")),
        "{monit}"
    );
    assert!(monit.contains("RECENT REQUESTS"), "{monit}");

    // The page and its assets come from the binary.
    let page = get(stack.admin, "/").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"<script src="/dashboard.js">"#));
    assert!(!page.body.contains("http://") && !page.body.contains("https://"));
    let js = get(stack.admin, "/dashboard.js").unwrap();
    assert_eq!(js.status, 200);
    assert!(js.body.contains("/api/overview"));
    assert_eq!(get(stack.admin, "/dashboard.css").unwrap().status, 200);

    // After a reload the instances have new ports: the endpoints shown are those, not the
    // replaced ones the gateway's series still name.
    let out = stack.herd.cli(&["reload", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ports = |o: &Value| -> Vec<String> {
        let mut p: Vec<String> = row(&o["services"], "name", "web").unwrap()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| Some(format!("127.0.0.1:{}", i["port"].as_u64()?)))
            .collect();
        p.sort();
        p
    };
    wait_for("the endpoints of now", Duration::from_secs(20), || {
        stack.traffic(&mut client, 2);
        let o = stack.overview();
        let mut shown: Vec<String> = o["endpoints"]
            .as_array()?
            .iter()
            .filter(|e| e["upstream"] == "service web")
            .map(|e| e["endpoint"].as_str().unwrap().to_string())
            .collect();
        shown.sort();
        (shown.len() == 2 && shown == ports(&o) && shown != endpoints_before).then_some(())
    });
}

#[test]
fn monit_without_a_running_herd_says_so() {
    let herd = Herd::prepare("[[service]]\nname = \"x\"\ncommand = [\"true\"]\n");
    let out = herd.cli(&["monit", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("herd is not running"), "{err}");
}

/// The Chromium binary, if one is installed.
pub(crate) fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(PathBuf::from)
}

/// Runs headless Chromium on `url` with `args`, giving the page `budget_ms` of virtual time
/// (its timers and fetches run; the poll every second gets a few turns).
pub(crate) fn headless(
    chromium: &Path,
    url: &str,
    args: &[&str],
    budget_ms: u64,
) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// The number in the cell `data-field="{field}"` of the row `data-key="{key}"` of the dumped
/// DOM.
fn cell(dom: &str, key: &str, field: &str) -> Option<f64> {
    let row = &dom[dom.find(&format!(r#"data-key="{key}""#))?..];
    let row = &row[..row.find("</tr>")?];
    let at = row.find(&format!(r#"data-field="{field}""#))?;
    let text = &row[at..];
    let text = &text[text.find('>')? + 1..];
    text[..text.find('<')?].trim().parse().ok()
}

#[test]
fn the_dashboard_in_headless_chromium_shows_live_values() {
    let Some(chromium) = chromium() else {
        return eprintln!("skipped: no chromium binary found (apt-get install chromium)");
    };
    let stack = Arc::new(Stack::start());
    let url = format!("http://{}/", stack.admin);
    let _load = Load::start(stack.clone());
    let dump = |what: &str| -> String {
        wait_for(what, Duration::from_secs(60), || {
            let out = headless(&chromium, &url, &["--dump-dom"], 3000);
            let dom = String::from_utf8_lossy(&out.stdout).into_owned();
            (cell(&dom, "route[0]", "requests").is_some_and(|n| n > 0.0)
                && cell(&dom, "web/0", "restarts").is_some()
                && cell(&dom, "pubsub/orders/web", "delivered").is_some_and(|n| n > 0.0)
                && cell(&dom, "state/statestore", "requests").is_some_and(|n| n > 0.0))
            .then_some(dom)
        })
    };
    let first = dump("the page to show the route");
    let before = cell(&first, "route[0]", "requests").unwrap();
    assert!(first.contains(r#"data-state="live""#), "{first}");
    let after = wait_for(
        "the page's request count to grow",
        Duration::from_secs(60),
        || {
            let n = cell(&dump("the page again"), "route[0]", "requests")?;
            (n > before).then_some(n)
        },
    );
    assert!(after > before);

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        &chromium,
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1600",
        ],
        3000,
    );
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 0),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Traffic from a thread of its own until dropped (also when an assertion fails, so the herd it
/// shares is dropped, and killed, when the test ends).
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(stack: Arc<Stack>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = Client::new(stack.gateway);
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    stack.traffic(&mut client, 10);
                }
            })
        };
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
