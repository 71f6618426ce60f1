//! Cluster mode: one port, many instances; crashes, restarts and reloads without failed
//! requests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{Client, Herd, get, wait_for, workers_seen};

fn hello(instances: usize, delay_ms: u64, extra: &str) -> String {
    format!(
        r#"
[[service]]
name = "hello"
command = ["{{hello}}"]
instances = {instances}
listen = "127.0.0.1:0"
env = {{ HELLO_DELAY_MS = "{delay_ms}", HELLO_DRAIN_MS = "300" }}
{extra}
"#
    )
}

#[test]
fn requests_on_one_port_reach_every_instance() {
    let herd = Herd::start(&hello(2, 30, ""));
    let addr = herd.addr("hello");
    let pids = herd.pids("hello");
    assert_eq!(pids.len(), 2);
    assert_ne!(pids[0], pids[1]);
    wait_for("the start-up report", Duration::from_secs(5), || {
        herd.stderr()
            .contains("ready: 2 instance(s) in ")
            .then_some(())
    });

    let workers = workers_seen(addr, 8, 5);
    assert_eq!(workers, BTreeSet::from([0, 1]));

    // The trace id comes from traceparent when one is sent.
    let mut c = Client::new(addr);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = c.get("/", &[("traceparent", tp)]).unwrap();
    assert_eq!(r.json()["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r.json()["message"], "Hello from distributed node");
}

#[test]
fn killed_instance_is_back_within_a_second_while_the_port_keeps_answering() {
    let herd = Herd::start(&hello(2, 0, ""));
    let addr = herd.addr("hello");
    let victim = herd.instances("hello")[0]["pid"].as_u64().unwrap() as u32;

    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let mut answered = 0;
    let back = loop {
        let r = get(addr, "/").expect("the port keeps answering");
        assert_eq!(r.status, 200);
        answered += 1;
        let i = &herd.instances("hello")[0];
        if i["state"] == "ready" && i["pid"].as_u64() != Some(victim as u64) {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "not restarted"
        );
    };
    assert!(
        back < Duration::from_secs(1),
        "instance 0 back after {back:?}"
    );
    assert!(answered > 0);
    let i = &herd.instances("hello")[0];
    assert_eq!(i["restarts"], 1);
    assert_eq!(i["last_exit"], "killed by SIGKILL");
}

#[test]
fn a_command_that_crashes_at_once_backs_off_and_ends_errored() {
    let mut herd = Herd::prepare(
        r#"
[[service]]
name = "crasher"
command = ["sh", "-c", "echo boom >&2; exit 3"]
restart = { initial_backoff = "40ms", max_backoff = "1s", max_restarts = 4, window = "1m" }
"#,
    );
    let started = Instant::now();
    herd.spawn();
    let inst = wait_for("the crasher to be errored", Duration::from_secs(10), || {
        let i = herd.instances("crasher").remove(0);
        (i["state"] == "errored").then_some(i)
    });
    let took = started.elapsed();
    assert_eq!(inst["restarts"], 4);
    assert_eq!(inst["last_exit"], "exit code 3");
    assert!(inst["pid"].is_null());
    // Equal jitter keeps each delay above half its step: 20 + 40 + 80 + 160 ms at least.
    assert!(took >= Duration::from_millis(300), "no backoff: {took:?}");
    let logs = herd.logs("crasher");
    assert!(logs.contains("crasher:0 ! boom"), "{logs}");
    assert!(logs.contains("errored: 4 restarts within 1m"), "{logs}");

    // It stays errored (no more restarts) until told otherwise.
    let out = herd.cli(&["restart", "crasher"]);
    assert!(out.status.success());
    wait_for(
        "restarts after herd restart",
        Duration::from_secs(10),
        || (herd.instances("crasher")[0]["restarts"].as_u64() > Some(4)).then_some(()),
    );
}

/// Runs `clients` keep-alive clients against `addr` until `stop`, counting successes and failures.
fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    Vec<std::thread::JoinHandle<Vec<String>>>,
) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let handles = (0..clients)
        .map(|_| {
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut c = Client::new(addr);
                while !stop.load(Ordering::Relaxed) {
                    match c.get("/", &[]) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("status {}", r.status));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(e.to_string());
                        }
                    }
                }
                errors
            })
        })
        .collect();
    (ok, failed, handles)
}

