//! Pub/sub for herd's sidecar API: the [`PubSub`] contract (`broker.rs`) and its backends, one
//! module each, starting with `embedded` (a durable log in redb, the default). As for state
//! stores, [`configure`] turns a component's type and metadata into a [`Backend`] at start-up
//! and [`open`] connects it; a backend is one module plus one arm in each.

#![forbid(unsafe_code)]

mod broker;
mod embedded;
mod error;
mod metadata;
mod nats;
mod rabbitmq;
mod redis_streams;
mod settings;

pub use broker::{ConsumeOptions, Consumer, Delivery, Message, Nack, PubSub};
pub use embedded::{EmbeddedLog, EmbeddedSettings};
pub use error::PubSubError;
pub use nats::{JetStream, NatsAuth, NatsSettings, StartAt};
pub use rabbitmq::{
    MAX_RETRY_DELAY, QueueType, RabbitMq, RabbitMqSettings, TopicExchange, queue_name,
};
pub use redis_streams::{RedisStreams, RedisStreamsSettings};
pub use settings::{Backend, FieldError, KINDS, configure, open};
