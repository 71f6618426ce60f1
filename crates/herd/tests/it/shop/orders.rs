//! Orders one at a time: accepted (stock down, the order readable, its notification `created`),
//! rejected (stock unchanged, notification `rejected`), placed again with an `Idempotency-Key`
//! (one order, stock taken once), malformed (400, nothing stored) and cancelled (stock back
//! once, however often it is cancelled or the event delivered).

use serde_json::{Value, json};

use super::Shop;

#[test]
fn an_order_flows_from_orders_through_inventory_and_pubsub_to_notifications() {
    let shop = Shop::start();
    let items = shop.call("GET", "/items", &[], "").json();
    let ids: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["apple", "bread", "cheese", "coffee", "milk", "tea"]);
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["available"] == 100)
    );

    let r = shop.order(&[("apple", 3), ("bread", 1)], &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    let order = r.json();
    let id = order["id"].as_str().unwrap().to_string();
    assert!(
        id.len() == 18 && id.starts_with("o-") && id[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(order["status"], "accepted");
    assert_eq!(order["reason"], Value::Null);
    assert_eq!(
        order["items"],
        json!([{"item": "apple", "quantity": 3}, {"item": "bread", "quantity": 1}])
    );
    assert!(order["created"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(shop.available("apple"), 97);
    assert_eq!(shop.available("bread"), 99);
    assert_eq!(shop.available("milk"), 100);

    let stored = shop.call("GET", &format!("/orders/{id}"), &[], "");
    assert_eq!(stored.status, 200);
    assert_eq!(stored.json(), order);
    assert_eq!(shop.orders(), std::slice::from_ref(&order));

    let note = shop.notification(&id);
    assert_eq!(note["order"], id.as_str());
    assert_eq!(note["kind"], "created");
    assert!(note["message"].as_str().unwrap().contains(&id), "{note}");
    assert_eq!(shop.notifications(), [note]);

    let page = shop.call("GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("/notifications?limit=20"));
    assert_eq!(shop.call("GET", "/orders/o-unknown", &[], "").status, 404);
    assert_eq!(shop.call("GET", "/items/unknown", &[], "").status, 404);
    assert_eq!(
        shop.call("GET", "/notifications/o-unknown", &[], "").status,
        404
    );
}

#[test]
fn an_order_that_cannot_be_filled_is_rejected_and_takes_no_stock() {
    let shop = Shop::start();
    shop.stock("scarce", 1);
    let r = shop.order(&[("apple", 1), ("scarce", 2)], &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    let order = r.json();
    assert_eq!(order["status"], "rejected");
    let reason = order["reason"].as_str().unwrap();
    assert!(reason.contains("scarce"), "{reason}");
    assert_eq!(shop.available("scarce"), 1);
    assert_eq!(
        shop.available("apple"),
        100,
        "a rejected order takes nothing"
    );

    let id = order["id"].as_str().unwrap();
    let note = shop.notification(id);
    assert_eq!(note["kind"], "rejected");
    assert!(note["message"].as_str().unwrap().contains(reason), "{note}");

    let unknown = shop.order(&[("durian", 1)], &[]).json();
    assert_eq!(unknown["status"], "rejected");
    assert_eq!(unknown["reason"], "unknown item durian");

    // A rejected order cannot be cancelled.
    let r = shop.call("POST", &format!("/orders/{id}/cancel"), &[], "");
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn a_repeat_with_the_same_idempotency_key_answers_the_order_already_placed() {
    let shop = Shop::start();
    let key = [("Idempotency-Key", "checkout-42_a")];
    let first = shop.order(&[("tea", 4)], &key);
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.json()["id"], "o-checkout-42_a");
    let again = shop.order(&[("tea", 4)], &key);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json(), first.json());
    assert_eq!(shop.available("tea"), 96, "the stock is taken once");
    assert_eq!(shop.orders().len(), 1);
    shop.notification("o-checkout-42_a");
    shop.wait_delivered("notifications", 1);
    assert_eq!(shop.notifications().len(), 1);

    for bad in ["", "has space", &"k".repeat(65), "a||b"] {
        let r = shop.order(&[("tea", 1)], &[("Idempotency-Key", bad)]);
        assert_eq!(r.status, 400, "key {bad:?}: {}", r.body);
    }
    assert_eq!(shop.available("tea"), 96);
}

#[test]
fn malformed_orders_get_400_and_store_nothing() {
    let shop = Shop::start();
    let many: Vec<Value> = (0..21)
        .map(|_| json!({"item": "apple", "quantity": 1}))
        .collect();
    let bodies = [
        "not json".to_string(),
        "{}".into(),
        r#"{"items": []}"#.into(),
        r#"{"items": [{"item": "apple"}]}"#.into(),
        r#"{"items": [{"item": "apple", "quantity": 0}]}"#.into(),
        r#"{"items": [{"item": "apple", "quantity": 1001}]}"#.into(),
        r#"{"items": [{"item": "apple", "quantity": -1}]}"#.into(),
        r#"{"items": [{"item": "", "quantity": 1}]}"#.into(),
        r#"{"items": [{"item": "a||b", "quantity": 1}]}"#.into(),
        json!({ "items": many }).to_string(),
    ];
    for body in &bodies {
        let r = shop.call("POST", "/orders", &[], body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{}", r.body);
    }
    // 1000 and 20 lines are still fine.
    let twenty: Vec<(&str, u32)> = (0..20).map(|_| ("milk", 1)).collect();
    assert_eq!(shop.order(&twenty, &[]).status, 201);
    assert_eq!(
        shop.order(&[("bread", 1000)], &[]).json()["status"],
        "rejected"
    );
    assert_eq!(
        shop.orders().len(),
        2,
        "only the two valid orders are stored"
    );
    assert_eq!(shop.available("apple"), 100);
    assert_eq!(shop.available("milk"), 80);
    assert_eq!(shop.call("GET", "/orders?limit=0", &[], "").status, 400);
    assert_eq!(
        shop.call("GET", "/notifications?limit=x", &[], "").status,
        400
    );
}

#[test]
fn cancelling_releases_the_stock_exactly_once() {
    let shop = Shop::start();
    let order = shop.order(&[("cheese", 4)], &[]).json();
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!(shop.available("cheese"), 96);
    // inventory gets order.created too (acknowledged at its default route).
    shop.wait_delivered("inventory", 1);

    let cancel = format!("/orders/{id}/cancel");
    let r = shop.call("POST", &cancel, &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    let cancelled = r.json();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["items"], order["items"]);
    let again = shop.call("POST", &cancel, &[], "");
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), cancelled);
    assert_eq!(
        shop.call("GET", &format!("/orders/{id}"), &[], "").json(),
        cancelled
    );

    // One order.cancelled event (the repeat changed nothing), delivered to inventory.
    shop.wait_delivered("inventory", 2);
    assert_eq!(shop.available("cheese"), 100);

    // The same event delivered again (at-least-once) releases nothing more.
    let r = crate::state::call_at(
        shop.api,
        "POST",
        "/v1.0/publish/pubsub/orders?metadata.cloudevent.type=order.cancelled",
        &[("Content-Type", "application/json")],
        &cancelled.to_string(),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    shop.wait_delivered("inventory", 3);
    assert_eq!(shop.available("cheese"), 100);
    assert_eq!(shop.delivered("inventory"), 3);

    // Still one notification: cancellations go to notifications' default route.
    shop.wait_delivered("notifications", 3);
    assert_eq!(shop.notifications().len(), 1);
    assert_eq!(
        shop.call("POST", "/orders/o-nope/cancel", &[], "").status,
        404
    );
}
