//! The Rust and Node.js shops are interchangeable service by service: the root herd.toml with
//! one service's command swapped for its Node.js twin (`examples/shop-node`, on the official
//! `@dapr/dapr` SDK) keeps the catalog, the order flow, rejections, notifications and the release
//! on cancel. Skipped without node and npm.

use std::time::Duration;

use super::{Setup, Shop};
use crate::sdk::{npm_install, on_path};
use crate::shop_node::harness::shop_dir;
use crate::util::wait_for;

/// The shop with the services in `node` (`orders`, `inventory`, `notifications`) run by Node.js.
fn mixed(node: &[&str]) -> Option<Shop> {
    if !on_path("node") || !on_path("npm") {
        eprintln!("skipped: node or npm is not on PATH");
        return None;
    }
    let dir = shop_dir();
    npm_install(&dir).unwrap_or_else(|e| panic!("{e}"));
    let replacements = node
        .iter()
        .map(|service| {
            (
                match *service {
                    "orders" => "command = [\"./target/release/shop-orders\"]",
                    "inventory" => "command = [\"./target/release/shop-inventory\"]",
                    "notifications" => "command = [\"./target/release/shop-notifications\"]",
                    other => panic!("no service {other}"),
                },
                format!(
                    "command = [\"node\", \"{service}.js\"]\ncwd = {:?}",
                    dir.display().to_string()
                ),
            )
        })
        .collect();
    Some(Shop::launch(Setup {
        replacements,
        ..Setup::default()
    }))
}

/// What every mix must do: the one catalog, an accepted order with its notification, a rejected
/// one, and a cancel that gives the stock back.
fn serves_the_shop(shop: &Shop) {
    let items = shop.call("GET", "/items", &[], "").json();
    let ids: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["apple", "bread", "cheese", "coffee", "milk", "tea"]);

    let r = shop.order(&[("apple", 2), ("tea", 1)], &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    let order = r.json();
    assert_eq!(order["status"], "accepted", "{order}");
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!((shop.available("apple"), shop.available("tea")), (98, 99));
    let stored = shop.call("GET", &format!("/orders/{id}"), &[], "");
    assert_eq!(stored.json(), order);
    assert_eq!(shop.notification(&id)["kind"], "created");

    shop.stock("scarce", 1);
    let rejected = shop.order(&[("scarce", 5)], &[]).json();
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(shop.available("scarce"), 1);
    let note = shop.notification(rejected["id"].as_str().unwrap());
    assert_eq!(note["kind"], "rejected");

    let r = shop.call("POST", &format!("/orders/{id}/cancel"), &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    wait_for("the stock released", Duration::from_secs(20), || {
        (shop.available("apple") == 100 && shop.available("tea") == 100).then_some(())
    });
    assert_eq!(shop.notifications().len(), 2, "one notification per order");
}

#[test]
fn node_orders_work_with_rust_inventory_and_notifications() {
    if let Some(shop) = mixed(&["orders"]) {
        serves_the_shop(&shop);
    }
}

#[test]
fn rust_orders_work_with_node_inventory_and_notifications() {
    if let Some(shop) = mixed(&["inventory", "notifications"]) {
        serves_the_shop(&shop);
    }
}
