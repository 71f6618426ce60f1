//! An unmodified app (`bench/plain-server.js`: fd 3, `server.close()` on SIGTERM, nothing else)
//! behind a proxied `listen` address: rolling reloads and `kill -9` under keep-alive load fail no
//! request, a stopping instance gets SIGTERM only after its requests were answered, and
//! `passthrough = true` still hands the `listen` socket itself to every instance as fd 3.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{Client, Herd, node_available, wait_for};

fn plain_server() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/plain-server.js")
}

fn plain(instances: usize, extra: &str) -> String {
    format!(
        r#"
[[service]]
name = "plain"
command = ["node", "{}"]
instances = {instances}
listen = "127.0.0.1:0"
{extra}
"#,
        plain_server().display()
    )
}

/// Load from `clients` keep-alive connections until `stop`: GETs, and POSTs with a body (never
/// sent twice by herd) when `posts` is set. Counts answers and keeps every failure.
struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize, posts: bool) -> Self {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|i| {
                let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    let mut c = Client::new(addr);
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let r = if posts && (i + n).is_multiple_of(2) {
                            c.request("POST", "/order", &[], b"{\"n\":1}")
                        } else {
                            c.get("/", &[])
                        };
                        match r {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!("status {}: {}", r.status, r.body));
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
        Self {
            ok,
            failed,
            stop,
            threads,
        }
    }

    fn answered(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests were answered.
    fn wait_more(&self, more: usize) {
        let from = self.answered();
        wait_for("more answered requests", Duration::from_secs(30), || {
            (self.answered() >= from + more).then_some(())
        });
    }

    /// Stops the clients and returns the answered count and every failure.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors: Vec<String> = self
            .threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(self.failed.load(Ordering::Relaxed), errors.len());
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

#[test]
fn an_unmodified_app_reloads_under_keep_alive_load_without_a_failed_request() {
    if !node_available() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let herd = Herd::start(&plain(2, ""));
    let load = Load::start(herd.addr("plain"), 12, true);
    load.wait_more(300);
    let mut replaced = Vec::new();
    for _ in 0..3 {
        let before = herd.pids("plain");
        let out = herd.cli(&["reload", "plain"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        replaced.extend(before);
        load.wait_more(200);
    }
    let (answered, errors) = load.finish();
    assert!(errors.is_empty(), "{} failed: {errors:?}", errors.len());
    assert!(answered >= 900);
    let now = herd.pids("plain");
    assert!(now.iter().all(|p| !replaced.contains(p)), "{now:?}");
}

#[test]
fn an_unmodified_app_loses_no_request_to_kill_9_under_keep_alive_load() {
    if !node_available() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let herd = Herd::start(&plain(3, ""));
    let load = Load::start(herd.addr("plain"), 12, false);
    load.wait_more(300);
    for round in 0..3 {
        let slot = round % 3;
        let victim = herd.instances("plain")[slot]["pid"].as_u64().unwrap() as u32;
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
        wait_for("the killed instance back", Duration::from_secs(10), || {
            let i = &herd.instances("plain")[slot];
            (i["state"] == "ready" && i["pid"].as_u64() != Some(u64::from(victim))).then_some(())
        });
        load.wait_more(200);
    }
    let (_, errors) = load.finish();
    assert!(errors.is_empty(), "{} failed: {errors:?}", errors.len());
    let restarts: u64 = herd
        .instances("plain")
        .iter()
        .map(|i| i["restarts"].as_u64().unwrap())
        .sum();
    assert_eq!(restarts, 3);
}

/// An app that exits the moment it gets SIGTERM, answering `POST /slow` after 800 ms with its
/// pid (and saying on stdout that it arrived): only a SIGTERM sent after the answer lets that
/// request succeed.
const IMPATIENT: &str = "const http = require('node:http');\
const s = http.createServer((req, res) => { req.resume(); req.on('end', () => {\
const t = req.url === '/slow' ? 800 : 0; if (t) console.log('slow request in');\
setTimeout(() => res.end(JSON.stringify({ pid: process.pid })), t); }); });\
s.listen({ fd: 3 }); process.on('SIGTERM', () => process.exit(0));";

#[test]
fn a_stopping_instance_gets_sigterm_only_after_answering_what_it_was_sent() {
    if !node_available() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let herd = Herd::start(&format!(
        r#"
[[service]]
name = "impatient"
command = ["node", "-e", "{}"]
listen = "127.0.0.1:0"
"#,
        IMPATIENT.replace('"', "\\\"")
    ));
    let addr = herd.addr("impatient");
    let old = herd.pids("impatient")[0];
    // A POST with a body is never sent twice: it succeeds only on the instance it reached.
    let slow = std::thread::spawn(move || {
        Client::new(addr)
            .request("POST", "/slow", &[], b"{}")
            .unwrap()
    });
    wait_for("the slow request in flight", Duration::from_secs(5), || {
        herd.logs("impatient")
            .contains("slow request in")
            .then_some(())
    });
    let out = herd.cli(&["reload", "impatient"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["pid"].as_u64(), Some(u64::from(old)));
    assert_ne!(herd.pids("impatient")[0], old);
}

/// The inode of `pid`'s fd 3, when it is a socket.
fn fd3_socket(pid: u32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).expect("fd 3");
    let text = link.to_string_lossy();
    text.strip_prefix("socket:[")
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("fd 3 of {pid} is {text}"))
}

/// The local port of the listening TCP socket with `inode` (from /proc/net/tcp).
fn listening_port(inode: u64) -> u16 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(9) == Some(&inode.to_string().as_str()) && f.get(3) == Some(&"0A"))
        .map(|f| u16::from_str_radix(f[1].rsplit(':').next().unwrap(), 16).unwrap())
        .unwrap_or_else(|| panic!("no listening socket with inode {inode}"))
}

#[test]
fn passthrough_hands_the_listen_socket_to_every_instance_and_proxying_a_private_one() {
    if !node_available() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let shared = Herd::start(&plain(2, "passthrough = true"));
    let port = shared.addr("plain").port();
    let inodes: Vec<u64> = shared.pids("plain").into_iter().map(fd3_socket).collect();
    assert_eq!(inodes[0], inodes[1], "one socket for all");
    assert_eq!(listening_port(inodes[0]), port);
    for i in shared.instances("plain") {
        assert!(i["port"].is_null(), "{i}");
    }
    let r = Client::new(shared.addr("plain")).get("/", &[]).unwrap();
    assert_eq!(r.status, 200);

    let proxied = Herd::start(&plain(2, ""));
    let port = proxied.addr("plain").port();
    let instances = proxied.instances("plain");
    let own: Vec<u16> = instances
        .iter()
        .map(|i| listening_port(fd3_socket(i["pid"].as_u64().unwrap() as u32)))
        .collect();
    assert_ne!(own[0], own[1]);
    for (i, p) in instances.iter().zip(&own) {
        assert_ne!(*p, port);
        assert_eq!(i["port"].as_u64(), Some(u64::from(*p)), "{i}");
    }
    let r = Client::new(proxied.addr("plain")).get("/", &[]).unwrap();
    assert_eq!(r.status, 200);
}
