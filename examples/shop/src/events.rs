//! The `orders` topic: its event types, the programmatic subscription a service answers on
//! `GET /dapr/subscribe` (Dapr's v2 shape, routes chosen by rules on the event type), the order
//! a delivered CloudEvent carries, and the answers that settle a delivery.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::model::Order;
use crate::reply;

/// The pub/sub component.
pub const PUBSUB: &str = "pubsub";
/// The topic orders' outbox publishes to, unless `SHOP_TOPIC` names another.
pub const TOPIC: &str = "orders";
/// An order was accepted.
pub const CREATED: &str = "order.created";
/// An order was rejected.
pub const REJECTED: &str = "order.rejected";
/// An accepted order was cancelled.
pub const CANCELLED: &str = "order.cancelled";

/// The topic the services subscribe to: `SHOP_TOPIC`, or [`TOPIC`]. It must be the topic the
/// `orderstore` component's outbox publishes to (`outboxPublishTopic` in herd.toml); a separate
/// topic lets several shops share one broker.
pub fn topic() -> String {
    std::env::var("SHOP_TOPIC")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| TOPIC.to_string())
}

/// The answer to `GET /dapr/subscribe`: the shop's topic ([`topic`]), `rules` as (event type,
/// path), the other types to `default`.
pub fn subscription(rules: &[(&str, &str)], default: &str) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|(kind, path)| json!({ "match": format!("event.type == \"{kind}\""), "path": path }))
        .collect();
    json!([{
        "pubsubname": PUBSUB,
        "topic": topic(),
        "routes": { "rules": rules, "default": default },
    }])
}

/// The order a delivered CloudEvent carries as its `data` (an object, or JSON text).
pub fn order(body: &[u8]) -> Result<Order, String> {
    let event: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = match event.get("data") {
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| e.to_string())?,
        Some(data) => data.clone(),
        None => return Err("the event has no data".into()),
    };
    serde_json::from_value(data).map_err(|e| format!("the event's data is not an order: {e}"))
}

/// The delivery is handled (or needs nothing): acknowledge it.
pub fn ack() -> Response {
    reply::json(StatusCode::OK, &json!({ "status": "SUCCESS" }))
}

/// The delivery cannot be handled now: deliver it again later.
pub fn retry(why: &str) -> Response {
    eprintln!("delivery to be retried: {why}");
    reply::json(StatusCode::OK, &json!({ "status": "RETRY" }))
}

/// The delivery can never be handled (an unreadable event): drop it (to a dead-letter topic if
/// one is set).
pub fn drop(why: &str) -> Response {
    eprintln!("delivery dropped: {why}");
    reply::json(StatusCode::OK, &json!({ "status": "DROP" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_have_dapr_v2_shape() {
        let s = subscription(&[(CREATED, "/c")], "/other");
        assert_eq!(
            s,
            json!([{"pubsubname": "pubsub", "topic": "orders", "routes": {
                "rules": [{"match": "event.type == \"order.created\"", "path": "/c"}],
                "default": "/other"}}])
        );
    }

    #[test]
    fn orders_are_read_from_the_event_data() {
        let order = json!({"id": "o-1", "status": "accepted", "items": [], "reason": null,
            "created": 1});
        let event = json!({"type": CREATED, "data": order});
        assert_eq!(order_of(&event).id, "o-1");
        let text = json!({"data": order.to_string()});
        assert_eq!(order_of(&text).id, "o-1");
        assert!(super::order(b"{}").is_err());
    }

    fn order_of(v: &Value) -> Order {
        super::order(v.to_string().as_bytes()).unwrap()
    }
}
