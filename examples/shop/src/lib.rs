//! The shop, herd's main demo: three services (`shop-orders`, `shop-inventory`,
//! `shop-notifications`) that work together only through herd's sidecar API: state with ETags
//! and transactions, service invocation, and pub/sub through the transactional outbox. The
//! design and the HTTP API are in `examples/shop/README.md`.
//!
//! This library holds what the services share: the data ([`model`]), the sidecar client
//! ([`sidecar`]), bucketed lists in state ([`index`]), the `orders` topic ([`events`]), conflict
//! backoff ([`retry`]), answers ([`reply`]) and the server ([`serve`]).

pub mod events;
pub mod index;
pub mod model;
pub mod reply;
pub mod retry;
pub mod serve;
pub mod sidecar;
