//! The Node.js shop under herd for its tests: `examples/shop-node/herd.toml` started on free
//! ports (its npm modules installed on first use), requests through the gateway, stock and
//! notification lookups, and "settled": herd's metrics show every outbox event relayed and
//! delivered to both subscribers with nothing in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::sdk::{npm_install, on_path};
use crate::state::call_at;
use crate::util::{Client, Herd, Response, free_port, get, wait_for};

/// `examples/shop-node`.
pub(crate) fn shop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop-node")
}

/// The shop running under herd.
pub(crate) struct Shop {
    herd: Herd,
    gateway: SocketAddr,
    api: SocketAddr,
    admin: SocketAddr,
}

impl Shop {
    /// Starts the example's herd.toml on free ports, or `None` (skipped) without node and npm.
    pub(crate) fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// As `start`, with each `(from, to)` of `changes` made to the herd.toml first (`from` must
    /// be in it).
    pub(crate) fn start_with(changes: &[(&str, &str)]) -> Option<Self> {
        if !on_path("node") || !on_path("npm") {
            eprintln!("skipped: node or npm is not on PATH");
            return None;
        }
        let dir = shop_dir();
        npm_install(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (gateway, api, admin) = (free_port(), free_port(), free_port());
        let mut config = std::fs::read_to_string(dir.join("herd.toml")).unwrap();
        for (from, to) in [
            ("127.0.0.1:8000", format!("127.0.0.1:{gateway}")),
            ("127.0.0.1:3500", format!("127.0.0.1:{api}")),
            ("127.0.0.1:9901", format!("127.0.0.1:{admin}")),
            (
                r#"cwd = ".""#,
                format!("cwd = {:?}", dir.display().to_string()),
            ),
        ] {
            assert!(
                config.contains(from),
                "examples/shop-node/herd.toml lost {from}"
            );
            config = config.replace(from, &to);
        }
        for (from, to) in changes {
            assert!(
                config.contains(from),
                "examples/shop-node/herd.toml lost {from}"
            );
            config = config.replace(from, to);
        }
        let mut herd = Herd::prepare(&config);
        herd.spawn();
        let api: SocketAddr = ([127, 0, 0, 1], api).into();
        wait_for(
            "the shop ready and subscribed",
            Duration::from_secs(60),
            || {
                let status = herd.try_status()?;
                let ready = status.iter().all(|s| {
                    let instances = s["instances"].as_array().unwrap();
                    instances.len() == 2 && instances.iter().all(|i| i["state"] == "ready")
                });
                let meta = get(api, "/v1.0/metadata").ok()?.json();
                let subscribed: BTreeSet<&str> = meta["subscriptions"]
                    .as_array()?
                    .iter()
                    .filter(|s| s["topic"] == "orders")
                    .filter_map(|s| s["app"].as_str())
                    .collect();
                (ready && subscribed == BTreeSet::from(["inventory", "notifications"]))
                    .then_some(())
            },
        );
        Some(Shop {
            herd,
            gateway: ([127, 0, 0, 1], gateway).into(),
            api,
            admin: ([127, 0, 0, 1], admin).into(),
        })
    }

    /// The pids of `service`'s instances.
    pub(crate) fn pids(&self, service: &str) -> Vec<u32> {
        self.herd.pids(service)
    }

    /// One request through the gateway on a fresh connection.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let mut all = vec![
            ("Connection", "close"),
            ("Content-Type", "application/json"),
        ];
        all.extend_from_slice(headers);
        Client::new(self.gateway)
            .read_timeout(Duration::from_secs(40))
            .request(method, path, &all, body.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs()))
    }

    /// `herd <verb> <service>`, which must succeed.
    pub(crate) fn control(&self, verb: &str, service: &str) {
        let out = self.herd.cli(&[verb, service]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "herd {verb} {service}: {err}");
    }

    /// The recent output of every service.
    fn logs(&self) -> String {
        let out = self.herd.cli(&["logs", "-n", "300"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `POST /orders` with these lines.
    pub(crate) fn order(&self, lines: Value) -> Response {
        self.call(
            "POST",
            "/orders",
            &[],
            &json!({ "items": lines }).to_string(),
        )
    }

    /// The stock of `item`.
    pub(crate) fn available(&self, item: &str) -> i64 {
        let r = self.call("GET", &format!("/items/{item}"), &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["available"].as_i64().unwrap()
    }

    /// The sum of the samples on `/metrics` named `name` whose labels contain every one of `want`.
    fn metric(&self, name: &str, want: &[&str]) -> f64 {
        get(self.admin, "/metrics")
            .unwrap()
            .body
            .lines()
            .filter(|l| l.starts_with(name) && want.iter().all(|w| l.contains(w)))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Publishes a CloudEvent of `kind` with `data` to `orders` through the sidecar API, as a
    /// redelivery of an event the outbox published would arrive.
    pub(crate) fn redeliver(&self, kind: &str, data: &Value) {
        let event = json!({
            "specversion": "1.0", "id": format!("again-{kind}"), "source": "orders",
            "type": kind, "datacontenttype": "application/json", "data": data,
        });
        let ce = [("content-type", "application/cloudevents+json")];
        let r = call_at(
            self.api,
            "POST",
            "/v1.0/publish/pubsub/orders",
            &ce,
            &event.to_string(),
        );
        assert_eq!(r.status, 204, "{}", r.body);
    }

    /// Waits until `events` outbox events were relayed to `orders` and each subscriber had them
    /// and `extra` more delivered, with no delivery in flight.
    pub(crate) fn settle(&self, events: usize, extra: usize) {
        let (events, extra) = (events as f64, extra as f64);
        wait_for("every event delivered", Duration::from_secs(60), || {
            let published = self.metric("herd_outbox_published_total", &[r#"store="orderstore""#]);
            let done = ["inventory", "notifications"].iter().all(|app| {
                let app = format!(r#"app="{app}""#);
                let ok = self.metric(
                    "herd_pubsub_deliveries_total",
                    &[&app, r#"topic="orders""#, r#"outcome="success""#],
                );
                let in_flight = self.metric("herd_pubsub_in_flight", &[&app]);
                ok >= published + extra && in_flight == 0.0
            });
            (published >= events && done).then_some(())
        });
    }

    /// The notification of `order`, once there.
    pub(crate) fn notification(&self, order: &str) -> Value {
        wait_for("the notification", Duration::from_secs(30), || {
            let r = self.call("GET", &format!("/notifications/{order}"), &[], "");
            (r.status == 200).then(|| r.json())
        })
    }

    /// How many notifications `GET /notifications` lists for each order.
    pub(crate) fn notification_counts(&self) -> BTreeMap<String, usize> {
        let r = self.call("GET", "/notifications?limit=1000", &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        let mut counts = BTreeMap::new();
        for n in r.json().as_array().unwrap() {
            *counts
                .entry(n["order"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        counts
    }
}

/// The loopback address on the port in environment variable `var` of process `pid` (an
/// instance's `PORT`, or `DAPR_HTTP_PORT`: its sidecar API, under its app id).
pub(crate) fn instance_addr(pid: u32, var: &str) -> SocketAddr {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the instance's environ");
    let prefix = format!("{var}=");
    let port = environ
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{var} not in the environment of {pid}"))
        .parse::<u16>()
        .unwrap();
    ([127, 0, 0, 1], port).into()
}

/// Whether orders' intake (`intake-0` … `intake-15`, read through an orders instance's sidecar
/// API at `sidecar`) has an entry for `id`.
pub(crate) fn intake_has(sidecar: SocketAddr, id: &str) -> bool {
    let keys: Vec<String> = (0..16).map(|i| format!("intake-{i}")).collect();
    let r = call_at(
        sidecar,
        "POST",
        "/v1.0/state/statestore/bulk",
        &[("Content-Type", "application/json")],
        &json!({ "keys": keys }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["data"].get(id).is_some())
}

/// Sends `sig` to process `pid`.
pub(crate) fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

/// Places an order (`POST /orders` with `headers`, the `Idempotency-Key` making its id `id`,
/// and `body`) on the first of two `orders` instances while the second one's sweeper overtakes
/// it: `inventory` is paused so the request waits for its reservation after writing the intake
/// entry, then the serving instance is paused and inventory resumed, so the other instance's
/// sweeper (run with `SHOP_SWEEP_AFTER_MS=0`) stores the order first; then the serving instance
/// resumes and meets that order. Returns the request's answer.
pub(crate) fn place_overtaken_by_the_sweeper(
    orders: &[u32],
    inventory: &[u32],
    id: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let (serving, sweeping) = (orders[0], orders[1]);
    let serving_at = instance_addr(serving, "PORT");
    let sidecar = instance_addr(sweeping, "DAPR_HTTP_PORT");
    let _resume = Resume(orders.iter().chain(inventory).copied().collect());
    inventory
        .iter()
        .for_each(|&pid| signal(pid, Signal::SIGSTOP));
    std::thread::scope(|s| {
        let placing = s.spawn(|| {
            Client::new(serving_at)
                .read_timeout(Duration::from_secs(40))
                .request("POST", "/orders", headers, body.as_bytes())
                .unwrap()
        });
        wait_for("the intake entry", Duration::from_secs(30), || {
            intake_has(sidecar, id).then_some(())
        });
        signal(serving, Signal::SIGSTOP);
        inventory
            .iter()
            .for_each(|&pid| signal(pid, Signal::SIGCONT));
        wait_for("the sweeper's order", Duration::from_secs(30), || {
            let path = format!("/v1.0/state/orderstore/order-{id}");
            (call_at(sidecar, "GET", &path, &[], "").status == 200).then_some(())
        });
        signal(serving, Signal::SIGCONT);
        placing.join().unwrap()
    })
}

/// Resumes these processes when dropped, so a failing test leaves none stopped.
pub(crate) struct Resume(pub(crate) Vec<u32>);

impl Drop for Resume {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
    }
}
