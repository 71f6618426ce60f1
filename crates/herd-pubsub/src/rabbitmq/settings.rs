//! `pubsub.rabbitmq` metadata → [`RabbitMqSettings`]: the keys of Dapr's RabbitMQ component, plus
//! herd's `timeout`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use herd_config::metadata::{FieldError, Metadata, Rules, field_error};
use lapin::uri::AMQPUri;

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
        configure(&Metadata::new(metadata, Rules::Dapr))
    }
}

/// The settings of a `pubsub.rabbitmq` component.
pub(crate) fn configure(m: &Metadata<'_>) -> Result<RabbitMqSettings, FieldError> {
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
    Ok(RabbitMqSettings {
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
