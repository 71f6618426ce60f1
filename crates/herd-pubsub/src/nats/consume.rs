//! A group's deliveries: the pull subscription on its durable consumer, and the delivery that
//! double-acks.

use async_nats::jetstream::{
    self, AckKind,
    consumer::{DeliverPolicy, pull},
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream as _;

use super::{StartAt, unavailable};
use crate::broker::{Consumer, Delivery, Nack};
use crate::error::PubSubError;

pub(super) fn deliver_policy(start_at: StartAt) -> Result<DeliverPolicy, PubSubError> {
    Ok(match start_at {
        StartAt::All => DeliverPolicy::All,
        StartAt::Last => DeliverPolicy::Last,
        StartAt::New => DeliverPolicy::New,
        StartAt::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        StartAt::Time(secs) => DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(i128::from(secs) * 1_000_000_000)
                .map_err(|e| PubSubError::Invalid(format!("startTime {secs}: {e}")))?,
        },
    })
}

/// One consumer of a group: a pull subscription on the group's durable consumer.
pub(super) struct NatsConsumer {
    pub(super) messages: pull::Stream,
}

#[async_trait]
impl Consumer for NatsConsumer {
    /// Cancel-safe: a message the server sent stays in the subscription until a `next` returns
    /// it.
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, PubSubError>> {
        let item =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut self.messages).poll_next(cx)).await?;
        Some(match item {
            Ok(message) => {
                let attempt = message
                    .info()
                    .map(|info| u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX));
                match attempt {
                    Ok(attempt) => Ok(Box::new(NatsDelivery { message, attempt })),
                    Err(e) => Err(PubSubError::Internal(format!(
                        "a message without JetStream metadata: {e}"
                    ))),
                }
            }
            Err(e) => Err(unavailable(format!("pulling messages: {e}"))),
        })
    }
}

struct NatsDelivery {
    message: jetstream::Message,
    attempt: u32,
}

#[async_trait]
impl Delivery for NatsDelivery {
    fn data(&self) -> &Bytes {
        &self.message.payload
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    async fn ack(self: Box<Self>) -> Result<(), PubSubError> {
        self.message
            .double_ack()
            .await
            .map_err(|e| unavailable(format!("ack: {e}")))
    }

    async fn nack(self: Box<Self>, how: Nack) -> Result<(), PubSubError> {
        let Nack::Retry(delay) = how;
        let kind = AckKind::Nak((!delay.is_zero()).then_some(delay));
        self.message
            .double_ack_with(kind)
            .await
            .map_err(|e| unavailable(format!("nak: {e}")))
    }
}
