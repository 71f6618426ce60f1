//! The NATS JetStream backend (`pubsub.jetstream`), over `async-nats`.
//!
//! Mapping:
//! - A topic is the NATS subject of the same name (as in Dapr), so a topic must be a valid
//!   subject: non-empty `.`-separated tokens, no whitespace, no wildcard tokens (`*`, `>`), not
//!   starting with `$`.
//! - Streams: by default every topic has its own stream. herd first asks the server which stream
//!   already captures the subject (one an operator created, as Dapr expects) and uses it;
//!   otherwise it creates a stream named after the topic (see below) with the topic as its only
//!   subject, file storage, `replicas` replicas, limits retention for `retention` (herd's key,
//!   default 7 days, as for the embedded log) and a duplicate window of `dedupeWindow` (herd's key,
//!   default 10 minutes). With `streamName` set, every topic of the component lives in that one
//!   stream: herd creates it on first use and adds each topic's subject to it when missing.
//! - A consumer group is a durable pull consumer per (topic, group) on that stream, filtered to
//!   the topic's subject, with explicit acks, `AckWait` = the subscription's ack timeout (or
//!   `ackWait`) and `MaxAckPending` = its `max_in_flight` (capped by `maxAckPending`). Every
//!   consumer of a group pulls from the same durable consumer, so they compete for its messages,
//!   and every group has its own, so each gets every message. A new group starts at the oldest
//!   message the stream retains (`deliverPolicy: all`), unless `deliverPolicy` says otherwise.
//! - Names: streams and consumers cannot contain `.`, `*`, `>` or whitespace, so names are built
//!   from topic and group by keeping ASCII letters, digits and `-` and writing every other byte as
//!   `_` and two hex digits: topic `orders.eu` gets stream `orders_2eeu`, and group `billing`
//!   consumes it through consumer `billing__orders_2eeu` (group, `__`, topic).
//!
//! Durability: [`PubSub::publish`] returns once the server's PubAck arrived, that is once the
//! stream accepted the message (with `replicas` > 1, once a quorum of replicas holds it). A file
//! stream has then written it to its store; the server fsyncs that store every `sync_interval`
//! (NATS's default: 2 minutes) unless it runs with `sync_interval: always`, so a power loss on a
//! single server can lose messages acknowledged within that interval: replicas or
//! `sync_interval: always` close that gap. [`Message::id`] becomes the `Nats-Msg-Id` header: a
//! repeat within the stream's duplicate window is acknowledged and not stored again.
//! [`Message::ttl`] becomes the `Nats-TTL` header (whole seconds, rounded up) on servers from 2.11
//! on, for streams that allow per-message TTLs (the streams herd creates on such servers do);
//! elsewhere it is ignored and the message stays until the stream's retention removes it.
//!
//! [`Message::metadata`] is not used.
//!
//! Acknowledgements: [`Delivery::ack`] and [`Delivery::nack`] wait for the server to confirm them
//! (a "double ack"), so an acknowledged delivery is recorded in the consumer's state when `ack`
//! returns. `nack(Retry(delay))` is a NAK with that delay. A delivery neither acked nor nacked
//! (its consumer went away) is handed out again once `AckWait` passed.
//!
//! Delivery counts: [`Delivery::attempt`] is the server's delivery count for the message in that
//! consumer, which the server keeps across client restarts (a consumer with `memoryStorage`
//! forgets it when the server restarts).
//!
//! The connection is `async-nats`'s: it reconnects on its own and re-issues pull requests after a
//! reconnect. Every request (connect, JetStream API calls, publish acks, double acks) is bounded
//! by `timeout` (herd's key, default 5 seconds).
//!
//! Dapr keys that configure push consumers or Dapr's own runtime (`durableName`,
//! `queueGroupName`, `flowControl`, `heartbeat`, `rateLimit`, `concurrency`) have no meaning for
//! herd's pull consumers and are ignored: herd names consumers after the group, and consumers of
//! one group compete by pulling from the same durable consumer. `ackPolicy` must be `explicit`
//! (the default): herd acknowledges each message on its own.

mod consume;
pub(crate) mod settings;
mod streams;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, pull},
};
use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::broker::{ConsumeOptions, Consumer, Message, PubSub};
use crate::error::PubSubError;
use consume::{NatsConsumer, deliver_policy};
pub use settings::{NatsAuth, NatsSettings, StartAt};
use streams::{Resolved, consumer_name};

fn unavailable(e: impl std::fmt::Display) -> PubSubError {
    PubSubError::Unavailable(e.to_string())
}

