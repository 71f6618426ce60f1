//! `POST /orders`, and finishing an order from its intake entry, which the sweeper does too.
//!
//! Placing is three steps: (1) the order's id and lines go into the intake (a bucketed list in
//! `statestore`); (2) inventory reserves the stock (`POST /reservations`, idempotent per
//! order); (3) the order is written to `orderstore` create-only, in a transaction whose
//! operation metadata names the event type, so the store's outbox publishes `order.created` or
//! `order.rejected` in the same commit. An instance that dies between the steps leaves an
//! intake entry without an order, which the sweeper finishes with steps 2 and 3; a write that
//! meets an order already there keeps that one. The sweeper may also finish an entry whose
//! request is still under way, so the answer's status comes from step 1 (whether this request
//! added the entry), not from who stored the order.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use shop::events;
use shop::model::{
    self, Held, Intake, Line, Order, Reservation, ReservationRequest, Status, check_lines,
};
use shop::reply;
use shop::sidecar::{Error, Write};

use crate::{INTAKE, ORDERSTORE, Shop, order_key};

/// The body of `POST /orders`.
#[derive(Deserialize)]
struct Place {
    items: Vec<Line>,
}

/// Why an order could not be finished now (its intake entry stays for the sweeper).
#[derive(Debug)]
pub enum Unfinished {
    /// A sidecar call failed.
    Sidecar(Error),
    /// Inventory answered something other than a reservation.
    Inventory(String),
}

impl std::fmt::Display for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfinished::Sidecar(e) => write!(f, "{e}"),
            Unfinished::Inventory(why) => write!(f, "inventory: {why}"),
        }
    }
}

impl From<Error> for Unfinished {
    fn from(e: Error) -> Self {
        Unfinished::Sidecar(e)
    }
}

/// `POST /orders`: 201 with the order placed now (this request added it to the intake), 200
/// with the one an `Idempotency-Key` placed before, 400 for a malformed order, 503 when it could
/// not be finished now.
pub async fn place(State(shop): State<Arc<Shop>>, headers: HeaderMap, body: Bytes) -> Response {
    let tp = reply::traceparent(&headers);
    let tp = tp.as_deref();
    let request: Place = match reply::body(&body) {
        Ok(r) => r,
        Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
    };
    if let Err(why) = check_lines(&request.items) {
        return reply::error(StatusCode::BAD_REQUEST, why);
    }
    let id = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => format!("o-{:016x}", fastrand::u64(..)),
        Some(Ok(key)) if model::valid_id(key) => format!("o-{key}"),
        Some(_) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be 1 to 64 of A-Z a-z 0-9 _ -",
            );
        }
    };
    match shop.order(&id, tp).await {
        Ok(Some(placed)) => return reply::json(StatusCode::OK, &placed.value),
        Ok(None) => {}
        Err(e) => return reply::unavailable(&e),
    }
    let entry = Intake {
        items: request.items,
        created: model::now_ms(),
    };
    // A repeat whose first request is still under way (or died) finishes that entry.
    let (entry, placed) = match INTAKE.insert(&shop.sidecar, &id, entry, tp).await {
        Ok(inserted) => inserted,
        Err(e) => return reply::unavailable(&e),
    };
    // 201 to the request that put the order in the intake, whoever stored it: the sweeper (a
    // request can outlast its 10 s on a loaded machine) or a concurrent repeat may have stored
    // it first. A repeat of the id answers 200.
    match finish(&shop, &id, &entry, tp).await {
        Ok((order, _)) if placed => reply::json(StatusCode::CREATED, &order),
        Ok((order, _)) => reply::json(StatusCode::OK, &order),
        Err(e) => {
            eprintln!("order {id} left to the sweeper: {e}");
            reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("order {id} could not be finished now: {e}"),
            )
        }
    }
}

/// Steps 2 and 3 for the intake entry of `id`: the order as stored, and whether this call
/// stored it.
pub async fn finish(
    shop: &Shop,
    id: &str,
    entry: &Intake,
    tp: Option<&str>,
) -> Result<(Order, bool), Unfinished> {
    let request = ReservationRequest {
        order: id.to_string(),
        items: entry.items.clone(),
    };
    let (status, body) = shop
        .sidecar
        .invoke("inventory", "reservations", &request, tp)
        .await?;
    if !status.is_success() {
        let body = String::from_utf8_lossy(&body);
        return Err(Unfinished::Inventory(format!("{status}: {body}")));
    }
    let reservation: Reservation = serde_json::from_slice(&body)
        .map_err(|e| Unfinished::Inventory(format!("unreadable reservation: {e}")))?;
    let (status, reason, kind) = match reservation.status {
        Held::Rejected => (Status::Rejected, reservation.reason, events::REJECTED),
        Held::Reserved | Held::Released => (Status::Accepted, None, events::CREATED),
    };
    let order = Order {
        id: id.to_string(),
        status,
        items: entry.items.clone(),
        reason,
        created: entry.created,
    };
    let write = Write::upsert(order_key(id), &order)
        .create_only()
        .meta("type", kind);
    match shop.sidecar.transact(ORDERSTORE, &[write], tp).await {
        Ok(()) => Ok((order, true)),
        Err(Error::Conflict) => match shop.order(id, tp).await? {
            Some(placed) => Ok((placed.value, false)),
            None => Err(Error::Conflict.into()),
        },
        Err(e) => Err(e.into()),
    }
}
