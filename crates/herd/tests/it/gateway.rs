//! The gateway in front of herd services and static upstreams: balancing, trace context,
//! failures answered with JSON, and reloads behind it without failed requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use crate::util::{Backends, Client, Herd, free_port, get, wait_for};

/// Three `port = "auto"` hello instances behind a gateway listener; returns the herd and the
/// gateway's address.
fn gateway(delay_ms: u64, extra: &str) -> (Herd, std::net::SocketAddr) {
    let port = free_port();
    let herd = Herd::start(&format!(
        r#"
[[service]]
name = "api"
command = ["{{hello}}"]
instances = 3
port = "auto"
ready = {{ mode = "http" }}
env = {{ HELLO_DELAY_MS = "{delay_ms}", HELLO_DRAIN_MS = "200" }}

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{port}"

[[route]]
host = "refused.test"
upstream = "nowhere"

[[route]]
path_prefix = "/api"
service = "api"
timeout = "300ms"

[[upstream]]
name = "nowhere"
endpoints = ["127.0.0.1:1"]
{extra}
"#
    ));
    (herd, ([127, 0, 0, 1], port).into())
}

#[test]
fn round_robin_spreads_requests_evenly_over_ready_instances() {
    let (_herd, addr) = gateway(0, "");
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for _ in 0..30 {
        let r = get(addr, "/api/hello").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        *counts
            .entry(r.json()["worker"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(counts, HashMap::from([(0, 10), (1, 10), (2, 10)]));
}

#[test]
fn trace_context_is_kept_or_created_and_returned() {
    let (_herd, addr) = gateway(0, "");
    let mut c = Client::new(addr);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = c.get("/api", &[("traceparent", tp)]).unwrap();
    assert_eq!(r.json()["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        r.header("x-request-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    let r = c.get("/api", &[]).unwrap();
    let trace = r.json()["traceId"].as_str().unwrap().to_string();
    assert_eq!(trace.len(), 32);
    assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.header("x-request-id"), Some(trace.as_str()));

    let r = c.get("/api", &[("x-request-id", "order-42")]).unwrap();
    assert_eq!(r.header("x-request-id"), Some("order-42"));
}

#[test]
fn failures_are_answered_with_json_naming_the_upstream() {
    let (_herd, addr) = gateway(1000, "");
    let mut c = Client::new(addr);
    let r = c.get("/elsewhere", &[]).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no route");

    let r = c.get("/", &[("Host", "refused.test")]).unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["upstream"], "upstream nowhere");

    let r = get(addr, "/api/slow").unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream timed out");
    assert_eq!(r.json()["upstream"], "service api");
}

#[test]
fn a_rolling_reload_behind_the_gateway_fails_no_request() {
    let (herd, addr) = gateway(2, "");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok) = (stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut c = Client::new(addr);
                while !stop.load(Ordering::Relaxed) {
                    match c.get("/api", &[]) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => errors.push(format!("{} {}", r.status, r.body)),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                errors
            })
        })
        .collect();
    wait_for("load through the gateway", Duration::from_secs(5), || {
        (ok.load(Ordering::Relaxed) > 200).then_some(())
    });
    let before = herd.pids("api");
    let out = herd.cli(&["reload", "api"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after_reload = ok.load(Ordering::Relaxed);
    wait_for("load after the reload", Duration::from_secs(10), || {
        (ok.load(Ordering::Relaxed) > after_reload + 200).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    assert!(herd.pids("api").iter().all(|p| !before.contains(p)));
}

#[test]
fn routes_to_unknown_targets_and_taken_listener_ports_are_config_errors() {
    let herd = Herd::prepare(
        "[[gateway.listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nservice = \"ghost\"\n",
    );
    let out = herd.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":6:1: route[0].service: no [[service]] named \"ghost\""),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let herd = Herd::prepare(&format!(
        "[[gateway.listener]]\nname = \"main\"\nlisten = \"{addr}\"\n"
    ));
    let out = herd.cli(&["up"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            ":3:1: gateway.listener[0].listen: cannot bind {addr}"
        )),
        "{err}"
    );
}

/// The access-log lines herd wrote for requests whose id starts with `prefix`.
fn access_lines(herd: &Herd, prefix: &str) -> Vec<serde_json::Value> {
    herd.stderr()
        .lines()
        .filter_map(|l| l.find('{').map(|i| &l[i..]))
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .filter(|v| {
            v["requestId"]
                .as_str()
                .is_some_and(|id| id.starts_with(prefix))
        })
        .collect()
}

/// A herd whose only route leads to an upstream over `backends`, with `route` and `upstream`
/// lines added to those tables; returns it and the gateway's address.
fn upstream_gateway(
    backends: &Backends,
    route: &str,
    upstream: &str,
) -> (Herd, std::net::SocketAddr) {
    gateway_over(&backends.ports, route, upstream)
}

/// [`upstream_gateway`] over loopback `ports`.
fn gateway_over(ports: &[u16], route: &str, upstream: &str) -> (Herd, std::net::SocketAddr) {
    let gw = free_port();
    let endpoints: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let herd = Herd::start(&format!(
        r#"
[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{gw}"

[[route]]
upstream = "backends"
{route}

[[upstream]]
name = "backends"
endpoints = [{}]
{upstream}
"#,
        endpoints.join(", ")
    ));
    (herd, ([127, 0, 0, 1], gw).into())
}

#[test]
fn a_dead_upstream_endpoint_costs_no_request_and_its_breaker_takes_it_out_then_back() {
    let mut backends = Backends::start(3, 0);
    let (herd, addr) = upstream_gateway(
        &backends,
        "",
        r#"breaker = { trip = "consecutiveFailures >= 3", timeout = "1s" }"#,
    );
    let mut c = Client::new(addr);
    for _ in 0..9 {
        assert_eq!(c.get("/", &[]).unwrap().status, 200);
    }

    backends.kill(2);
    let killed = std::time::Instant::now();
    let mut failed = 0;
    for n in 0..300 {
        let id = format!("after-kill-{n}");
        let r = c.get("/", &[("x-request-id", &id)]).unwrap();
        if r.status != 200 {
            failed += 1;
        }
        assert_ne!(r.json()["worker"], 2);
    }
    assert_eq!(failed, 0, "requests failed while an endpoint was down");
    // The breaker opened after 3 refused connections: after that, no request needed a retry
    // but one half-open trial per second (its open time) that finds the endpoint still down.
    let trials = killed.elapsed().as_secs() as usize + 1;
    let lines = wait_for("access lines", Duration::from_secs(5), || {
        let l = access_lines(&herd, "after-kill-");
        (l.len() == 300).then_some(l)
    });
    let retried = lines
        .iter()
        .filter(|l| l["tries"].as_u64() > Some(1))
        .count();
    assert!(
        (1..=3 + trials).contains(&retried),
        "{retried} requests needed a retry (allowed: 3 + {trials} trials)"
    );

    // Back on the same port: a half-open trial closes the breaker and it gets traffic again.
    backends.restart(2);
    wait_for(
        "the endpoint back in rotation",
        Duration::from_secs(10),
        || (c.get("/", &[]).unwrap().json()["worker"] == 2).then_some(()),
    );
}

#[test]
fn idempotent_requests_answered_502_are_retried_on_another_endpoint() {
    let hello = Backends::start_as(7, 0);
    let hello_port = hello.ports[0];
    let (front, back) = (free_port(), free_port());
    let herd = Herd::start(&format!(
        r#"
[[gateway.listener]]
name = "front"
listen = "127.0.0.1:{front}"

[[gateway.listener]]
name = "back"
listen = "127.0.0.1:{back}"

# Everything on "back" fails with 502: its upstream refuses connections.
[[route]]
listener = "back"
upstream = "nowhere"

[[route]]
listener = "front"
upstream = "mixed"
retries = {{ policy = "constant", duration = "1ms", maxRetries = 2 }}

[[upstream]]
name = "nowhere"
endpoints = ["127.0.0.1:1"]

[[upstream]]
name = "mixed"
endpoints = ["127.0.0.1:{back}", "127.0.0.1:{hello_port}"]
breaker = {{ trip = "consecutiveFailures >= 1000" }}
"#
    ));
    let mut c = Client::new(([127, 0, 0, 1], front).into());
    for n in 0..20 {
        let r = c
            .get("/", &[("x-request-id", &format!("mixed-{n}"))])
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["worker"], 7);
    }
    let lines = wait_for("access lines", Duration::from_secs(5), || {
        let l = access_lines(&herd, "mixed-");
        (l.len() >= 20).then_some(l)
    });
    let front_lines: Vec<_> = lines.iter().filter(|l| l["listener"] == "front").collect();
    let retried = front_lines.iter().filter(|l| l["tries"] == 2).count();
    assert_eq!(
        retried, 10,
        "round-robin sends every other request to the failing endpoint first"
    );
}

#[test]
fn active_health_checks_take_a_stalled_endpoint_out_and_bring_it_back() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let backends = Backends::start(2, 0);
    let (herd, addr) = upstream_gateway(
        &backends,
        r#"timeout = "5s""#,
        r#"health = { path = "/healthz", interval = "100ms", timeout = "200ms", healthy = 1, unhealthy = 2 }"#,
    );
    // A stopped process still gets connections queued by the kernel, but never answers.
    let stalled = Pid::from_raw(backends.pid(1) as i32);
    kill(stalled, Signal::SIGSTOP).unwrap();
    wait_for(
        "the stalled endpoint out of rotation",
        Duration::from_secs(5),
        || herd.stderr().contains("out of rotation").then_some(()),
    );
    let started = std::time::Instant::now();
    let mut c = Client::new(addr);
    for _ in 0..20 {
        let r = c.get("/", &[]).unwrap();
        assert_eq!(r.json()["worker"], 0);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a request waited on the stalled endpoint"
    );

    kill(stalled, Signal::SIGCONT).unwrap();
    wait_for(
        "the endpoint back in rotation",
        Duration::from_secs(5),
        || (c.get("/", &[]).unwrap().json()["worker"] == 1).then_some(()),
    );
}

/// Parses Prometheus text: every sample line is `name{labels} value`; returns (series, value).
fn prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let name_end = series.find('{').unwrap_or(series.len());
            let name = &series[..name_end];
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {l:?}"
            );
            if name_end < series.len() {
                assert!(series.ends_with('}'), "bad labels in {l:?}");
            }
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_string(), value)
        })
        .collect()
}

