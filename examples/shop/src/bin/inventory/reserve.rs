//! Reservations: `POST /reservations` takes an order's stock, and the `order.cancelled` event
//! gives it back.
//!
//! A reservation is answered from its record (`reservation-<order>`) when there is one, so
//! asking again for the same order (the sweeper does) gets the same answer. Otherwise the stock
//! is read with ETags and one transaction writes every item's new stock (ETag-checked) and the
//! reservation (create only); a conflict means someone else wrote in between, and the whole
//! decision is made again after a jittered pause. So concurrent orders never take stock below
//! zero, and an order's stock is taken at most once. An order that cannot be filled is
//! recorded as rejected, changing no stock. Requests for the same items inside one instance
//! take the items' locks first, which keeps conflicts rare; correctness comes from the ETags.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use shop::events;
use shop::model::{self, Held, Item, Line, Reservation, ReservationRequest};
use shop::reply;
use shop::retry;
use shop::sidecar::{Error, Versioned, Write};

use crate::{Inventory, STATESTORE, stock_key};

/// The key of an order's reservation.
fn reservation_key(order: &str) -> String {
    format!("reservation-{order}")
}

/// The quantity wanted per item (lines of one item added up).
fn wanted(lines: &[Line]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in lines {
        *out.entry(line.item.clone()).or_insert(0) += u64::from(line.quantity);
    }
    out
}

/// `POST /reservations` `{"order", "items"}`: the order's reservation, made now or before.
pub async fn reserve(
    State(inventory): State<Arc<Inventory>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tp = reply::traceparent(&headers);
    let tp = tp.as_deref();
    let request: ReservationRequest = match reply::body(&body) {
        Ok(r) => r,
        Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
    };
    if !model::valid_order_id(&request.order) {
        return reply::error(StatusCode::BAD_REQUEST, "invalid order id");
    }
    if let Err(why) = model::check_lines(&request.items) {
        return reply::error(StatusCode::BAD_REQUEST, why);
    }
    let key = reservation_key(&request.order);
    let sidecar = &inventory.sidecar;
    match sidecar.get::<Reservation>(STATESTORE, &key, tp).await {
        Ok(Some(made)) => return reply::json(StatusCode::OK, &made.value),
        Ok(None) => {}
        Err(e) => return reply::unavailable(&e),
    }
    let wanted = wanted(&request.items);
    let _held = inventory.locks.hold(wanted.keys()).await;
    let keys: Vec<String> = wanted.keys().map(|item| stock_key(item)).collect();
    for attempt in 0..retry::MAX_TRIES {
        // Another instance (or a request that held the locks before this one) may have made
        // it meanwhile.
        match sidecar.get::<Reservation>(STATESTORE, &key, tp).await {
            Ok(Some(made)) => return reply::json(StatusCode::OK, &made.value),
            Ok(None) => {}
            Err(e) => return reply::unavailable(&e),
        }
        let stock = match sidecar.bulk_get::<Item>(STATESTORE, &keys, tp).await {
            Ok(s) => s,
            Err(e) => return reply::unavailable(&e),
        };
        let shortage = wanted
            .iter()
            .zip(&stock)
            .find_map(|((item, &qty), stock)| match stock {
                None => Some(format!("unknown item {item}")),
                Some(s) if s.value.available < qty => Some(format!(
                    "not enough {item}: {qty} wanted, {} available",
                    s.value.available
                )),
                Some(_) => None,
            });
        let mut reservation = Reservation {
            order: request.order.clone(),
            status: Held::Reserved,
            items: request.items.clone(),
            reason: None,
        };
        let mut writes = Vec::with_capacity(keys.len() + 1);
        match shortage {
            Some(why) => {
                reservation.status = Held::Rejected;
                reservation.reason = Some(why);
            }
            None => {
                // No shortage: every item is there with enough stock.
                for ((key, &qty), stock) in keys.iter().zip(wanted.values()).zip(&stock) {
                    if let Some(Versioned { value, etag }) = stock {
                        let mut item = value.clone();
                        item.available -= qty;
                        writes.push(Write::upsert(key.clone(), &item).etag(etag.clone()));
                    }
                }
            }
        }
        writes.push(Write::upsert(key.clone(), &reservation).create_only());
        match sidecar.transact(STATESTORE, &writes, tp).await {
            Ok(()) => return reply::json(StatusCode::OK, &reservation),
            Err(Error::Conflict) => retry::pause(attempt).await,
            Err(e) => return reply::unavailable(&e),
        }
    }
    reply::unavailable(&Error::Conflict)
}

/// `order.cancelled` (at `/events/order-cancelled`): a reserved reservation's stock goes back
/// and the reservation becomes `released`, in one transaction, so a redelivered event (or a
/// second cancel) releases nothing more.
pub async fn release(
    State(inventory): State<Arc<Inventory>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tp = reply::traceparent(&headers);
    let tp = tp.as_deref();
    let order = match events::order(&body) {
        Ok(o) => o,
        Err(why) => return events::drop(&why),
    };
    let key = reservation_key(&order.id);
    let sidecar = &inventory.sidecar;
    let _held = inventory.locks.hold(wanted(&order.items).keys()).await;
    for attempt in 0..retry::MAX_TRIES {
        let (mut reservation, etag) = match sidecar.get::<Reservation>(STATESTORE, &key, tp).await {
            Ok(Some(v)) => (v.value, v.etag),
            Ok(None) => return events::ack(), // never reserved: nothing to give back
            Err(e) => return events::retry(&e.to_string()),
        };
        if reservation.status != Held::Reserved {
            return events::ack();
        }
        let wanted = wanted(&reservation.items);
        let keys: Vec<String> = wanted.keys().map(|item| stock_key(item)).collect();
        let stock = match sidecar.bulk_get::<Item>(STATESTORE, &keys, tp).await {
            Ok(s) => s,
            Err(e) => return events::retry(&e.to_string()),
        };
        let mut writes = Vec::with_capacity(keys.len() + 1);
        for ((key, &qty), stock) in keys.iter().zip(wanted.values()).zip(stock) {
            if let Some(Versioned {
                value: mut item,
                etag,
            }) = stock
            {
                item.available += qty;
                writes.push(Write::upsert(key.clone(), &item).etag(etag));
            }
        }
        reservation.status = Held::Released;
        writes.push(Write::upsert(key.clone(), &reservation).etag(etag));
        match sidecar.transact(STATESTORE, &writes, tp).await {
            Ok(()) => {
                println!("released the stock of {}", order.id);
                return events::ack();
            }
            Err(Error::Conflict) => retry::pause(attempt).await,
            Err(e) => return events::retry(&e.to_string()),
        }
    }
    events::retry("conflicts kept coming")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_one_item_add_up() {
        let line = |item: &str, quantity| Line {
            item: item.into(),
            quantity,
        };
        let w = wanted(&[line("b", 1), line("a", 2), line("b", 3)]);
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            [("a".into(), 2), ("b".into(), 4)]
        );
    }
}
