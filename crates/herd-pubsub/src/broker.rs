//! The contract every pub/sub backend implements: [`PubSub`], and the [`Delivery`] it hands to
//! herd's delivery loop.
//!
//! Division of labour: a backend stores messages durably and hands each one to one consumer of
//! a group (competing consumers), redelivering what is not acknowledged; herd decides what an
//! app's answer means (ack, retry with backoff, drop, dead-letter) and calls [`Delivery::ack`]
//! or [`Delivery::nack`]. A backend never loses a message it acknowledged to the publisher, and
//! may deliver a message more than once (at-least-once); [`Delivery::attempt`] counts
//! deliveries, across restarts where the backend can.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::PubSubError;

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The body as delivered (for Dapr apps, a CloudEvents JSON envelope).
    pub data: Bytes,
    /// The publisher's idempotency key: a second publish with the same key within the backend's
    /// deduplication window is accepted but not stored again. `None`: no deduplication.
    pub id: Option<String>,
    /// Drop the message if it is not delivered within this time.
    pub ttl: Option<Duration>,
    /// Backend-specific settings from the request's `metadata.*`.
    pub metadata: BTreeMap<String, String>,
}

/// How a group consumes a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// Deliveries handed out and not yet acknowledged, at most (a prefetch limit). `1` keeps the
    /// topic's order.
    pub max_in_flight: u32,
    /// A delivery not acknowledged within this time is handed out again (to this or another
    /// consumer of the group).
    pub ack_timeout: Duration,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            ack_timeout: Duration::from_secs(60),
        }
    }
}

/// What to do with a message that was not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nack {
    /// Hand it out again after `delay` (as soon as the backend can when it has no delays).
    Retry(Duration),
}

/// One message handed to a consumer.
#[async_trait]
pub trait Delivery: Send + Sync {
    /// The body.
    fn data(&self) -> &Bytes;
    /// 1 for the first delivery, 2 for the first redelivery, …
    fn attempt(&self) -> u32;
    /// Done: the message is removed for this group.
    async fn ack(self: Box<Self>) -> Result<(), PubSubError>;
    /// Not done: hand it out again.
    async fn nack(self: Box<Self>, how: Nack) -> Result<(), PubSubError>;
}

/// Deliveries for one consumer of a group, in the order the backend hands them out.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` once the backend closed the subscription.
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, PubSubError>>;
}

/// A pub/sub backend. Implementations must be safe to share across tasks.
#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    /// A short name for logs and metadata (`embedded`, `rabbitmq`, …).
    fn kind(&self) -> &'static str;

    /// Stores `message` on `topic` and returns once the backend holds it durably (fsync,
    /// publisher confirm, PubAck, XADD reply).
    async fn publish(&self, topic: &str, message: Message) -> Result<(), PubSubError>;

    /// Joins consumer group `group` on `topic` (creating it if needed); every group gets every
    /// message, consumers of one group share them.
    async fn consume(
        &self,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, PubSubError>;
}
