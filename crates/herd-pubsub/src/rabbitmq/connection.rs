//! The connection to the broker, reopened on demand, its publishing channel, and what herd
//! declares over it: a topic's exchange, a group's queue (and dead-letter queue), their binding.

use std::collections::HashSet;

use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use super::{QueueType, RabbitMqSettings, TopicExchange, queue_name, short, timed};
use crate::broker::ConsumeOptions;
use crate::error::PubSubError;

/// The connection and what was set up on it.
pub(super) struct Link {
    pub(super) connection: Connection,
    /// The channel in confirm mode that publishes; replaced when it fails.
    publisher: Option<Channel>,
    /// Exchanges declared through `publisher`.
    exchanges: HashSet<String>,
}

pub(super) struct Shared {
    pub(super) settings: RabbitMqSettings,
    /// Held while connecting or setting up the publisher, never while publishing.
    pub(super) link: tokio::sync::Mutex<Option<Link>>,
}

impl Shared {
    /// The live link, connecting if there is none or the last one failed.
    pub(super) async fn link<'a>(
        &self,
        slot: &'a mut Option<Link>,
    ) -> Result<&'a mut Link, PubSubError> {
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
    pub(super) async fn channel(&self) -> Result<Channel, PubSubError> {
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
    pub(super) async fn publisher(&self, topic: &str) -> Result<Channel, PubSubError> {
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
    pub(super) async fn drop_publisher(&self, channel: &Channel) {
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
    pub(super) async fn subscribe(
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