#[test]
fn metrics_are_served_in_prometheus_text_on_the_admin_listener() {
    let admin = free_port();
    let (herd, addr) = gateway(0, &format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"));
    for _ in 0..5 {
        assert_eq!(get(addr, "/api").unwrap().status, 200);
    }
    assert_eq!(get(addr, "/nothing-here").unwrap().status, 404);
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin).into();
    let samples = wait_for("instance memory sampled", Duration::from_secs(10), || {
        let r = get(admin, "/metrics").unwrap();
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        let s = prometheus(&r.body);
        s.iter()
            .any(|(k, v)| k.starts_with("herd_instance_memory_bytes{") && *v > 0.0)
            .then_some(s)
    });
    let value = |want: &[&str]| {
        samples
            .iter()
            .filter(|(k, _)| want.iter().all(|w| k.contains(w)))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(
        value(&[
            "herd_gateway_requests_total{",
            "route=\"route[1]\"",
            "class=\"2xx\""
        ]),
        5.0
    );
    assert_eq!(
        value(&[
            "herd_gateway_requests_total{",
            "route=\"none\"",
            "class=\"4xx\""
        ]),
        1.0
    );
    assert_eq!(
        value(&[
            "herd_gateway_request_duration_seconds_count{",
            "route=\"route[1]\""
        ]),
        5.0
    );
    assert_eq!(
        value(&[
            "herd_gateway_endpoint_attempts_total{",
            "outcome=\"success\""
        ]),
        5.0
    );
    assert!(
        samples
            .iter()
            .any(|(k, v)| k.starts_with("herd_gateway_breaker_state{") && *v == 0.0)
    );
    drop(herd);
}

#[test]
fn herd_reload_gateway_applies_new_routes_without_dropping_connections() {
    let backends = Backends::start(2, 0);
    let ports = backends.ports.clone();
    let gw = free_port();
    let config = |upstream: &str| {
        format!(
            r#"
[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{gw}"

[[route]]
upstream = "{upstream}"

[[upstream]]
name = "first"
endpoints = ["127.0.0.1:{}"]

[[upstream]]
name = "second"
endpoints = ["127.0.0.1:{}"]
"#,
            ports[0], ports[1]
        )
    };
    let herd = Herd::start(&config("first"));
    let mut c = Client::new(([127, 0, 0, 1], gw).into());
    assert_eq!(c.get("/", &[]).unwrap().json()["worker"], 0);

    herd.rewrite(&config("second"));
    let out = herd.cli(&["reload", "gateway"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("gateway reloaded: 1 route(s), 2 upstream(s)")
    );
    // The same keep-alive connection now reaches the new route's upstream.
    let r = c.get("/", &[]).unwrap();
    assert_eq!(r.json()["worker"], 1);
    assert_ne!(r.header("connection"), Some("close"));

    // A listener change cannot be applied by a reload, and leaves the routes as they were.
    herd.rewrite(&config("first").replace(&format!("127.0.0.1:{gw}"), "127.0.0.1:0"));
    let out = herd.cli(&["reload", "gateway"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listeners changed"));
    assert_eq!(c.get("/", &[]).unwrap().json()["worker"], 1);
}

#[test]
fn a_stalled_endpoint_costs_one_attempt_not_the_request() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let backends = Backends::start(2, 0);
    let (_herd, addr) = upstream_gateway(
        &backends,
        "timeout = \"5s\"\nper_try_timeout = \"200ms\"",
        r#"breaker = { trip = "consecutiveFailures >= 2", timeout = "30s" }"#,
    );
    let stalled = Pid::from_raw(backends.pid(1) as i32);
    kill(stalled, Signal::SIGSTOP).unwrap();
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let r = get(addr, "/").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["worker"], 0);
    }
    // Two attempts time out (200 ms each) before the breaker takes the endpoint out.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "40 requests took {took:?}");
    kill(stalled, Signal::SIGCONT).unwrap();
}

#[test]
fn upstream_endpoints_named_in_dns_are_resolved() {
    let backend = Backends::start_as(4, 0);
    let port = backend.ports[0];
    let gw = free_port();
    let _herd = Herd::start(&format!(
        r#"
[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{gw}"

[[route]]
upstream = "named"

[[upstream]]
name = "named"
endpoints = ["localhost:{port}"]
dns_refresh = "200ms"
"#
    ));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], gw).into();
    let r = wait_for("the name resolved", Duration::from_secs(10), || {
        get(addr, "/").ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.json()["worker"], 4);
}

#[test]
fn traffic_stays_in_the_own_region_fails_over_and_comes_back() {
    let mut backends = Backends::start(2, 0);
    let ports = backends.ports.clone();
    let gw = free_port();
    let _herd = Herd::start(&format!(
        r#"
[gateway]
region = "eu-west"
failover = ["us-east"]

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{gw}"

[[route]]
upstream = "global"

[[upstream]]
name = "global"
endpoints = [
  {{ address = "127.0.0.1:{}", region = "eu-west", zone = "a" }},
  {{ address = "127.0.0.1:{}", region = "us-east" }},
]
breaker = {{ trip = "consecutiveFailures >= 1", timeout = "500ms" }}
"#,
        ports[0], ports[1]
    ));
    let mut c = Client::new(([127, 0, 0, 1], gw).into());
    for _ in 0..20 {
        assert_eq!(
            c.get("/", &[]).unwrap().json()["worker"],
            0,
            "local region first"
        );
    }
    backends.kill(0);
    for _ in 0..20 {
        let r = c.get("/", &[]).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["worker"], 1, "failed over to us-east");
    }
    backends.restart(0);
    wait_for("traffic back in eu-west", Duration::from_secs(10), || {
        (c.get("/", &[]).unwrap().json()["worker"] == 0).then_some(())
    });
}

#[test]
fn route_rate_limits_answer_429_and_upstream_concurrency_limits_answer_503() {
    let slow = Backends::start(1, 700);
    let port = slow.ports[0];
    let gw = free_port();
    let _herd = Herd::start(&format!(
        r#"
[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{gw}"

[[route]]
path_prefix = "/limited"
upstream = "slow"
rate_limit = {{ rate = 0.5, burst = 2 }}

[[route]]
upstream = "slow"

[[upstream]]
name = "slow"
endpoints = ["127.0.0.1:{port}"]
max_concurrency = 1
"#
    ));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], gw).into();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(move || get(addr, "/").unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().status).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        3,
        "{statuses:?}"
    );

    assert_eq!(get(addr, "/limited").unwrap().status, 200);
    assert_eq!(get(addr, "/limited").unwrap().status, 200);
    let r = get(addr, "/limited").unwrap();
    assert_eq!(r.status, 429);
    // Two tokens at 0.5/s: the next is due within 2 s (less, as the slow answers refilled some).
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "retry-after {wait}");
    assert_eq!(r.json()["error"], "rate limit exceeded");
}

