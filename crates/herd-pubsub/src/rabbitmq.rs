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

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use herd_config::metadata::{FieldError, Metadata, Rules, field_error};
use lapin::options::{
    BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind,
};
use tokio::task::AbortHandle;

use crate::broker::{ConsumeOptions, Consumer, Delivery, Message, Nack, PubSub};
use crate::error::PubSubError;

/// The longest retry delay honoured by holding a delivery; longer delays are cut to this (well
/// below RabbitMQ's default `consumer_timeout` of 30 minutes, after which the broker would close
/// the channel).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);

/// The kind of queue a group gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated, always durable, counts deliveries (`x-delivery-count`).
    Quorum,
    /// A classic queue: may be transient or auto-deleted, only flags redeliveries.
    Classic,
}

/// The kind of exchange a topic gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicExchange {
    /// Every bound queue gets every message.
    Fanout,
    /// Queues are bound with `#`: every queue gets every message, and the exchange stays
    /// compatible with Dapr's `exchangeKind: topic`. A publish's `routingKey` metadata is used as
    /// its routing key.
    Topic,
}

/// Settings of the RabbitMQ backend, from component metadata (Dapr's keys).
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitMqSettings {
    /// The broker (`connectionString`, or Dapr's older `host`), with the heartbeat applied.
    pub uri: AMQPUri,
    /// Durable exchanges and queues (`durable`, default true).
    pub durable: bool,
    /// Exchanges and queues deleted once unused (`deletedWhenUnused`, default false).
    pub deleted_when_unused: bool,
    /// `queueType`: quorum unless the queues are transient or deleted when unused.
    pub queue_type: QueueType,
    /// Caps every consumer's prefetch (`prefetchCount`; 0 = `max_in_flight` alone decides).
    pub prefetch_count: u16,
    /// Publish persistent messages (`deliveryMode` 2, the default; 0 or 1 = transient).
    pub persistent: bool,
    /// `exchangeKind`: `fanout` (default) or `topic`.
    pub exchange_kind: TopicExchange,
    /// Dead-letter expired and overflowing messages (`enableDeadLetter`).
    pub dead_letter: bool,
    /// `x-max-length` of queues (`maxLen`).
    pub max_len: Option<u64>,
    /// `x-max-length-bytes` of queues (`maxLenBytes`).
    pub max_len_bytes: Option<u64>,
    /// Expiration of messages published without a TTL (`ttlInSeconds`).
    pub default_ttl: Option<Duration>,
    /// The connection's name in the management UI (`clientName`).
    pub client_name: Option<String>,
    /// Bound on each network call: connect, declare, publish and its confirm, ack (`timeout`,
    /// herd's; default 10 s).
    pub timeout: Duration,
}

