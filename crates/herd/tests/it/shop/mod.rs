//! The shop (`examples/shop`) under the real herd: the Rust services built on first use, run by
//! the repository's own `herd.toml` with its addresses moved to free ports and its commands
//! pointed at the built binaries, so these tests check the file users run.
//!
//! - `orders.rs`: an order's way through orders, inventory, pub/sub and notifications; rejected,
//!   malformed, idempotent and cancelled orders;
//! - `concurrency.rs`: 200 orders at once on 50 units;
//! - `recovery.rs`: the sweeper finishing orders an instance left half-done;
//! - `trace.rs`: one trace from the gateway through invocation, the outbox and the deliveries;
//! - `page.rs`: the storefront in headless Chromium;
//! - `backends.rs`: the same shop on Redis and RabbitMQ (`herd.backends.toml`);
//! - `mixed.rs`: Rust and Node.js services swapped in one by one.

mod backends;
mod concurrency;
mod mixed;
mod orders;
mod page;
mod recovery;
mod trace;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use serde_json::{Value, json};

use crate::state::{call_at, call_within};
use crate::util::{Client, Herd, Response, free_port, get, herd_bin, wait_for};

/// The directory of the shop's binaries, built on first use beside `herd`.
pub fn shop_bin_dir() -> PathBuf {
    static BUILD: Once = Once::new();
    let dir = herd_bin().parent().expect("the target dir").to_path_buf();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "shop"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p shop");
        assert!(status.success(), "building the shop failed");
    });
    for bin in ["shop-orders", "shop-inventory", "shop-notifications"] {
        assert!(dir.join(bin).exists(), "{bin} missing in {}", dir.display());
    }
    dir
}