/// A gateway in front of `shared`, two instances of hello (20 ms per answer) on a shared socket.
fn shared_service_behind_gateway() -> (Herd, std::net::SocketAddr) {
    let gw = free_port();
    let herd = Herd::start(&format!(
        r#"
[[service]]
name = "shared"
command = ["{{hello}}"]
instances = 2
listen = "127.0.0.1:0"
env = {{ HELLO_DELAY_MS = "20" }}

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{gw}"

[[route]]
service = "shared"
"#
    ));
    (herd, ([127, 0, 0, 1], gw).into())
}

#[test]
fn a_service_on_a_shared_socket_is_reached_through_its_address() {
    let (herd, addr) = shared_service_behind_gateway();
    // The kernel spreads the gateway's pooled connections over the instances as it likes;
    // port = "auto" services are the ones the gateway itself balances.
    let workers = crate::util::workers_seen(addr, 6, 5);
    assert!(
        !workers.is_empty() && workers.iter().all(|w| *w < 2),
        "{workers:?}"
    );
    let out = herd.cli(&["stop", "shared"]);
    assert!(out.status.success());
    let r = get(addr, "/").unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "no ready endpoint");
}

/// A front listener whose upstream `mixed` is `[failing, extra...]`, where `failing` is a back
/// listener of the same gateway answering every request 502.
fn front_and_failing_back(extra: &[u16], route_extra: &str) -> (Herd, std::net::SocketAddr) {
    let (front, back) = (free_port(), free_port());
    let mut endpoints = vec![format!("\"127.0.0.1:{back}\"")];
    endpoints.extend(extra.iter().map(|p| format!("\"127.0.0.1:{p}\"")));
    let herd = Herd::start(&format!(
        r#"
[[gateway.listener]]
name = "front"
listen = "127.0.0.1:{front}"

[[gateway.listener]]
name = "back"
listen = "127.0.0.1:{back}"

[[route]]
listener = "back"
upstream = "nowhere"

[[route]]
listener = "front"
upstream = "mixed"
{route_extra}

[[upstream]]
name = "nowhere"
endpoints = ["127.0.0.1:1"]

[[upstream]]
name = "mixed"
endpoints = [{}]
breaker = {{ trip = "consecutiveFailures >= 100000" }}
"#,
        endpoints.join(", ")
    ));
    (herd, ([127, 0, 0, 1], front).into())
}

