//! `shop-orders`: takes orders. `POST /orders` places one (`place.rs`), `GET /orders` and
//! `GET /orders/{id}` read them, `POST /orders/{id}/cancel` cancels an accepted one, `GET /`
//! is the storefront page, and a sweeper (`sweeper.rs`) finishes orders an instance left
//! half-done. See `examples/shop/README.md`.
//!
//! Orders live in `orderstore` (`order-<id>`), whose outbox publishes every write to the
//! `orders` topic; the list of orders is the intake (`intake-0` … `intake-15` in
//! `statestore`).

mod place;
mod sweeper;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, Response};
use axum::routing::{get, post};
use shop::events;
use shop::index::Index;
use shop::model::{self, Intake, Order, Status};
use shop::reply;
use shop::retry;
use shop::serve::Server;
use shop::sidecar::{Error, Sidecar, Versioned, Write};

/// The store of orders, with the outbox.
pub const ORDERSTORE: &str = "orderstore";
/// The orders intake, in `statestore`.
pub const INTAKE: Index = Index::new("statestore", "intake");
/// The storefront.
const PAGE: &str = include_str!("../../../web/index.html");

/// What the handlers share.
pub struct Shop {
    /// The sidecar API.
    pub sidecar: Sidecar,
}

impl Shop {
    /// The stored order `id`, with its ETag.
    pub async fn order(
        &self,
        id: &str,
        tp: Option<&str>,
    ) -> Result<Option<Versioned<Order>>, Error> {
        self.sidecar.get(ORDERSTORE, &order_key(id), tp).await
    }
}

/// The key of order `id`.
pub fn order_key(id: &str) -> String {
    format!("order-{id}")
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /orders?limit=N`: the newest orders first (intake entries not finished yet are left
/// out).
async fn list(
    State(shop): State<Arc<Shop>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tp = reply::traceparent(&headers);
    let limit = match reply::limit(&query) {
        Ok(n) => n,
        Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
    };
    let mut entries = match INTAKE.all::<Intake>(&shop.sidecar, tp.as_deref()).await {
        Ok(e) => e,
        Err(e) => return reply::unavailable(&e),
    };
    entries.sort_by(|(a, x), (b, y)| (y.created, b).cmp(&(x.created, a)));
    let mut orders: Vec<Order> = Vec::with_capacity(limit);
    for chunk in entries.chunks(limit) {
        let keys: Vec<String> = chunk.iter().map(|(id, _)| order_key(id)).collect();
        match shop
            .sidecar
            .bulk_get::<Order>(ORDERSTORE, &keys, tp.as_deref())
            .await
        {
            Ok(found) => orders.extend(found.into_iter().flatten().map(|v| v.value)),
            Err(e) => return reply::unavailable(&e),
        }
        if orders.len() >= limit {
            break;
        }
    }
    orders.truncate(limit);
    reply::json(StatusCode::OK, &orders)
}

/// `GET /orders/{id}`.
async fn one(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !model::valid_order_id(&id) {
        return reply::error(StatusCode::NOT_FOUND, format!("no order {id}"));
    }
    let tp = reply::traceparent(&headers);
    match shop.order(&id, tp.as_deref()).await {
        Ok(Some(v)) => reply::json(StatusCode::OK, &v.value),
        Ok(None) => reply::error(StatusCode::NOT_FOUND, format!("no order {id}")),
        Err(e) => reply::unavailable(&e),
    }
}

/// `POST /orders/{id}/cancel`: 200 with the order, now cancelled (again, if it already was);
/// 409 for a rejected order; 404 for an unknown one. The write, with the order's ETag, makes
/// the outbox publish `order.cancelled`, on which inventory releases the stock.
async fn cancel(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !model::valid_order_id(&id) {
        return reply::error(StatusCode::NOT_FOUND, format!("no order {id}"));
    }
    let tp = reply::traceparent(&headers);
    let tp = tp.as_deref();
    for attempt in 0..retry::MAX_TRIES {
        let Versioned {
            value: mut order,
            etag,
        } = match shop.order(&id, tp).await {
            Ok(Some(v)) => v,
            Ok(None) => return reply::error(StatusCode::NOT_FOUND, format!("no order {id}")),
            Err(e) => return reply::unavailable(&e),
        };
        match order.status {
            Status::Cancelled => return reply::json(StatusCode::OK, &order),
            Status::Rejected => {
                return reply::error(
                    StatusCode::CONFLICT,
                    format!("order {id} was rejected; there is nothing to cancel"),
                );
            }
            Status::Accepted => {}
        }
        order.status = Status::Cancelled;
        let write = Write::upsert(order_key(&id), &order)
            .etag(etag)
            .meta("type", events::CANCELLED);
        match shop.sidecar.transact(ORDERSTORE, &[write], tp).await {
            Ok(()) => return reply::json(StatusCode::OK, &order),
            Err(Error::Conflict) => retry::pause(attempt).await,
            Err(e) => return reply::unavailable(&e),
        }
    }
    reply::unavailable(&Error::Conflict)
}

fn router(shop: Arc<Shop>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/orders", post(place::place).get(list))
        .route("/orders/{id}", get(one))
        .route("/orders/{id}/cancel", post(cancel))
        .with_state(shop)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let server = Server::new("orders")?;
    let shop = Arc::new(Shop {
        sidecar: Sidecar::from_env(),
    });
    let sweeper = tokio::spawn(sweeper::run(shop.clone(), server.stopping()));
    server.set_ready();
    server.run(router(shop)).await?;
    let _ = sweeper.await;
    Ok(())
}
