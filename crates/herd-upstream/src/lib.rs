//! The upstream side of herd: what the gateway and service invocation share to reach endpoints.
//!
//! ```text
//! gateway proxy ─┐
//!                ├─► Pool::pick ─► Client::send ─► endpoint (instance, upstream, peer herd)
//! invocation ────┘        ▲                │
//!                         └── Pick::report ┘ latency, breaker, ejection counts
//! ```
//!
//! A [`Pool`] balances over a watch of addresses ([`Addresses`]): a herd service's ready
//! instances ([`ServiceSource`]), an upstream's fixed and resolved endpoints, or the peer herds
//! that run an app. Endpoints placed in regions form priority levels (`priority.rs`); every
//! endpoint has a circuit breaker (none in a pool over one shared socket) and, when configured,
//! outlier ejection (`outlier.rs`). [`Client`] sends the chosen endpoint the request, with
//! [`strip_hop_by_hop`] and [`idempotent`] saying what is passed on and what may be sent again;
//! [`in_flight`] sums an address's requests over every pool (`drain.rs`), so an instance is
//! signalled to stop only once herd is waiting on nothing from it.
//! [`inbound::head_fault`] says which request heads herd refuses on its listeners (no or two
//! `Host`, `CONNECT`, transfer codings it does not implement). `tls.rs` builds the rustls
//! configurations from PEM files: the gateway's HTTPS listeners and
//! both sides of mutual TLS between herds.
//!
//! The series recorded here keep their `herd_gateway_` names (`/metrics` names are public):
//! endpoint attempts, breaker states and ejections, labelled by the pool's name (`service web`,
//! `upstream backends`, or for invocation `app orders` and `peers of orders`).

mod balance;
mod client;
mod decisions;
mod drain;
mod endpoint;
mod hop;
pub mod inbound;
mod outlier;
mod priority;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use herd_config::{Balance, BreakerConfig};
use tokio::sync::watch;

pub use balance::{NoEndpoint, Pool};
pub use client::{Body as ClientBody, Client, Error as ClientError, UpBody};
pub use decisions::{Change, Decisions, Skip};
pub use drain::in_flight;
pub use endpoint::Pick;
pub use hop::{idempotent, strip_hop_by_hop};
pub use outlier::Attempt;
pub use priority::Places;

/// Addresses a pool balances over, as a watch channel.
pub type Addresses = watch::Receiver<Arc<Vec<SocketAddr>>>;

/// How the gateway and invocation see a herd service: its ready addresses, balancing and
/// breaker settings (`None`: no breaker, for an address that stands for many instances, such as
/// a shared socket); `None` for a name that is not a service here.
pub type ServiceSource =
    Arc<dyn Fn(&str) -> Option<(Addresses, Balance, Option<BreakerConfig>)> + Send + Sync>;