#[test]
fn a_post_that_was_sent_is_not_retried() {
    let hello = Backends::start_as(7, 0);
    let (herd, front) = front_and_failing_back(
        &hello.ports,
        r#"retries = { policy = "constant", duration = "1ms", maxRetries = 3 }"#,
    );
    // Round-robin sends the first request to the failing endpoint.
    let mut s = std::net::TcpStream::connect(front).unwrap();
    use std::io::{Read, Write};
    s.write_all(
        b"POST /orders HTTP/1.1\r\nHost: a\r\nx-request-id: the-post\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    let lines = wait_for("the access line", Duration::from_secs(5), || {
        let l = access_lines(&herd, "the-post");
        l.iter().any(|l| l["listener"] == "front").then_some(l)
    });
    let front_line = lines.iter().find(|l| l["listener"] == "front").unwrap();
    assert_eq!(front_line["tries"], 1, "{front_line}");
}

#[test]
fn under_total_failure_the_retry_budget_caps_retries() {
    let (herd, front) = front_and_failing_back(
        &[],
        r#"retries = { policy = "constant", duration = "0ms", maxRetries = -1 }"#,
    );
    let mut c = Client::new(front);
    for n in 0..200 {
        let r = c
            .get("/", &[("x-request-id", &format!("budget-{n}"))])
            .unwrap();
        // The back listener answers 502, or 503 once its own breaker opened.
        assert!(matches!(r.status, 502 | 503), "{}", r.status);
    }
    let lines = wait_for("the access lines", Duration::from_secs(5), || {
        let l: Vec<_> = access_lines(&herd, "budget-")
            .into_iter()
            .filter(|l| l["listener"] == "front")
            .collect();
        (l.len() == 200).then_some(l)
    });
    let retries: u64 = lines.iter().map(|l| l["tries"].as_u64().unwrap() - 1).sum();
    // The budget: 10 retries per second over a 10 s window (100) plus 20 % of the requests.
    assert!(retries >= 100, "the floor allows retries: {retries}");
    assert!(
        retries <= 100 + 40 + 5,
        "retries beyond the budget: {retries}"
    );
    // Once the reserve is spent, each request earns a fifth of a retry.
    let late: u64 = lines[150..]
        .iter()
        .map(|l| l["tries"].as_u64().unwrap() - 1)
        .sum();
    assert!(
        late <= 50 / 5 + 2,
        "{late} retries among the last 50 requests"
    );
}

