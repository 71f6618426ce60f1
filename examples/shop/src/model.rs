//! The shop's data, as it travels in requests and events and as it is stored: orders and their
//! lines, inventory's items and reservations, notifications, and the orders intake entry. The
//! JSON shapes are the ones `examples/shop/README.md` specifies, shared with the Node.js
//! services.

use serde::{Deserialize, Serialize};

/// Most lines an order may have.
pub const MAX_LINES: usize = 20;
/// Largest quantity of one line.
pub const MAX_QUANTITY: u32 = 1000;

/// One line of an order: an item and how many of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The item's id, e.g. `apple`.
    pub item: String,
    /// How many, 1..=1000.
    pub quantity: u32,
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stock was reserved for it.
    Accepted,
    /// Inventory could not fill it (see `reason`).
    Rejected,
    /// Cancelled after it was accepted; its stock went back.
    Cancelled,
}

/// An order, stored as `order-<id>` in `orderstore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// `o-` and 16 hex digits, or `o-<Idempotency-Key>`.
    pub id: String,
    /// Where it stands.
    pub status: Status,
    /// What was ordered.
    pub items: Vec<Line>,
    /// Why it was rejected; `null` otherwise.
    pub reason: Option<String>,
    /// When it was placed (its intake entry was written), unix ms.
    pub created: u64,
}

/// An orders intake entry: what `POST /orders` writes before it asks inventory, so that the
/// sweeper can finish an order whose instance died on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intake {
    /// The order's lines.
    pub items: Vec<Line>,
    /// When the order was placed, unix ms.
    pub created: u64,
}

/// A stocked item, stored as `stock-<id>` in `statestore` by inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Its id, e.g. `apple`.
    pub id: String,
    /// What the storefront shows.
    pub name: String,
    /// Price in cents.
    pub price: u64,
    /// Units in stock, not reserved.
    pub available: u64,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Held {
    /// The stock was taken.
    Reserved,
    /// It could not be filled; no stock changed.
    Rejected,
    /// Its order was cancelled and the stock went back.
    Released,
}

/// Inventory's record of one order's reservation (`reservation-<order>`), also its answer to
/// `POST /reservations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The order id.
    pub order: String,
    /// Where it stands.
    pub status: Held,
    /// The lines reserved (as asked for).
    pub items: Vec<Line>,
    /// Why it was rejected; `null` otherwise.
    pub reason: Option<String>,
}

/// The body of `POST /reservations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReservationRequest {
    /// The order id.
    pub order: String,
    /// Its lines.
    pub items: Vec<Line>,
}

/// What a notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The order was accepted.
    Created,
    /// The order was rejected.
    Rejected,
}

/// A notification, stored as `notification-<order>` by notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The order id.
    pub order: String,
    /// What happened.
    pub kind: Kind,
    /// The text the customer gets.
    pub message: String,
    /// When the event was handled, unix ms.
    pub received: u64,
}

/// Whether `s` may be an item id or an `Idempotency-Key`: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `s` may be an order id: `o-` followed by a valid id.
pub fn valid_order_id(s: &str) -> bool {
    s.strip_prefix("o-").is_some_and(valid_id)
}

/// Checks an order's lines: 1 to 20 of them, valid item ids, quantities in 1..=1000.
pub fn check_lines(items: &[Line]) -> Result<(), String> {
    if items.is_empty() {
        return Err("an order needs at least one line".into());
    }
    if items.len() > MAX_LINES {
        return Err(format!("an order has at most {MAX_LINES} lines"));
    }
    for line in items {
        if !valid_id(&line.item) {
            return Err(format!(
                "invalid item {:?}: use 1 to 64 of A-Z a-z 0-9 _ -",
                line.item
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(format!(
                "quantity {} of {} is outside 1..={MAX_QUANTITY}",
                line.quantity, line.item
            ));
        }
    }
    Ok(())
}

/// The current time, unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_serialise_as_the_readme_says() {
        let order = Order {
            id: "o-1".into(),
            status: Status::Accepted,
            items: vec![Line {
                item: "apple".into(),
                quantity: 2,
            }],
            reason: None,
            created: 5,
        };
        assert_eq!(
            serde_json::to_value(&order).unwrap(),
            serde_json::json!({"id": "o-1", "status": "accepted",
                "items": [{"item": "apple", "quantity": 2}], "reason": null, "created": 5})
        );
        let n = Notification {
            order: "o-1".into(),
            kind: Kind::Rejected,
            message: "m".into(),
            received: 7,
        };
        assert_eq!(serde_json::to_value(&n).unwrap()["kind"], "rejected");
    }

    #[test]
    fn lines_and_ids_are_checked() {
        let line = |item: &str, quantity| Line {
            item: item.into(),
            quantity,
        };
        assert!(check_lines(&[line("apple", 1)]).is_ok());
        assert!(check_lines(&[line("apple", 1000)]).is_ok());
        assert!(check_lines(&[]).is_err());
        assert!(check_lines(&[line("apple", 0)]).is_err());
        assert!(check_lines(&[line("apple", 1001)]).is_err());
        assert!(check_lines(&[line("a||b", 1)]).is_err());
        assert!(check_lines(&vec![line("apple", 1); 21]).is_err());
        assert!(valid_id("k_1-A") && !valid_id("") && !valid_id(&"x".repeat(65)));
        assert!(valid_order_id("o-abc") && !valid_order_id("abc") && !valid_order_id("o-"));
    }
}
