//! `shop-notifications`: tells customers what happened to their orders. It subscribes to the
//! `orders` topic with rules: `order.created` → `/events/order-created`, `order.rejected` →
//! `/events/order-rejected`, anything else → `/events/other` (acknowledged). Each order gets
//! one notification, `notification-<order>` (create only), written in one transaction with its
//! entry in the index (`index-0` … `index-15`, ETag-checked); a delivery that finds the
//! notification already there is a repeat of at-least-once delivery and is acknowledged
//! without a second one. `GET /notifications` and `GET /notifications/{order}` read them. See
//! `examples/shop/README.md`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::de::IgnoredAny;
use shop::events;
use shop::index::Index;
use shop::model::{self, Kind, Notification, Order};
use shop::reply;
use shop::retry;
use shop::serve::Server;
use shop::sidecar::{Error, Sidecar, Write};

/// The state store of notifications and their index.
const STATESTORE: &str = "statestore";
/// The index: order id → when its notification was received (unix ms).
const INDEX: Index = Index::new(STATESTORE, "index");

/// The key of an order's notification.
fn notification_key(order: &str) -> String {
    format!("notification-{order}")
}

/// What the customer is told.
fn message(kind: Kind, order: &Order) -> String {
    match kind {
        Kind::Created => {
            let lines: Vec<String> = order
                .items
                .iter()
                .map(|l| format!("{} × {}", l.quantity, l.item))
                .collect();
            format!("Order {} is confirmed: {}.", order.id, lines.join(", "))
        }
        Kind::Rejected => format!(
            "Sorry, order {} was rejected: {}.",
            order.id,
            order.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// Handles one delivered event of `kind`.
async fn notify(sidecar: &Sidecar, kind: Kind, headers: &HeaderMap, body: &[u8]) -> Response {
    let tp = reply::traceparent(headers);
    let tp = tp.as_deref();
    let order = match events::order(body) {
        Ok(o) => o,
        Err(why) => return events::drop(&why),
    };
    let key = notification_key(&order.id);
    let notification = Notification {
        order: order.id.clone(),
        kind,
        message: message(kind, &order),
        received: model::now_ms(),
    };
    for attempt in 0..retry::MAX_TRIES {
        match sidecar.get::<IgnoredAny>(STATESTORE, &key, tp).await {
            Ok(Some(_)) => {
                println!("{}: notified already (a repeated delivery)", order.id);
                return events::ack();
            }
            Ok(None) => {}
            Err(e) => return events::retry(&e.to_string()),
        }
        let (mut bucket, etag) = match INDEX.bucket::<u64>(sidecar, &order.id, tp).await {
            Ok(b) => b,
            Err(e) => return events::retry(&e.to_string()),
        };
        bucket.insert(order.id.clone(), notification.received);
        let writes = [
            Write::upsert(key.clone(), &notification).create_only(),
            INDEX.write(&order.id, &bucket, etag.as_deref()),
        ];
        match sidecar.transact(STATESTORE, &writes, tp).await {
            Ok(()) => return events::ack(),
            Err(Error::Conflict) => retry::pause(attempt).await,
            Err(e) => return events::retry(&e.to_string()),
        }
    }
    events::retry("conflicts kept coming")
}

async fn created(State(sidecar): State<Arc<Sidecar>>, headers: HeaderMap, body: Bytes) -> Response {
    notify(&sidecar, Kind::Created, &headers, &body).await
}

async fn rejected(
    State(sidecar): State<Arc<Sidecar>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    notify(&sidecar, Kind::Rejected, &headers, &body).await
}

async fn other() -> Response {
    events::ack()
}

/// `GET /notifications?limit=N`: the newest first.
async fn list(
    State(sidecar): State<Arc<Sidecar>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tp = reply::traceparent(&headers);
    let limit = match reply::limit(&query) {
        Ok(n) => n,
        Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
    };
    let mut entries = match INDEX.all::<u64>(&sidecar, tp.as_deref()).await {
        Ok(e) => e,
        Err(e) => return reply::unavailable(&e),
    };
    entries.sort_by(|(a, x), (b, y)| (y, b).cmp(&(x, a)));
    let keys: Vec<String> = entries
        .iter()
        .take(limit)
        .map(|(order, _)| notification_key(order))
        .collect();
    match sidecar
        .bulk_get::<Notification>(STATESTORE, &keys, tp.as_deref())
        .await
    {
        Ok(found) => {
            let list: Vec<Notification> = found.into_iter().flatten().map(|v| v.value).collect();
            reply::json(StatusCode::OK, &list)
        }
        Err(e) => reply::unavailable(&e),
    }
}

/// `GET /notifications/{order}`: 404 when there is none (yet).
async fn one(
    State(sidecar): State<Arc<Sidecar>>,
    Path(order): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !model::valid_order_id(&order) {
        return reply::error(
            StatusCode::NOT_FOUND,
            format!("no notification for {order}"),
        );
    }
    let tp = reply::traceparent(&headers);
    match sidecar
        .get::<Notification>(STATESTORE, &notification_key(&order), tp.as_deref())
        .await
    {
        Ok(Some(v)) => reply::json(StatusCode::OK, &v.value),
        Ok(None) => reply::error(
            StatusCode::NOT_FOUND,
            format!("no notification for {order}"),
        ),
        Err(e) => reply::unavailable(&e),
    }
}

fn router(sidecar: Arc<Sidecar>) -> Router {
    let subscription = events::subscription(
        &[
            (events::CREATED, "/events/order-created"),
            (events::REJECTED, "/events/order-rejected"),
        ],
        "/events/other",
    );
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/{order}", get(one))
        .route(
            "/dapr/subscribe",
            get(move || async move { reply::json(StatusCode::OK, &subscription) }),
        )
        .route("/events/order-created", post(created))
        .route("/events/order-rejected", post(rejected))
        .route("/events/other", post(other))
        .with_state(sidecar)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let server = Server::new("notifications")?;
    server.set_ready();
    server.run(router(Arc::new(Sidecar::from_env()))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop::model::{Line, Status};

    #[test]
    fn messages_say_what_happened() {
        let mut order = Order {
            id: "o-1".into(),
            status: Status::Accepted,
            items: vec![Line {
                item: "apple".into(),
                quantity: 2,
            }],
            reason: None,
            created: 0,
        };
        assert_eq!(
            message(Kind::Created, &order),
            "Order o-1 is confirmed: 2 × apple."
        );
        order.reason = Some("not enough apple".into());
        assert_eq!(
            message(Kind::Rejected, &order),
            "Sorry, order o-1 was rejected: not enough apple."
        );
    }
}
