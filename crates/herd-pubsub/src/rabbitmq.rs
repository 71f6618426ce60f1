//! The RabbitMQ backend (`pubsub.rabbitmq`), over AMQP 0-9-1 with `lapin`.
//!
//! # Mapping
//!
//! As in Dapr's RabbitMQ component:
//! - a topic is an exchange named after it (`fanout` by default, `exchangeKind`);
//! - a consumer group is a queue named `<group>-<topic>`, bound to the topic's exchange, so every
//!   group gets every message and the consumers of a group share its queue (competing
//!   consumers). A queue only receives what is published after it was first declared; herd
//!   declares it when the group's first consumer starts, and it outlives its consumers. With
//!   `deletedWhenUnused` (classic queues only), the queue and what it holds are deleted when its
//!   last consumer goes away, so a group whose consumers all stopped loses messages;
//! - with `enableDeadLetter`, a queue dead-letters to exchange `dlx-<queue>`, bound to queue
//!   `dlq-<queue>`. The broker dead-letters only what expired (`ttl`) or overflowed (`maxLen`,
//!   `maxLenBytes`); herd's delivery loop decides about failed deliveries itself.
//!
//! Exchanges, queues and bindings are declared idempotently each time a consumer subscribes, and
//! an exchange once per connection before the first publish to it. Declaring a queue that exists
//! with other settings (another `queueType`, `maxLen`, …) fails: RabbitMQ never changes a queue's
//! arguments.
//!
//! # Durability
//!
//! Every publish is mandatory, persistent (`deliveryMode` 2, unless configured otherwise) and
//! confirmed: [`PubSub::publish`] returns once the broker acknowledged the message, which for a
//! persistent message on a durable queue means it is on disk (for quorum queues, on a majority
//! of the replicas). A broker nack, or a message returned because no queue is bound to the topic
//! (no group has subscribed yet), is an error: the message was not stored. Message ids are set
//! from [`Message::id`] (`message_id`), but RabbitMQ does not deduplicate on them; a message's
//! [`Message::ttl`] (or `ttlInSeconds`) becomes its per-message expiration.
//!
//! Deliveries are acknowledged manually, with a prefetch of `max_in_flight` per consumer
//! (capped by `prefetchCount`); each consumer has a channel of its own. A message is removed
//! when its delivery is acknowledged; closing a channel (dropping its [`Consumer`] and
//! deliveries, or losing the connection) requeues whatever it held unacknowledged.
//!
//! # Delivery counts
//!
//! Queues are quorum queues (`x-queue-type: quorum`) by default: the broker counts each return
//! of a message to the queue (nack with requeue, a channel closed while holding it) in its
//! `x-delivery-count` header, so [`Delivery::attempt`] is that count + 1 and survives consumer
//! crashes and broker restarts. Classic queues (`queueType: classic`, the only type that can be
//! non-durable or deleted when unused) only flag redeliveries: attempt is 1, or 2 for any
//! redelivery.
//!
//! # Retry delays
//!
//! AMQP has no delayed requeue. `nack(Retry(delay))` returns at once and keeps the delivery
//! unacknowledged for `delay` (at most [`MAX_RETRY_DELAY`]), then requeues it: the message
//! keeps its prefetch slot meanwhile, so a consumer with one delivery in flight pauses rather
//! than reorders. A delivery dropped unanswered is requeued at once, and one left unanswered for
//! the consumer's `ack_timeout` is requeued then.
//!
//! # Connection
//!
//! One connection per backend, with a channel in confirm mode for publishing. A publish or
//! subscribe that finds the connection closed opens a new one; a consumer whose channel failed
//! reports the error once and subscribes again on its next call. Every network call is bounded
//! by `timeout`.

mod connection;
mod consume;
pub(crate) mod settings;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation, ErrorKind};

use crate::broker::{ConsumeOptions, Consumer, Message, PubSub};
use crate::error::PubSubError;
use connection::Shared;
use consume::RabbitConsumer;
pub use settings::{QueueType, RabbitMqSettings, TopicExchange};

/// The longest retry delay honoured by holding a delivery; longer delays are cut to this (well
/// below RabbitMQ's default `consumer_timeout` of 30 minutes, after which the broker would close
/// the channel).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);

/// The queue of `group` on `topic`, named as Dapr names it.
pub fn queue_name(topic: &str, group: &str) -> String {
    format!("{group}-{topic}")
}

fn short(what: &str, s: &str) -> Result<ShortString, PubSubError> {
    ShortString::try_new(s)
        .map_err(|_| PubSubError::Invalid(format!("{what} {s:?} is longer than 255 bytes")))
}

fn unavailable(what: &str, e: lapin::Error) -> PubSubError {
    let hint = match e.kind() {
        ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406 => {
            " (an exchange or queue of that name exists with other settings; RabbitMQ never \
             changes them: match queueType, exchangeKind, durable, maxLen… or delete it)"
        }
        _ => "",
    };
    PubSubError::Unavailable(format!("rabbitmq {what}: {e}{hint}"))
}

