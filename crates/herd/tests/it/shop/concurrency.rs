//! 200 orders at once, through the gateway, for one unit each of an item with 50 in stock: two
//! instances of orders and of inventory race on the same keys, and the ETags must leave the
//! stock at exactly 0 with exactly 50 orders accepted; once the deliveries settle every order
//! has exactly one notification, of the kind its status says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Shop;
use crate::util::wait_for;

const ORDERS: usize = 200;
const STOCK: u64 = 50;

#[test]
fn two_hundred_concurrent_orders_on_fifty_units_accept_exactly_fifty() {
    // What this checks is the outcome of the race, not how fast it ends: on a busy machine the
    // orders' calls to their sidecars queue behind each other longer than the app's usual limits.
    let shop = Shop::start_with("", &[("SHOP_SIDECAR_TIMEOUT_MS", "120000")]);
    shop.stock("ticket", STOCK);
    let start = Barrier::new(ORDERS);
    let began = Instant::now();
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..ORDERS)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let r = shop.order_within(&[("ticket", 1)], &[], Duration::from_secs(120));
                    (
                        r.status,
                        serde_json::from_str(&r.body).unwrap_or(Value::Null),
                    )
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let took = began.elapsed();
    let statuses: BTreeSet<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, BTreeSet::from([201]), "{answers:?}");
    let mut by_status: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, order) in &answers {
        by_status
            .entry(order["status"].as_str().unwrap().to_string())
            .or_default()
            .push(order["id"].as_str().unwrap().to_string());
    }
    assert_eq!(by_status["accepted"].len(), STOCK as usize);
    assert_eq!(by_status["rejected"].len(), ORDERS - STOCK as usize);
    assert_eq!(shop.available("ticket"), 0);
    eprintln!("{ORDERS} concurrent orders answered in {took:?}");

    // What is stored agrees with the answers.
    let stored: BTreeMap<String, String> = shop
        .orders()
        .into_iter()
        .map(|o| {
            let id = o["id"].as_str().unwrap().to_string();
            (id, o["status"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(stored.len(), ORDERS);
    for (_, order) in &answers {
        assert_eq!(stored[order["id"].as_str().unwrap()], order["status"]);
    }

    // One notification per order once every event is delivered.
    shop.wait_delivered("notifications", ORDERS as u64);
    let notes = wait_for(
        "a notification for every order",
        Duration::from_secs(30),
        || {
            let notes = shop.notifications();
            (notes.len() >= ORDERS).then_some(notes)
        },
    );
    assert_eq!(notes.len(), ORDERS, "no order is notified twice");
    let notified: BTreeMap<String, String> = notes
        .iter()
        .map(|n| {
            let order = n["order"].as_str().unwrap().to_string();
            (order, n["kind"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(notified.len(), ORDERS);
    for (id, status) in &stored {
        let expected = if status == "accepted" {
            "created"
        } else {
            "rejected"
        };
        assert_eq!(notified[id], expected, "{id}");
    }
}