/// An endpoint answering every request (but `/healthz`) with a status a test can change, as
/// `{"worker": N}`, and counting the requests that reach it; serves keep-alive connections on a
/// free loopback port until dropped.
struct Stub {
    port: u16,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    fn start(worker: u64, status: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stub = Stub {
            port,
            status: Arc::new(AtomicU16::new(status)),
            hits: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (status, hits, stop) = (stub.status.clone(), stub.hits.clone(), stub.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (status, hits, stop) = (status.clone(), hits.clone(), stop.clone());
                std::thread::spawn(move || Stub::serve(conn, worker, &status, &hits, &stop));
            }
        });
        stub
    }

    fn serve(
        conn: std::net::TcpStream,
        worker: u64,
        status: &AtomicU16,
        hits: &AtomicUsize,
        stop: &AtomicBool,
    ) {
        use std::io::{BufRead, BufReader, Write};
        let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
        let mut out = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    head.push(line);
                    continue;
                }
                Err(_) => return,
            }
            let end = line == "\r\n" || line == "\n";
            head.push(line);
            if !end {
                continue;
            }
            let request = head.concat();
            head.clear();
            if request.trim().is_empty() {
                continue;
            }
            let code = if request.starts_with("GET /healthz ") {
                200
            } else {
                hits.fetch_add(1, Ordering::SeqCst);
                status.load(Ordering::SeqCst)
            };
            let body = format!("{{\"worker\":{worker}}}");
            let answer = format!(
                "HTTP/1.1 {code} Stub\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if out.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// Requests that reached it.
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Breakers that never trip, so only ejection takes endpoints out.
const NO_BREAKER: &str = r#"breaker = { trip = "consecutiveFailures >= 100000" }"#;

/// The value of the samples on `admin`'s `/metrics` whose series contains every one of `want`.
fn metric(admin: std::net::SocketAddr, want: &[&str]) -> f64 {
    let r = get(admin, "/metrics").unwrap();
    prometheus(&r.body)
        .iter()
        .filter(|(k, _)| want.iter().all(|w| k.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn an_endpoint_answering_500_is_ejected_gets_no_traffic_and_returns_after_the_ejection_time() {
    let bad = Stub::start(0, 500);
    let good = [Stub::start(1, 200), Stub::start(2, 200)];
    let admin_port = free_port();
    let (herd, addr) = gateway_over(
        &[bad.port, good[0].port, good[1].port],
        "",
        &format!(
            "{NO_BREAKER}\noutlier = {{ consecutive_5xx = 3, base_ejection_time = \"3s\" }}\n\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n"
        ),
    );
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let mut c = Client::new(addr);
    // Round-robin: every third request reaches the bad endpoint; its third 500 ejects it.
    let mut fails = 0;
    for n in 0..9 {
        let r = c
            .get("/", &[("x-request-id", &format!("eject-{n}"))])
            .unwrap();
        fails += usize::from(r.status == 500);
    }
    let ejected_at = std::time::Instant::now();
    assert_eq!((fails, bad.hits()), (3, 3));

    // Ejected: no traffic reaches it, and the log names it on every request.
    bad.answer(200);
    for n in 0..30 {
        let r = c
            .get("/", &[("x-request-id", &format!("out-{n}"))])
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_ne!(r.json()["worker"], 0);
    }
    assert_eq!(bad.hits(), 3, "traffic reached the ejected endpoint");
    let lines = wait_for("access lines", Duration::from_secs(5), || {
        let eject = access_lines(&herd, "eject-");
        let out = access_lines(&herd, "out-");
        (eject.len() == 9 && out.len() == 30).then_some((eject, out))
    });
    // Turns 0, 3 and 6 reached it: the seventh request ejected it, the next two skipped it.
    let changes: Vec<usize> = (0..9)
        .filter(|&i| !lines.0[i]["changes"].is_null())
        .collect();
    assert_eq!(changes, vec![6]);
    assert_eq!(
        lines.0[6]["changes"],
        serde_json::json!([{ "endpoint": bad.addr(), "event": "ejected", "ejectedMs": 3000 }])
    );
    assert_eq!(lines.0[6]["status"], 500);
    assert!(
        lines.0[..7].iter().all(|l| l["skipped"].is_null()),
        "nothing skipped before"
    );
    let after = lines.0[7..].iter().chain(&lines.1);
    let skipped = serde_json::json!([{ "endpoint": bad.addr(), "reason": "ejected" }]);
    for l in after {
        assert_eq!(l["skipped"], skipped, "{l}");
        assert!(l["changes"].is_null(), "{l}");
    }
    let ejections = [
        "herd_gateway_ejections_total{",
        "upstream=\"upstream backends\"",
        "reason=\"consecutive_5xx\"",
    ];
    assert_eq!(metric(admin, &ejections), 1.0);
    assert_eq!(
        metric(
            admin,
            &["herd_gateway_ejected_endpoints{upstream=\"upstream backends\"}"]
        ),
        1.0
    );

    // Back after its time, and in rotation as before.
    wait_for("the endpoint back", Duration::from_secs(10), || {
        (c.get("/", &[]).unwrap().json()["worker"] == 0).then_some(())
    });
    let out_for = ejected_at.elapsed();
    assert!(
        out_for >= Duration::from_millis(2500),
        "back after {out_for:?}"
    );
    wait_for("the gauge back at 0", Duration::from_secs(5), || {
        let gauge = ["herd_gateway_ejected_endpoints{upstream=\"upstream backends\"}"];
        (metric(admin, &gauge) == 0.0).then_some(())
    });
    let before = bad.hits();
    for _ in 0..30 {
        assert_eq!(c.get("/", &[]).unwrap().status, 200);
    }
    assert_eq!(bad.hits() - before, 10, "a third of the traffic again");
}

#[test]
fn a_second_ejection_lasts_longer_than_the_first() {
    let bad = Stub::start(0, 500);
    let good = Stub::start(1, 200);
    let (herd, addr) = gateway_over(
        &[bad.port, good.port],
        "",
        &format!(
            "{NO_BREAKER}\noutlier = {{ consecutive_5xx = 2, base_ejection_time = \"1s\", interval = \"1h\" }}"
        ),
    );
    let mut c = Client::new(addr);
    let mut n = 0;
    // Sends requests until `hits` requests reached the bad endpoint; returns when that was.
    let mut until_hits = |hits: usize| {
        wait_for(
            "requests to reach the bad endpoint",
            Duration::from_secs(15),
            || {
                n += 1;
                let r = c
                    .get("/", &[("x-request-id", &format!("again-{n}"))])
                    .unwrap();
                assert!(matches!(r.status, 200 | 500), "{}", r.status);
                (bad.hits() >= hits).then(std::time::Instant::now)
            },
        )
    };
    let first = until_hits(2);
    let back = until_hits(3);
    let second = until_hits(4);
    let back_again = until_hits(5);
    let (gap1, gap2) = (back - first, back_again - second);
    assert!(
        gap1 >= Duration::from_millis(900),
        "first ejection {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1900),
        "second ejection {gap2:?}"
    );
    assert!(gap2 > gap1, "{gap1:?} then {gap2:?}");
    let lengths: Vec<serde_json::Value> = access_lines(&herd, "again-")
        .iter()
        .filter(|l| !l["changes"].is_null())
        .map(|l| l["changes"][0]["ejectedMs"].clone())
        .collect();
    assert_eq!(lengths, vec![1000, 2000]);
}

#[test]
fn max_ejection_percent_caps_how_many_endpoints_are_ejected_at_once() {
    let failing = [Stub::start(0, 500), Stub::start(1, 500)];
    let good = Stub::start(2, 200);
    let (herd, addr) = gateway_over(
        &[failing[0].port, failing[1].port, good.port],
        "",
        &format!(
            "{NO_BREAKER}\noutlier = {{ consecutive_5xx = 2, base_ejection_time = \"60s\", max_ejection_percent = 34 }}"
        ),
    );
    let mut c = Client::new(addr);
    for n in 0..30 {
        let r = c
            .get("/", &[("x-request-id", &format!("cap-{n}"))])
            .unwrap();
        assert!(matches!(r.status, 200 | 500), "{}", r.status);
    }
    let lines = wait_for("access lines", Duration::from_secs(5), || {
        let l = access_lines(&herd, "cap-");
        (l.len() == 30).then_some(l)
    });
    let ejected: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| !l["changes"].is_null())
        .map(|l| &l["changes"][0]["endpoint"])
        .collect();
    assert_eq!(
        ejected.len(),
        1,
        "one of three is 33 % ≤ 34 %, two would be 67 %"
    );
    let (out, kept) = if *ejected[0] == failing[0].addr() {
        (&failing[0], &failing[1])
    } else {
        (&failing[1], &failing[0])
    };
    assert_eq!(out.hits(), 2, "the ejected endpoint got no more traffic");
    assert!(
        kept.hits() >= 10,
        "the other failing endpoint stays: {}",
        kept.hits()
    );
    assert!(
        herd.stderr()
            .contains("not ejected: 1 of 3 endpoint(s) ejected already")
    );
}

#[test]
fn an_endpoint_refusing_connections_is_ejected_after_consecutive_failures() {
    let mut backends = Backends::start(3, 0);
    let (herd, addr) = upstream_gateway(
        &backends,
        "",
        &format!(
            "{NO_BREAKER}\noutlier = {{ consecutive_local_origin_failure = 2, base_ejection_time = \"60s\" }}"
        ),
    );
    let dead = format!("127.0.0.1:{}", backends.ports[2]);
    backends.kill(2);
    let mut c = Client::new(addr);
    for n in 0..30 {
        let r = c
            .get("/", &[("x-request-id", &format!("refused-{n}"))])
            .unwrap();
        assert_eq!(
            r.status, 200,
            "a refused connection is tried on another endpoint"
        );
    }
    let lines = wait_for("access lines", Duration::from_secs(5), || {
        let l = access_lines(&herd, "refused-");
        (l.len() == 30).then_some(l)
    });
    // The dead endpoint's turn came twice before it was ejected; after that no request tried it.
    let retried: Vec<usize> = (0..30).filter(|&i| lines[i]["tries"] == 2).collect();
    assert_eq!(retried.len(), 2, "{retried:?}");
    let last = retried[1];
    assert_eq!(lines[last]["changes"][0]["endpoint"], dead.as_str());
    assert_eq!(lines[last]["changes"][0]["event"], "ejected");
    for l in &lines[last + 1..] {
        assert_eq!(l["skipped"][0]["endpoint"], dead.as_str(), "{l}");
    }
}

#[test]
fn bad_outlier_settings_are_refused_with_line_and_key() {
    let herd = Herd::prepare(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\n\n[upstream.outlier]\n\
         max_ejection_percent = 101\nbase_ejection_time = \"1m\"\nmax_ejection_time = \"10s\"\n",
    );
    let out = herd.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        ":6:1: upstream[0].outlier.max_ejection_percent: must be 0 to 100, got 101",
        ":8:1: upstream[0].outlier.max_ejection_time: must be at least base_ejection_time (1m)",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
}

#[test]
fn a_retry_goes_back_to_a_tried_endpoint_when_the_others_are_ejected() {
    let answering = Stub::start(0, 503);
    let refusing = free_port();
    let (herd, addr) = gateway_over(
        &[answering.port, refusing],
        r#"retries = { policy = "constant", duration = "1ms", maxRetries = 2 }"#,
        &format!(
            "{NO_BREAKER}\noutlier = {{ consecutive_5xx = 0, consecutive_gateway_failure = 0, \
             consecutive_local_origin_failure = 1, base_ejection_time = \"60s\" }}"
        ),
    );
    let mut c = Client::new(addr);
    // The first request finds the refusing endpoint, which is ejected at once.
    let r = c.get("/", &[("x-request-id", "back-0")]).unwrap();
    assert_eq!(r.status, 503);
    // The next one's retries have only the endpoint they tried left: they go back to it, and
    // the client gets its answer rather than herd's "every endpoint is ejected".
    let r = c.get("/", &[("x-request-id", "back-1")]).unwrap();
    assert_eq!(
        (r.status, r.json()["worker"].as_u64()),
        (503, Some(0)),
        "{}",
        r.body
    );
    let line = wait_for("the access line", Duration::from_secs(5), || {
        access_lines(&herd, "back-1").into_iter().next()
    });
    assert_eq!(line["tries"], 3, "{line}");
    assert_eq!(line["skipped"][0]["reason"], "ejected", "{line}");
}

#[test]
fn a_crash_behind_a_shared_socket_does_not_open_a_breaker_for_the_service() {
    let (herd, addr) = shared_service_behind_gateway();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let (ok, refused) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..32)
            .map(|_| {
                let done = &done;
                s.spawn(move || {
                    let mut client = crate::util::Client::new(addr);
                    let (mut ok, mut refused) = (0, Vec::new());
                    for _ in 0..60 {
                        match client.get("/", &[]) {
                            Ok(r) if r.status == 200 => ok += 1,
                            Ok(r) => refused.push(format!("{} {}", r.status, r.body)),
                            Err(e) => refused.push(e.to_string()),
                        }
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    (ok, refused)
                })
            })
            .collect();
        crate::util::wait_for("load to start", std::time::Duration::from_secs(20), || {
            (done.load(std::sync::atomic::Ordering::Relaxed) > 300).then_some(())
        });
        let victim = herd.pids("shared")[0];
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        clients.into_iter().map(|c| c.join().unwrap()).fold(
            (0, Vec::new()),
            |(ok, mut refused), (o, r)| {
                refused.extend(r);
                (ok + o, refused)
            },
        )
    });
    assert!(
        refused.iter().all(|r| !r.contains("circuit breaker")),
        "the service's breaker opened: {refused:?}"
    );
    // Requests in flight on the killed instance may fail (at most one per client connection);
    // everything else is answered.
    assert!(ok >= 1920 - 64, "{ok} of 1920 answered: {refused:?}");
}