#[test]
fn rolling_reload_under_load_fails_no_request() {
    let herd = Herd::start(&hello(2, 2, ""));
    let addr = herd.addr("hello");
    let before = herd.pids("hello");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, handles) = load(addr, 16, stop.clone());

    wait_for("load to start", Duration::from_secs(5), || {
        (ok.load(Ordering::Relaxed) > 200).then_some(())
    });
    for _ in 0..2 {
        let out = herd.cli(&["reload", "hello"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("hello:1 new pid"), "progress shown: {text}");
    }
    // Keep the load on after the reloads until thousands of requests have been made in all.
    let after_reloads = ok.load(Ordering::Relaxed);
    wait_for("load after the reloads", Duration::from_secs(30), || {
        let n = ok.load(Ordering::Relaxed);
        (n > after_reloads + 200 && n >= 2000).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();

    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    let after = herd.pids("hello");
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
}

#[test]
fn a_reload_whose_new_instance_never_gets_ready_is_aborted_and_the_old_ones_keep_serving() {
    let herd = Herd::start(&hello(2, 0, ""));
    let addr = herd.addr("hello");
    let before = herd.pids("hello");
    herd.rewrite(
        r#"
[[service]]
name = "hello"
command = ["sleep", "30"]
instances = 2
listen = "127.0.0.1:0"
ready = { timeout = "400ms" }
"#,
    );
    let out = herd.cli(&["reload", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hello:0"), "{err}");
    assert!(
        err.contains("not accepting on the shared socket within 400ms"),
        "{err}"
    );
    assert!(err.contains("reload aborted"), "{err}");
    assert_eq!(herd.pids("hello"), before);
    assert!(
        herd.instances("hello")
            .iter()
            .all(|i| i["state"] == "ready")
    );
    assert_eq!(get(addr, "/").unwrap().status, 200);
}

#[test]
fn an_instance_above_max_memory_is_replaced_without_downtime() {
    let herd = Herd::start(
        r#"
[[service]]
name = "hello"
command = ["{hello}"]
listen = "127.0.0.1:0"
max_memory = "40MB"
env = { HELLO_BALLAST_MB = "64", HELLO_DELAY_MS = "0" }
"#,
    );
    let addr = herd.addr("hello");
    let first = herd.pids("hello")[0];
    wait_for("a memory restart", Duration::from_secs(10), || {
        let i = herd.instances("hello").remove(0);
        (i["restarts"].as_u64() >= Some(1) && i["pid"].as_u64() != Some(first as u64)).then_some(())
    });
    assert_eq!(get(addr, "/").unwrap().status, 200);
    let logs = herd.logs("hello");
    assert!(
        logs.contains("above max_memory 40 MB; replacing it"),
        "{logs}"
    );
}

#[test]
fn instances_with_ports_of_their_own_are_probed_over_http_and_reload() {
    let mut herd = Herd::prepare(
        r#"
[[service]]
name = "api"
command = ["{hello}"]
instances = 2
port = "auto"
ready = { mode = "http", path = "/healthz" }
env = { HELLO_DELAY_MS = "0", HELLO_DRAIN_MS = "0" }

[[service]]
name = "unhealthy"
command = ["sleep", "30"]
port = "auto"
ready = { mode = "http", timeout = "300ms" }
restart = { max_restarts = 0 }
"#,
    );
    herd.spawn();
    wait_for("api ready", Duration::from_secs(10), || {
        let i = herd.instances("api");
        i.iter().all(|i| i["state"] == "ready").then_some(())
    });
    let answers_as = |inst: &serde_json::Value| {
        let port = inst["port"].as_u64().expect("an own port") as u16;
        let r = get(([127, 0, 0, 1], port).into(), "/").unwrap();
        assert_eq!(r.json()["worker"], inst["id"]);
    };
    let before = herd.instances("api");
    assert_ne!(before[0]["port"], before[1]["port"]);
    before.iter().for_each(answers_as);
    let table = String::from_utf8_lossy(&herd.cli(&["ls"]).stdout).into_owned();
    let port0 = before[0]["port"].as_u64().unwrap();
    assert!(table.contains(&format!("127.0.0.1:{port0}")), "{table}");

    let out = herd.cli(&["reload", "api"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = herd.instances("api");
    assert!(after.iter().zip(&before).all(|(a, b)| a["pid"] != b["pid"]));
    after.iter().for_each(answers_as);

    wait_for(
        "the unhealthy service to be errored",
        Duration::from_secs(10),
        || (herd.instances("unhealthy")[0]["state"] == "errored").then_some(()),
    );
    let logs = herd.logs("unhealthy");
    assert!(logs.contains("GET /healthz on port"), "{logs}");
    assert!(logs.contains("did not answer 2xx within 300ms"), "{logs}");
}

#[test]
fn repeated_kills_never_refuse_a_connection() {
    let herd = Herd::start(&hello(2, 0, ""));
    let addr = herd.addr("hello");
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (stop, refused, served) = (stop.clone(), refused.clone(), served.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match std::net::TcpStream::connect(addr) {
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(s) => {
                            drop(s);
                            if get(addr, "/").is_ok_and(|r| r.status == 200) {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut killed = 0;
    for round in 0..6 {
        // Kill whichever instance is up, then wait for the slot to be back before the next.
        let victim = herd.instances("hello")[round % 2]["pid"].as_u64().unwrap() as u32;
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
        killed += 1;
        wait_for("the killed instance back", Duration::from_secs(5), || {
            let i = &herd.instances("hello")[round % 2];
            (i["state"] == "ready" && i["pid"].as_u64() != Some(victim as u64)).then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().unwrap());
    assert_eq!(killed, 6);
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "the shared socket refused connections"
    );
    assert!(served.load(Ordering::Relaxed) > 0);
    let restarts: u64 = herd
        .instances("hello")
        .iter()
        .map(|i| i["restarts"].as_u64().unwrap())
        .sum();
    assert_eq!(restarts, 6);
}
