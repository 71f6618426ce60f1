//! Pub/sub for herd's sidecar API: the [`PubSub`] contract (`broker.rs`) and its backends, one
//! module each, starting with `embedded` (a durable log in redb, the default).

mod broker;
mod embedded;
mod error;

pub use broker::{ConsumeOptions, Consumer, Delivery, Message, Nack, PubSub};
pub use embedded::{EmbeddedLog, EmbeddedSettings};
pub use error::PubSubError;