/// The JetStream backend: one client connection, shared by publishers and consumers.
pub struct JetStream {
    js: jetstream::Context,
    settings: NatsSettings,
    /// The server supports per-message TTLs (2.11 and later).
    server_ttl: bool,
    /// Topic → its stream, looked up (or created) once.
    topics: Mutex<HashMap<String, Arc<OnceCell<Arc<Resolved>>>>>,
}

impl JetStream {
    /// Connects to the server. Fails if it cannot be reached within `timeout`; once connected,
    /// the client reconnects on its own.
    pub async fn connect(settings: NatsSettings) -> Result<Self, PubSubError> {
        let mut options = match &settings.auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
            NatsAuth::Jwt { jwt, seed } => async_nats::ConnectOptions::new()
                .credentials(&format!(
                    "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
                     -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
                ))
                .map_err(|e| PubSubError::Invalid(format!("jwt/seedKey: {e}")))?,
            NatsAuth::TlsClient { cert, key } => {
                async_nats::ConnectOptions::new().add_client_certificate(cert.clone(), key.clone())
            }
        };
        options = options
            .name(&settings.name)
            .connection_timeout(settings.timeout)
            .request_timeout(Some(settings.timeout))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats: connected"),
                    other => tracing::warn!("nats: {other}"),
                }
            });
        let servers: Vec<&str> = settings.url.split(',').map(str::trim).collect();
        let client = tokio::time::timeout(settings.timeout, options.connect(servers))
            .await
            .map_err(|_| unavailable(format!("connecting to {}: timed out", settings.url)))?
            .map_err(|e| unavailable(format!("connecting to {}: {e}", settings.url)))?;
        let server_ttl = supports_message_ttl(&client.server_info().version);
        let builder = jetstream::context::ContextBuilder::new().timeout(settings.timeout);
        let js = match (&settings.domain, &settings.api_prefix) {
            (Some(domain), _) => builder.domain(domain).build(client),
            (None, Some(prefix)) => builder.api_prefix(prefix).build(client),
            (None, None) => builder.build(client),
        };
        Ok(Self {
            js,
            settings,
            server_ttl,
            topics: Mutex::new(HashMap::new()),
        })
    }
}

/// Servers from 2.11 on accept `Nats-TTL`.
fn supports_message_ttl(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (2, 11)
}

/// `Nats-TTL`: whole seconds, rounded up, at least 1.
fn ttl_header(ttl: Duration) -> String {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.max(1).to_string()
}

#[async_trait]
impl PubSub for JetStream {
    fn kind(&self) -> &'static str {
        "jetstream"
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), PubSubError> {
        let stream = self.stream_of(topic).await?;
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(message.data)
            .expected_stream(&stream.stream);
        if let Some(id) = &message.id {
            publish = publish.message_id(id);
        }
        if let Some(ttl) = message.ttl.filter(|_| stream.ttl) {
            publish = publish.header(
                async_nats::header::NATS_MESSAGE_TTL,
                ttl_header(ttl).as_str(),
            );
        }
        let result = async {
            self.js
                .send_publish(topic.to_string(), publish)
                .await?
                .await
        }
        .await;
        match result {
            Ok(_ack) => Ok(()),
            Err(e) => {
                self.forget(topic);
                Err(match e.kind() {
                    jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                        PubSubError::Invalid(format!("publishing to {topic}: {e}"))
                    }
                    _ => unavailable(format!("publishing to {topic}: {e}")),
                })
            }
        }
    }

    async fn consume(
        &self,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, PubSubError> {
        if group.is_empty() {
            return Err(PubSubError::Invalid("empty consumer group".into()));
        }
        let stream = self.stream_of(topic).await?;
        let name = consumer_name(group, topic);
        let max_in_flight = match self.settings.max_ack_pending {
            Some(cap) => options.max_in_flight.min(cap),
            None => options.max_in_flight,
        }
        .max(1);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("herd group {group} on {topic}")),
            deliver_policy: deliver_policy(self.settings.start_at)?,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait.unwrap_or(options.ack_timeout),
            max_deliver: self.settings.max_deliver.unwrap_or(0),
            backoff: self.settings.backoff.clone(),
            filter_subject: topic.to_string(),
            max_ack_pending: i64::from(max_in_flight),
            memory_storage: self.settings.memory_storage,
            ..Default::default()
        };
        let consumer: jetstream::consumer::PullConsumer = self
            .js
            .create_consumer_on_stream(config, &stream.stream)
            .await
            .map_err(|e| {
                self.forget(topic);
                unavailable(format!("consumer {name} on stream {}: {e}", stream.stream))
            })?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(max_in_flight as usize)
            .messages()
            .await
            .map_err(|e| unavailable(format!("consumer {name}: {e}")))?;
        Ok(Box::new(NatsConsumer { messages }))
    }
}

#[cfg(test)]
mod tests;
