//! The shop on real servers: `herd.backends.toml` (state in Redis, pub/sub on RabbitMQ) is
//! `herd.toml` with only its components changed, and the shop keeps its invariants on it: an
//! order flows through a Redis transaction with its outbox and a RabbitMQ delivery, stock never
//! goes below zero under concurrent orders, and a cancel releases the stock once. Each run keeps
//! to its own Redis keys (a fixed `keyPrefix`) and its own RabbitMQ exchange and queues (its own
//! topic, `SHOP_TOPIC`).

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::Duration;

use serde_json::Value;

use super::{Setup, Shop};
use crate::util::wait_for;

/// The file users run for the shop on real servers.
const VARIANT: &str = "herd.backends.toml";

/// A config file of the repository as TOML, without its `component` tables.
fn without_components(file: &str) -> toml::Table {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("the config file");
    let mut table: toml::Table = toml::from_str(&text).expect("valid TOML");
    assert!(table.remove("component").is_some(), "{file} has components");
    table
}

#[test]
fn the_backends_variant_is_herd_toml_with_other_components_only() {
    assert_eq!(
        without_components(VARIANT),
        without_components("herd.toml"),
        "{VARIANT} must differ from herd.toml in its [[component]] tables only"
    );
}

#[test]
fn the_shop_keeps_its_invariants_on_redis_and_rabbitmq() {
    let Some(redis) = crate::state::redis_host() else {
        return crate::state::skipped("HERD_TEST_REDIS_URL");
    };
    let Ok(amqp) = std::env::var("HERD_TEST_AMQP_URL") else {
        return crate::state::skipped("HERD_TEST_AMQP_URL");
    };
    let run = crate::state::run_id();
    let topic = format!("orders{run}");
    let shop = Shop::launch(Setup {
        file: VARIANT,
        replacements: vec![
            (
                "redisHost = \"127.0.0.1:6379\"",
                format!("redisHost = \"{redis}\", keyPrefix = \"shop{run}\""),
            ),
            (
                "outboxPublishTopic = \"orders\"",
                format!("outboxPublishTopic = \"{topic}\""),
            ),
            // This run's queues go when its consumers do.
            (
                "host = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
                format!("host = \"{amqp}\", deletedWhenUnused = \"true\""),
            ),
        ],
        env: vec![("SHOP_TOPIC", topic.clone())],
        topic,
        ..Setup::default()
    });

    // The catalog is seeded in Redis; an order flows to a notification through RabbitMQ.
    assert_eq!(shop.available("apple"), 100);
    let r = shop.order(&[("apple", 3), ("bread", 1)], &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    let order = r.json();
    assert_eq!(order["status"], "accepted", "{order}");
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!((shop.available("apple"), shop.available("bread")), (97, 99));
    assert_eq!(shop.notification(&id)["kind"], "created");

    // Out of stock: rejected, nothing taken, notified as rejected.
    shop.stock("scarce", 1);
    let rejected = shop.order(&[("scarce", 2)], &[]).json();
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(shop.available("scarce"), 1);
    let rejected_id = rejected["id"].as_str().unwrap();
    assert_eq!(shop.notification(rejected_id)["kind"], "rejected");

    // A cancel travels through the outbox and RabbitMQ to inventory, which releases once.
    let r = shop.call("POST", &format!("/orders/{id}/cancel"), &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for("the stock released", Duration::from_secs(20), || {
        (shop.available("apple") == 100 && shop.available("bread") == 100).then_some(())
    });

    // 40 orders at once on 10 units: exactly 10 accepted, none below zero, one note each.
    const ORDERS: usize = 40;
    shop.stock("ticket", 10);
    let start = Barrier::new(ORDERS);
    let answers: Vec<Value> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..ORDERS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let r = shop.order(&[("ticket", 1)], &[]);
                    assert_eq!(r.status, 201, "{}", r.body);
                    r.json()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let accepted = answers.iter().filter(|o| o["status"] == "accepted").count();
    assert_eq!(accepted, 10);
    assert_eq!(shop.available("ticket"), 0);
    let total = ORDERS + 2;
    shop.wait_delivered("notifications", total as u64);
    let notes = wait_for("every notification", Duration::from_secs(30), || {
        let notes = shop.notifications();
        (notes.len() >= total).then_some(notes)
    });
    let mut per_order: BTreeMap<String, usize> = BTreeMap::new();
    for note in &notes {
        *per_order
            .entry(note["order"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(per_order.len(), total);
    assert!(per_order.values().all(|n| *n == 1), "{per_order:?}");
}
