//! A group's deliveries: a consumer's channel and lapin's stream, renewed after a failure, and the
//! delivery that holds its channel until answered (retry delays, ack timeouts).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use lapin::options::BasicNackOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, Channel};
use tokio::task::AbortHandle;

use super::connection::Shared;
use super::{MAX_RETRY_DELAY, queue_name, timed, unavailable};
use crate::broker::{ConsumeOptions, Consumer, Delivery, Nack};
use crate::error::PubSubError;

/// 1 for a first delivery; `x-delivery-count` + 1 where the queue counts (quorum queues);
/// 2 for a redelivery it does not count.
pub(super) fn attempt(redelivered: bool, headers: Option<&FieldTable>) -> u32 {
    let count = headers
        .and_then(|h| h.inner().get("x-delivery-count"))
        .and_then(|v| match v {
            AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
            AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
            AMQPValue::LongUInt(n) => Some(u64::from(*n)),
            AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
            AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
            AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
            _ => None,
        });
    match count {
        Some(n) => u32::try_from(n.saturating_add(1)).unwrap_or(u32::MAX),
        None if redelivered => 2,
        None => 1,
    }
}

/// One consumer: its channel and lapin's stream of deliveries, renewed after a failure.
pub(super) struct RabbitConsumer {
    pub(super) shared: Arc<Shared>,
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) options: ConsumeOptions,
    pub(super) active: Option<(Channel, lapin::Consumer)>,
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, PubSubError>> {
        // Cancel safety: `active` is only set once a subscription is complete, and lapin's
        // stream keeps a delivery until it is returned.
        if self.active.is_none() {
            match self
                .shared
                .subscribe(&self.topic, &self.group, self.options)
                .await
            {
                Ok(active) => self.active = Some(active),
                Err(e) => return Some(Err(e)),
            }
        }
        let (channel, stream) = self.active.as_mut()?;
        match poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await {
            Some(Ok(d)) => {
                let ack_timeout = self.options.ack_timeout;
                Some(Ok(Box::new(RabbitDelivery::new(
                    d,
                    channel.clone(),
                    ack_timeout,
                    self.shared.settings.timeout,
                ))))
            }
            Some(Err(e)) => {
                self.active = None;
                Some(Err(unavailable("consume", e)))
            }
            None => {
                self.active = None;
                Some(Err(PubSubError::Unavailable(format!(
                    "rabbitmq: the broker cancelled the subscription to queue {:?}; it is \
                     renewed on the next call",
                    queue_name(&self.topic, &self.group)
                ))))
            }
        }
    }
}

/// One delivery. Keeps its channel open until answered (or dropped), so it can be answered
/// after its consumer is gone.
struct RabbitDelivery {
    data: Bytes,
    attempt: u32,
    acker: Acker,
    answered: bool,
    /// Requeues the delivery once the ack timeout passed.
    watchdog: AbortHandle,
    timeout: Duration,
    channel: Channel,
}

const REQUEUE: BasicNackOptions = BasicNackOptions {
    multiple: false,
    requeue: true,
};

impl RabbitDelivery {
    fn new(
        d: lapin::message::Delivery,
        channel: Channel,
        ack_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        let attempt = attempt(d.redelivered, d.properties.headers().as_ref());
        let acker = d.acker;
        let watchdog = {
            let acker = acker.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ack_timeout).await;
                // A no-op if the delivery was answered meanwhile (an acker answers once).
                let _ = acker.nack(REQUEUE).await;
            })
            .abort_handle()
        };
        Self {
            data: Bytes::from(d.data),
            attempt,
            acker,
            answered: false,
            watchdog,
            timeout,
            channel,
        }
    }

    /// Marks the delivery answered; false if it had been requeued by its ack timeout or its
    /// channel closed.
    fn answer(&mut self) -> bool {
        self.answered = true;
        self.watchdog.abort();
        self.acker.usable()
    }
}

fn lost() -> PubSubError {
    PubSubError::Unavailable(
        "rabbitmq: the delivery's channel closed or its ack timeout passed; it is redelivered"
            .into(),
    )
}

impl Drop for RabbitDelivery {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.watchdog.abort();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let acker = self.acker.clone();
            runtime.spawn(async move {
                let _ = acker.nack(REQUEUE).await;
            });
        }
        // Without a runtime the delivery is requeued when its channel closes.
    }
}

#[async_trait]
impl Delivery for RabbitDelivery {
    fn data(&self) -> &Bytes {
        &self.data
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    async fn ack(mut self: Box<Self>) -> Result<(), PubSubError> {
        if !self.answer() {
            return Err(lost());
        }
        let acked = timed(
            self.timeout,
            "basic.ack",
            self.acker.ack(Default::default()),
        )
        .await?;
        if acked { Ok(()) } else { Err(lost()) }
    }

    async fn nack(mut self: Box<Self>, how: Nack) -> Result<(), PubSubError> {
        let Nack::Retry(delay) = how;
        if !self.answer() {
            return Err(lost());
        }
        if delay.is_zero() {
            let nacked = timed(self.timeout, "basic.nack", self.acker.nack(REQUEUE)).await?;
            return if nacked { Ok(()) } else { Err(lost()) };
        }
        // Hold the delivery (and its channel) for the delay, then requeue it.
        let acker = self.acker.clone();
        let channel = self.channel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay.min(MAX_RETRY_DELAY)).await;
            let _ = acker.nack(REQUEUE).await;
            drop(channel);
        });
        Ok(())
    }
}
