//! `shop-inventory`: keeps stock. `GET /items`, `GET /items/{id}` and `PUT /items/{id}` read and
//! set it; `POST /reservations` takes an order's stock and the `order.cancelled` event gives it
//! back (`reserve.rs`). See `examples/shop/README.md`.
//!
//! Each item is `stock-<id>` in `statestore`, and `catalog` lists the item ids. On start the
//! built-in catalog is seeded: items missing from the catalog are created with
//! `SHOP_INITIAL_STOCK` units (default 100), items already there are left alone.

mod reserve;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use shop::events;
use shop::model::{self, Item};
use shop::reply;
use shop::retry;
use shop::serve::Server;
use shop::sidecar::{Error, Sidecar, Write};
use tokio::sync::OwnedMutexGuard;

/// The state store of stock and reservations.
pub const STATESTORE: &str = "statestore";
/// The key of the list of item ids.
const CATALOG: &str = "catalog";
/// The built-in catalog: id, name, price in cents.
const BUILT_IN: &[(&str, &str, u64)] = &[
    ("apple", "Apple", 45),
    ("bread", "Sourdough bread", 420),
    ("cheese", "Comté cheese", 890),
    ("coffee", "Coffee beans", 1250),
    ("milk", "Whole milk", 135),
    ("tea", "Green tea", 560),
];

/// What the handlers share.
pub struct Inventory {
    /// The sidecar API.
    pub sidecar: Sidecar,
    /// One lock per item, inside this instance.
    pub locks: Locks,
}

/// Per-item locks, so that this instance's requests for the same items take turns instead of
/// meeting in ETag conflicts.
#[derive(Default)]
pub struct Locks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    /// Holds the locks of `items` (taken in order, so two requests never wait on each other).
    pub async fn hold<'a>(
        &self,
        items: impl Iterator<Item = &'a String>,
    ) -> Vec<OwnedMutexGuard<()>> {
        let mut items: Vec<&String> = items.collect();
        items.sort();
        items.dedup();
        let locks: Vec<_> = {
            let mut map = self.0.lock().expect("the lock map is never poisoned");
            items
                .into_iter()
                .map(|item| map.entry(item.clone()).or_default().clone())
                .collect()
        };
        let mut held = Vec::with_capacity(locks.len());
        for lock in locks {
            held.push(lock.lock_owned().await);
        }
        held
    }
}

/// The key of item `id`'s stock.
pub fn stock_key(id: &str) -> String {
    format!("stock-{id}")
}

/// `GET /items`: every item of the catalog, sorted by id.
async fn list(State(inventory): State<Arc<Inventory>>, headers: HeaderMap) -> Response {
    let tp = reply::traceparent(&headers);
    let sidecar = &inventory.sidecar;
    let ids = match sidecar
        .get::<Vec<String>>(STATESTORE, CATALOG, tp.as_deref())
        .await
    {
        Ok(found) => found.map(|v| v.value).unwrap_or_default(),
        Err(e) => return reply::unavailable(&e),
    };
    let keys: Vec<String> = ids.iter().map(|id| stock_key(id)).collect();
    match sidecar
        .bulk_get::<Item>(STATESTORE, &keys, tp.as_deref())
        .await
    {
        Ok(found) => {
            let mut items: Vec<Item> = found.into_iter().flatten().map(|v| v.value).collect();
            items.sort_by(|a, b| a.id.cmp(&b.id));
            reply::json(StatusCode::OK, &items)
        }
        Err(e) => reply::unavailable(&e),
    }
}

/// `GET /items/{id}`.
async fn one(
    State(inventory): State<Arc<Inventory>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let tp = reply::traceparent(&headers);
    if !model::valid_id(&id) {
        return reply::error(StatusCode::NOT_FOUND, format!("no item {id}"));
    }
    match inventory
        .sidecar
        .get::<Item>(STATESTORE, &stock_key(&id), tp.as_deref())
        .await
    {
        Ok(Some(v)) => reply::json(StatusCode::OK, &v.value),
        Ok(None) => reply::error(StatusCode::NOT_FOUND, format!("no item {id}")),
        Err(e) => reply::unavailable(&e),
    }
}

/// The body of `PUT /items/{id}`.
#[derive(Deserialize)]
struct Stock {
    name: Option<String>,
    price: Option<u64>,
    available: u64,
}