impl fmt::Debug for RabbitMqSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.uri.authority;
        f.debug_struct("RabbitMqSettings")
            .field("host", &a.host)
            .field("port", &a.port)
            .field("username", &a.userinfo.username)
            .field("vhost", &self.uri.vhost)
            .field("durable", &self.durable)
            .field("deleted_when_unused", &self.deleted_when_unused)
            .field("queue_type", &self.queue_type)
            .field("prefetch_count", &self.prefetch_count)
            .field("persistent", &self.persistent)
            .field("exchange_kind", &self.exchange_kind)
            .field("dead_letter", &self.dead_letter)
            .field("max_len", &self.max_len)
            .field("max_len_bytes", &self.max_len_bytes)
            .field("default_ttl", &self.default_ttl)
            .field("client_name", &self.client_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RabbitMqSettings {
    /// Reads component metadata. Keys of Dapr's component that herd does not need
    /// (`publisherConfirm`: confirms are always on; `requeueInFailure`, `autoAck`,
    /// `concurrency`: herd's delivery loop decides; `reconnectWaitSeconds`) are ignored.
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Result<Self, FieldError> {
        let m = Metadata::new(metadata, Rules::Dapr);
        let (key, url) = match (m.value("connectionString"), m.value("host")) {
            (Some(url), _) => ("connectionString", url),
            (None, Some(url)) => ("host", url),
            (None, None) => {
                return Err(field_error(
                    "connectionString",
                    "required: the broker's URL, amqp://user:password@host:5672/vhost",
                ));
            }
        };
        let mut uri: AMQPUri = url
            .parse()
            .map_err(|e| field_error(key, format!("invalid AMQP URL: {e}")))?;
        let heartbeat = m.duration("heartBeat")?.unwrap_or(Duration::from_secs(10));
        if uri.query.heartbeat.is_none() {
            let secs = u16::try_from(heartbeat.as_secs())
                .map_err(|_| field_error("heartBeat", "at most 65535 s"))?;
            uri.query.heartbeat = Some(secs);
        }
        let durable = m.boolean("durable")?.unwrap_or(true);
        let deleted_when_unused = m.boolean("deletedWhenUnused")?.unwrap_or(false);
        let queue_type = match m.value("queueType") {
            None if durable && !deleted_when_unused => QueueType::Quorum,
            None => QueueType::Classic,
            Some("classic") => QueueType::Classic,
            Some("quorum") if durable && !deleted_when_unused => QueueType::Quorum,
            Some("quorum") => {
                return Err(field_error(
                    "queueType",
                    "quorum queues are always durable and never deleted when unused",
                ));
            }
            Some(v) => {
                return Err(field_error(
                    "queueType",
                    format!("{v:?}: expected quorum or classic"),
                ));
            }
        };
        let persistent = match m.number::<u8>("deliveryMode")? {
            None | Some(2) => true,
            Some(0 | 1) => false,
            Some(v) => {
                return Err(field_error(
                    "deliveryMode",
                    format!("{v}: expected 2 (persistent), 1 or 0 (transient)"),
                ));
            }
        };
        let exchange_kind = match m.value("exchangeKind") {
            None | Some("fanout") => TopicExchange::Fanout,
            Some("topic") => TopicExchange::Topic,
            Some(v) => {
                return Err(field_error(
                    "exchangeKind",
                    format!("{v:?}: expected fanout or topic"),
                ));
            }
        };
        let default_ttl = m.seconds("ttlInSeconds")?;
        let timeout = m.duration("timeout")?.unwrap_or(Duration::from_secs(10));
        if timeout.is_zero() {
            return Err(field_error("timeout", "must be more than 0"));
        }
        Ok(Self {
            uri,
            durable,
            deleted_when_unused,
            queue_type,
            prefetch_count: m.number("prefetchCount")?.unwrap_or(0),
            persistent,
            exchange_kind,
            dead_letter: m.boolean("enableDeadLetter")?.unwrap_or(false),
            max_len: m.number("maxLen")?,
            max_len_bytes: m.number("maxLenBytes")?,
            default_ttl,
            client_name: m.value("clientName").map(str::to_string),
            timeout,
        })
    }
}

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

/// The connection and what was set up on it.
struct Link {
    connection: Connection,
    /// The channel in confirm mode that publishes; replaced when it fails.
    publisher: Option<Channel>,
    /// Exchanges declared through `publisher`.
    exchanges: HashSet<String>,
}

struct Shared {
    settings: RabbitMqSettings,
    /// Held while connecting or setting up the publisher, never while publishing.
    link: tokio::sync::Mutex<Option<Link>>,
}

impl Shared {
    /// The live link, connecting if there is none or the last one failed.
    async fn link<'a>(&self, slot: &'a mut Option<Link>) -> Result<&'a mut Link, PubSubError> {
        let alive = slot
            .as_ref()
            .is_some_and(|l| l.connection.status().connected());
        if !alive {
            // A dead connection is dropped here: its channels' unacknowledged deliveries are the
            // broker's to requeue.
            *slot = None;
        }
        match slot {
            Some(link) => Ok(link),
            None => {
                let mut properties = ConnectionProperties::default();
                if let Some(name) = &self.settings.client_name {
                    properties = properties.with_connection_name(LongString::from(name.as_str()));
                }
                let connection = timed(
                    self.settings.timeout,
                    "connect",
                    Connection::connect_uri(self.settings.uri.clone(), properties),
                )
                .await?;
                tracing::debug!(host = %self.settings.uri.authority.host, "rabbitmq connected");
                Ok(slot.insert(Link {
                    connection,
                    publisher: None,
                    exchanges: HashSet::new(),
                }))
            }
        }
    }

    /// A new channel for a consumer.
    async fn channel(&self) -> Result<Channel, PubSubError> {
        let mut slot = self.link.lock().await;
        let link = self.link(&mut slot).await?;
        timed(
            self.settings.timeout,
            "open channel",
            link.connection.create_channel(),
        )
        .await
    }

    /// The publishing channel, with `topic`'s exchange declared.
    async fn publisher(&self, topic: &str) -> Result<Channel, PubSubError> {
        let limit = self.settings.timeout;
        let mut slot = self.link.lock().await;
        let link = self.link(&mut slot).await?;
        let channel = match &link.publisher {
            Some(c) if c.status().connected() => c.clone(),
            _ => {
                link.publisher = None;
                // A channel fails on errors such as a publish to a deleted exchange: declare
                // again what the old one declared.
                link.exchanges.clear();
                let c = timed(limit, "open channel", link.connection.create_channel()).await?;
                timed(
                    limit,
                    "confirm.select",
                    c.confirm_select(ConfirmSelectOptions::default()),
                )
                .await?;
                link.publisher.insert(c).clone()
            }
        };
        if !link.exchanges.contains(topic) {
            self.declare_exchange(&channel, topic).await?;
            link.exchanges.insert(topic.to_string());
        }
        Ok(channel)
    }

    /// Forgets the publishing channel after a failed publish, so the next one starts clean.
    async fn drop_publisher(&self, channel: &Channel) {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_mut()
            && link.publisher.as_ref() == Some(channel)
        {
            link.publisher = None;
            link.exchanges.clear();
        }
    }

    async fn declare_exchange(&self, channel: &Channel, topic: &str) -> Result<(), PubSubError> {
        let kind = match self.settings.exchange_kind {
            TopicExchange::Fanout => ExchangeKind::Fanout,
            TopicExchange::Topic => ExchangeKind::Topic,
        };
        let options = ExchangeDeclareOptions {
            durable: self.settings.durable,
            auto_delete: self.settings.deleted_when_unused,
            ..Default::default()
        };
        timed(
            self.settings.timeout,
            "exchange.declare",
            channel.exchange_declare(short("topic", topic)?, kind, options, FieldTable::default()),
        )
        .await
    }

    /// Queue arguments shared by a group's queue and its dead-letter queue.
    fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let kind = match self.settings.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        if let Some(n) = self.settings.max_len {
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(clamp(n)));
        }
        if let Some(n) = self.settings.max_len_bytes {
            args.insert(
                "x-max-length-bytes".into(),
                AMQPValue::LongLongInt(clamp(n)),
            );
        }
        args
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        queue: &str,
        arguments: FieldTable,
    ) -> Result<(), PubSubError> {
        let options = QueueDeclareOptions {
            durable: self.settings.durable,
            auto_delete: self.settings.deleted_when_unused,
            ..Default::default()
        };
        timed(
            self.settings.timeout,
            "queue.declare",
            channel.queue_declare(short("queue", queue)?, options, arguments),
        )
        .await
        .map(drop)
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), PubSubError> {
        timed(
            self.settings.timeout,
            "queue.bind",
            channel.queue_bind(
                short("queue", queue)?,
                short("exchange", exchange)?,
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    }

    /// Declares the topology of `group` on `topic` on a new channel and starts consuming.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Result<(Channel, lapin::Consumer), PubSubError> {
        let limit = self.settings.timeout;
        let queue = queue_name(topic, group);
        let channel = self.channel().await?;
        self.declare_exchange(&channel, topic).await?;
        let mut arguments = self.queue_arguments();
        if self.settings.dead_letter {
            let dlx = format!("dlx-{queue}");
            let dlq = format!("dlq-{queue}");
            timed(
                limit,
                "exchange.declare",
                channel.exchange_declare(
                    short("exchange", &dlx)?,
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        auto_delete: self.settings.deleted_when_unused,
                        ..Default::default()
                    },
                    FieldTable::default(),
                ),
            )
            .await?;
            self.declare_queue(&channel, &dlq, self.queue_arguments())
                .await?;
            self.bind(&channel, &dlq, &dlx, "").await?;
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(dlx.as_str().into()),
            );
        }
        self.declare_queue(&channel, &queue, arguments).await?;
        let key = match self.settings.exchange_kind {
            TopicExchange::Fanout => "",
            TopicExchange::Topic => "#",
        };
        self.bind(&channel, &queue, topic, key).await?;
        let mut prefetch = u16::try_from(options.max_in_flight.max(1)).unwrap_or(u16::MAX);
        if self.settings.prefetch_count > 0 {
            prefetch = prefetch.min(self.settings.prefetch_count);
        }
        timed(
            limit,
            "basic.qos",
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        let consumer = timed(
            limit,
            "basic.consume",
            channel.basic_consume(
                short("queue", &queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok((channel, consumer))
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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

/// 1 for a first delivery; `x-delivery-count` + 1 where the queue counts (quorum queues);
/// 2 for a redelivery it does not count.
fn attempt(redelivered: bool, headers: Option<&FieldTable>) -> u32 {
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

/// One consumer: its channel and lapin's stream of deliveries, renewed after a failure.
struct RabbitConsumer {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    options: ConsumeOptions,
    active: Option<(Channel, lapin::Consumer)>,
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

#[cfg(test)]
mod tests;