/// Runs one network call within `limit`.
async fn timed<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, PubSubError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(|e| unavailable(what, e)),
        Err(_) => Err(PubSubError::Unavailable(format!(
            "rabbitmq {what}: no answer within {limit:?}"
        ))),
    }
}

/// The properties of a published message.
fn properties(
    settings: &RabbitMqSettings,
    message: &Message,
) -> Result<BasicProperties, PubSubError> {
    let mut p =
        BasicProperties::default().with_delivery_mode(if settings.persistent { 2 } else { 1 });
    if let Some(id) = &message.id {
        p = p.with_message_id(short("message id", id)?);
    }
    if let Some(ttl) = message.ttl.or(settings.default_ttl) {
        p = p.with_expiration(ttl.as_millis().to_string().into());
    }
    let meta = |k: &str| message.metadata.get(k).filter(|v| !v.is_empty());
    if let Some(v) = meta("contentType") {
        p = p.with_content_type(short("contentType", v)?);
    }
    if let Some(v) = meta("correlationID") {
        p = p.with_correlation_id(short("correlationID", v)?);
    }
    if let Some(v) = meta("type") {
        p = p.with_type(short("type", v)?);
    }
    if let Some(v) = meta("priority") {
        let priority = v
            .parse()
            .map_err(|_| PubSubError::Invalid(format!("priority {v:?}: expected 0 to 255")))?;
        p = p.with_priority(priority);
    }
    Ok(p)
}

/// The RabbitMQ backend: one connection, opened by [`RabbitMq::open`] and reopened on demand.
pub struct RabbitMq {
    shared: Arc<Shared>,
}

impl RabbitMq {
    /// Connects to the broker; an unreachable broker is an [`PubSubError::Unavailable`] error.
    pub async fn open(settings: RabbitMqSettings) -> Result<Self, PubSubError> {
        let shared = Arc::new(Shared {
            settings,
            link: tokio::sync::Mutex::new(None),
        });
        {
            let mut slot = shared.link.lock().await;
            shared.link(&mut slot).await?;
        }
        Ok(Self { shared })
    }

    #[cfg(test)]
    async fn close_connection(&self) {
        let slot = self.shared.link.lock().await;
        if let Some(link) = slot.as_ref() {
            let _ = link.connection.close(320, "closed by a test".into()).await;
        }
    }
}

fn check_names(topic: &str, group: Option<&str>) -> Result<(), PubSubError> {
    if topic.is_empty() {
        return Err(PubSubError::Invalid("empty topic name".into()));
    }
    if topic.starts_with("amq.") {
        return Err(PubSubError::Invalid(format!(
            "topic {topic:?}: names starting with \"amq.\" are reserved by RabbitMQ"
        )));
    }
    short("topic", topic)?;
    if let Some(group) = group {
        if group.is_empty() {
            return Err(PubSubError::Invalid("empty consumer group name".into()));
        }
        let queue = queue_name(topic, group);
        // The dead-letter queue's name is the longest.
        short("queue", &format!("dlq-{queue}"))?;
    }
    Ok(())
}

#[async_trait]
impl PubSub for RabbitMq {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), PubSubError> {
        check_names(topic, None)?;
        let shared = &self.shared;
        let limit = shared.settings.timeout;
        let properties = properties(&shared.settings, &message)?;
        let routing_key = match shared.settings.exchange_kind {
            TopicExchange::Fanout => "",
            TopicExchange::Topic => message
                .metadata
                .get("routingKey")
                .map_or("", String::as_str),
        };
        let routing_key = short("routingKey", routing_key)?;
        let channel = shared.publisher(topic).await?;
        let confirmed = async {
            let confirm = timed(
                limit,
                "basic.publish",
                channel.basic_publish(
                    short("topic", topic)?,
                    routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &message.data,
                    properties,
                ),
            )
            .await?;
            timed(limit, "publisher confirm", confirm).await
        }
        .await;
        match confirmed {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(returned))) => Err(PubSubError::Unavailable(format!(
                "rabbitmq: no queue is bound to topic {topic:?}, no group has subscribed yet \
                 ({} {})",
                returned.reply_code, returned.reply_text
            ))),
            Ok(Confirmation::Nack(_)) => Err(PubSubError::Unavailable(format!(
                "rabbitmq: the broker did not store the message on topic {topic:?}"
            ))),
            Ok(Confirmation::NotRequested) => Err(PubSubError::Internal(
                "rabbitmq: the publishing channel is not in confirm mode".into(),
            )),
            Err(e) => {
                shared.drop_publisher(&channel).await;
                Err(e)
            }
        }
    }

    async fn consume(
        &self,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, PubSubError> {
        check_names(topic, Some(group))?;
        let active = self.shared.subscribe(topic, group, options).await?;
        Ok(Box::new(RabbitConsumer {
            shared: self.shared.clone(),
            topic: topic.to_string(),
            group: group.to_string(),
            options,
            active: Some(active),
        }))
    }
}

#[cfg(test)]
mod tests;