/// `PUT /items/{id}` `{"name"?, "price"?, "available"}`: sets an item's stock, creating the
/// item (and adding it to the catalog) in the same transaction when it is new.
async fn put(
    State(inventory): State<Arc<Inventory>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tp = reply::traceparent(&headers);
    let tp = tp.as_deref();
    if !model::valid_id(&id) {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "an item id is 1 to 64 of A-Z a-z 0-9 _ -",
        );
    }
    let stock: Stock = match reply::body(&body) {
        Ok(s) => s,
        Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
    };
    let sidecar = &inventory.sidecar;
    let _held = inventory.locks.hold(std::iter::once(&id)).await;
    let key = stock_key(&id);
    for attempt in 0..retry::MAX_TRIES {
        let (item, catalog) = match tokio::try_join!(
            sidecar.get::<Item>(STATESTORE, &key, tp),
            sidecar.get::<Vec<String>>(STATESTORE, CATALOG, tp),
        ) {
            Ok(found) => found,
            Err(e) => return reply::unavailable(&e),
        };
        let (old, etag) = match item {
            Some(v) => (Some(v.value), Some(v.etag)),
            None => (None, None),
        };
        let item = Item {
            id: id.clone(),
            name: (stock.name.clone())
                .or_else(|| old.as_ref().map(|o| o.name.clone()))
                .unwrap_or_else(|| id.clone()),
            price: stock.price.or(old.map(|o| o.price)).unwrap_or(0),
            available: stock.available,
        };
        let mut writes = vec![Write::upsert(key.clone(), &item).unchanged_since(etag.as_deref())];
        let (mut ids, catalog_etag) = match catalog {
            Some(v) => (v.value, Some(v.etag)),
            None => (Vec::new(), None),
        };
        if !ids.contains(&id) {
            ids.push(id.clone());
            ids.sort();
            writes.push(Write::upsert(CATALOG, &ids).unchanged_since(catalog_etag.as_deref()));
        }
        match sidecar.transact(STATESTORE, &writes, tp).await {
            Ok(()) => return reply::json(StatusCode::OK, &item),
            Err(Error::Conflict) => retry::pause(attempt).await,
            Err(e) => return reply::unavailable(&e),
        }
    }
    reply::unavailable(&Error::Conflict)
}

/// Creates the built-in items missing from the catalog, with `initial` units each, and adds
/// them to it, in one transaction (instances seeding at once: one wins, the other finds them).
async fn seed(sidecar: &Sidecar, initial: u64) -> Result<(), Error> {
    for attempt in 0..retry::MAX_TRIES {
        let (mut ids, etag) = match sidecar
            .get::<Vec<String>>(STATESTORE, CATALOG, None)
            .await?
        {
            Some(v) => (v.value, Some(v.etag)),
            None => (Vec::new(), None),
        };
        let mut writes = Vec::new();
        for &(id, name, price) in BUILT_IN {
            if ids.iter().any(|known| known == id) {
                continue;
            }
            let item = Item {
                id: id.into(),
                name: name.into(),
                price,
                available: initial,
            };
            writes.push(Write::upsert(stock_key(id), &item).create_only());
            ids.push(id.into());
        }
        if writes.is_empty() {
            return Ok(());
        }
        ids.sort();
        writes.push(Write::upsert(CATALOG, &ids).unchanged_since(etag.as_deref()));
        match sidecar.transact(STATESTORE, &writes, None).await {
            Ok(()) => {
                println!(
                    "seeded {} items with {initial} units each",
                    writes.len() - 1
                );
                return Ok(());
            }
            Err(Error::Conflict) => retry::pause(attempt).await,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict)
}

/// Acknowledges the events this service does not act on.
async fn other() -> Response {
    events::ack()
}

fn router(inventory: Arc<Inventory>) -> Router {
    let subscription = events::subscription(
        &[(events::CANCELLED, "/events/order-cancelled")],
        "/events/other",
    );
    Router::new()
        .route("/items", get(list))
        .route("/items/{id}", get(one).put(put))
        .route("/reservations", post(reserve::reserve))
        .route(
            "/dapr/subscribe",
            get(move || async move { reply::json(StatusCode::OK, &subscription) }),
        )
        .route("/events/order-cancelled", post(reserve::release))
        .route("/events/other", post(other))
        .with_state(inventory)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let server = Server::new("inventory")?;
    let inventory = Arc::new(Inventory {
        sidecar: Sidecar::from_env(),
        locks: Locks::default(),
    });
    let initial = std::env::var("SHOP_INITIAL_STOCK")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    // Serving starts at once (herd sees the port), ready once the catalog is there.
    let seeding = {
        let (sidecar, stop) = (inventory.sidecar.clone(), server.stopping());
        let ready = server.readiness();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(50);
            loop {
                match seed(&sidecar, initial).await {
                    Ok(()) => return ready.set(),
                    Err(e) => eprintln!("seeding the catalog: {e}; trying again"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        })
    };
    server.run(router(inventory)).await?;
    seeding.abort();
    Ok(())
}