/// The repository's config file `file` (`herd.toml` or a variant) with `from` replaced by `to`
/// for each pair; every `from` must be there, so a change to the file that these tests do not
/// follow fails them.
fn repository_config(file: &str, replacements: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(file);
    let mut text = std::fs::read_to_string(&path).expect("the repository's config file");
    for (from, to) in replacements {
        assert!(text.contains(from), "{file} no longer has {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// How a test runs the shop: which of the repository's config files, what it changes in it
/// (before the addresses move to free ports), what it appends, and herd's environment.
pub struct Setup<'a> {
    /// `herd.toml` or a variant beside it.
    pub file: &'a str,
    /// `(from, to)` replacements made first.
    pub replacements: Vec<(&'a str, String)>,
    /// Appended to the config.
    pub extra: &'a str,
    /// herd's environment (the services inherit it).
    pub env: Vec<(&'a str, String)>,
    /// The topic the subscribers must be seen subscribed to.
    pub topic: String,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            file: "herd.toml",
            replacements: Vec::new(),
            extra: "",
            env: Vec::new(),
            topic: "orders".into(),
        }
    }
}

/// A running shop: herd on the root herd.toml, its gateway, sidecar API and admin listener.
pub struct Shop {
    /// herd.
    pub herd: Herd,
    /// The public listener.
    pub gateway: SocketAddr,
    /// The shared sidecar API listener (app id `herd`).
    pub api: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl Shop {
    /// The shop as the root herd.toml runs it.
    pub fn start() -> Self {
        Self::start_with("", &[])
    }

    /// The shop with `extra` appended to the config and `env` given to herd.
    pub fn start_with(extra: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(Setup {
            extra,
            env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            ..Setup::default()
        })
    }

    /// The shop as `setup` says, once every instance is ready and both subscribers subscribed.
    pub fn launch(setup: Setup<'_>) -> Self {
        let bins = shop_bin_dir();
        let (gateway, api, admin) = (free_port(), free_port(), free_port());
        let mut replacements = setup.replacements;
        replacements.extend([
            (
                "\"./target/release/shop-",
                format!("\"{}/shop-", bins.display()),
            ),
            ("127.0.0.1:8000", format!("127.0.0.1:{gateway}")),
            ("127.0.0.1:3500", format!("127.0.0.1:{api}")),
            ("127.0.0.1:9901", format!("127.0.0.1:{admin}")),
        ]);
        let mut config = repository_config(setup.file, &replacements);
        config.push_str(setup.extra);
        let mut herd = Herd::prepare(&config);
        herd.env
            .extend(setup.env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        herd.spawn();
        herd.wait_all_ready();
        let shop = Shop {
            herd,
            gateway: ([127, 0, 0, 1], gateway).into(),
            api: ([127, 0, 0, 1], api).into(),
            admin: ([127, 0, 0, 1], admin).into(),
        };
        // Both subscribers asked for their subscriptions (GET /dapr/subscribe).
        wait_for("the subscriptions", Duration::from_secs(30), || {
            let meta = call_at(shop.api, "GET", "/v1.0/metadata", &[], "").json();
            let apps: Vec<&str> = meta["subscriptions"]
                .as_array()?
                .iter()
                .filter(|s| s["topic"] == setup.topic.as_str())
                .filter_map(|s| s["app"].as_str())
                .collect();
            (apps.contains(&"inventory") && apps.contains(&"notifications")).then_some(())
        });
        shop
    }

    /// One request through the gateway.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        call_at(self.gateway, method, path, headers, body)
    }

    /// `POST /orders` with `items` as `[(item, quantity)]`.
    pub fn order(&self, items: &[(&str, u32)], headers: &[(&str, &str)]) -> Response {
        self.order_within(items, headers, Duration::from_secs(10))
    }

    /// [`Shop::order`], waiting up to `limit` for the answer: hundreds of orders at once queue
    /// behind each other on a busy machine, and what such a test checks is their outcome.
    pub fn order_within(
        &self,
        items: &[(&str, u32)],
        headers: &[(&str, &str)],
        limit: Duration,
    ) -> Response {
        let items: Vec<Value> = items
            .iter()
            .map(|(item, quantity)| json!({ "item": item, "quantity": quantity }))
            .collect();
        let body = json!({ "items": items }).to_string();
        let client = Client::new(self.gateway).read_timeout(limit);
        call_within(client, "POST", "/orders", headers, &body)
    }

    /// `PUT /items/{id}` with `available` units; the item answered.
    pub fn stock(&self, id: &str, available: u64) -> Value {
        let body = json!({ "name": id, "price": 100, "available": available }).to_string();
        let r = self.call("PUT", &format!("/items/{id}"), &[], &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// The units of `id` available now.
    pub fn available(&self, id: &str) -> u64 {
        let r = self.call("GET", &format!("/items/{id}"), &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["available"].as_u64().expect("a count")
    }

    /// Waits for the notification of `order`.
    pub fn notification(&self, order: &str) -> Value {
        wait_for(
            &format!("the notification of {order}"),
            Duration::from_secs(20),
            || {
                let r = self.call("GET", &format!("/notifications/{order}"), &[], "");
                (r.status == 200).then(|| r.json())
            },
        )
    }

    /// `GET /orders?limit=1000`.
    pub fn orders(&self) -> Vec<Value> {
        let r = self.call("GET", "/orders?limit=1000", &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json().as_array().expect("a list").clone()
    }

    /// `GET /notifications?limit=1000`.
    pub fn notifications(&self) -> Vec<Value> {
        let r = self.call("GET", "/notifications?limit=1000", &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json().as_array().expect("a list").clone()
    }

    /// Deliveries of the `orders` topic to `app` the app acknowledged, from herd's metrics.
    pub fn delivered(&self, app: &str) -> u64 {
        let text = get(self.admin, "/metrics").expect("metrics").body;
        text.lines()
            .filter(|l| l.starts_with("herd_pubsub_deliveries_total{"))
            .filter(|l| l.contains(&format!("app=\"{app}\"")) && l.contains("outcome=\"success\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until `app` has acknowledged `n` deliveries.
    pub fn wait_delivered(&self, app: &str, n: u64) {
        wait_for(
            &format!("{n} deliveries to {app}"),
            Duration::from_secs(20),
            || (self.delivered(app) >= n).then_some(()),
        );
    }
}
