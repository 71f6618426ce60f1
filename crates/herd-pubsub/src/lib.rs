//! Pub/sub for herd's sidecar API: the [`PubSub`] contract (`broker.rs`) and its backends,
//! starting with `embedded` (a durable log in redb, the default), then `nats`, `rabbitmq` and
//! `redis_streams`. As for state stores, [`configure`] turns a component's type and metadata into
//! a [`Backend`] at start-up and [`open`] connects it (`settings.rs`, which only dispatches); a
//! backend is one folder plus one arm in each.
//!
//! Every backend's folder has the same rooms: `<name>.rs` (the backend type and its [`PubSub`]
//! impl), `<name>/settings.rs` (its metadata → its settings, `configure`), `<name>/consume.rs`
//! (its consumers and deliveries) and `<name>/tests.rs`, plus a room for the one other job it has:
//! `embedded/commit.rs` (the writer thread's commit path), `nats/streams.rs` (a topic's
//! stream), `rabbitmq/connection.rs` (the connection and what is declared over it),
//! `redis_streams/fetch.rs` (reclaiming and reading entries). Only backend folders name a
//! broker's client crate.

#![forbid(unsafe_code)]

mod broker;
mod embedded;
mod error;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "redis")]
mod redis_streams;
mod settings;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;

pub use broker::{ConsumeOptions, Consumer, Delivery, Message, Nack, PubSub};
pub use embedded::{EmbeddedLog, EmbeddedSettings};
pub use error::PubSubError;
#[cfg(feature = "nats")]
pub use nats::{JetStream, NatsAuth, NatsSettings, StartAt};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{
    MAX_RETRY_DELAY, QueueType, RabbitMq, RabbitMqSettings, TopicExchange, queue_name,
};
#[cfg(feature = "redis")]
pub use redis_streams::{RedisStreams, RedisStreamsSettings};
pub use settings::{Backend, KINDS, configure, open};
