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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{
    self, AckKind, ErrorCode,
    consumer::{AckPolicy, DeliverPolicy, pull},
    context::{CreateStreamErrorKind, GetStreamByNameErrorKind, GetStreamErrorKind},
    stream,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream as _;
use herd_config::metadata::{FieldError, Metadata, Rules, field_error};
use tokio::sync::OnceCell;

use crate::broker::{ConsumeOptions, Consumer, Delivery, Message, Nack, PubSub};
use crate::error::PubSubError;

/// How a client authenticates to the NATS server.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// No credentials (or credentials in `natsURL`).
    #[default]
    None,
    /// `token`.
    Token(String),
    /// `jwt` and `seedKey`: a user JWT and the NKey seed that signs the server's nonce.
    Jwt {
        /// The user JWT.
        jwt: String,
        /// The user's NKey seed.
        seed: String,
    },
    /// `tls_client_cert` and `tls_client_key`: paths of a PEM client certificate and its key.
    TlsClient {
        /// The certificate file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::Token(_) => f.write_str("Token(<redacted>)"),
            NatsAuth::Jwt { .. } => f.write_str("Jwt(<redacted>)"),
            NatsAuth::TlsClient { cert, key } => f
                .debug_struct("TlsClient")
                .field("cert", cert)
                .field("key", key)
                .finish(),
        }
    }
}

/// Where a new consumer group starts in its topic (`deliverPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// `all`: the oldest message the stream retains.
    #[default]
    All,
    /// `last`: the newest message.
    Last,
    /// `new`: messages published after the group was created.
    New,
    /// `sequence`: the stream sequence `startSequence`.
    Sequence(u64),
    /// `time`: messages published at or after `startTime` (Unix seconds).
    Time(u64),
}

/// Settings of the JetStream backend, from the component's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// `natsURL`: the server(s), comma-separated.
    pub url: String,
    /// `name`: the connection's name as the server shows it.
    pub name: String,
    /// Credentials.
    pub auth: NatsAuth,
    /// `domain`: the JetStream domain.
    pub domain: Option<String>,
    /// `apiPrefix`: the JetStream API prefix (instead of `$JS.API`).
    pub api_prefix: Option<String>,
    /// `streamName`: one stream for every topic of the component; `None`: a stream per topic.
    pub stream_name: Option<String>,
    /// `deliverPolicy` (with `startSequence`, `startTime`).
    pub start_at: StartAt,
    /// `ackWait`: replaces every subscription's ack timeout.
    pub ack_wait: Option<Duration>,
    /// `maxDeliver`: deliveries of a message at most (the server stops redelivering after).
    pub max_deliver: Option<i64>,
    /// `backOff`: redelivery delays after unacknowledged deliveries (the consumer's `BackOff`).
    pub backoff: Vec<Duration>,
    /// `maxAckPending`: caps every subscription's `max_in_flight`.
    pub max_ack_pending: Option<u32>,
    /// `replicas`: replicas of the streams herd creates (their consumers have as many).
    pub replicas: usize,
    /// `memoryStorage`: keep consumer state in memory (lost when the server restarts).
    pub memory_storage: bool,
    /// `retention` (herd): maximum age of messages in the streams herd creates.
    pub retention: Duration,
    /// `dedupeWindow` (herd): the duplicate window of the streams herd creates.
    pub dedupe_window: Duration,
    /// `timeout` (herd): bound of every request to the server.
    pub timeout: Duration,
}

impl NatsSettings {
    /// Settings for `url` with every other key at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: "herd - pubsub.jetstream".to_string(),
            auth: NatsAuth::None,
            domain: None,
            api_prefix: None,
            stream_name: None,
            start_at: StartAt::All,
            ack_wait: None,
            max_deliver: None,
            backoff: Vec::new(),
            max_ack_pending: None,
            replicas: 1,
            memory_storage: false,
            retention: Duration::from_secs(7 * 24 * 3600),
            dedupe_window: Duration::from_secs(600),
            timeout: Duration::from_secs(5),
        }
    }

    /// Reads the component's metadata (Dapr's keys, plus herd's `retention`, `dedupeWindow` and
    /// `timeout`).
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Result<Self, FieldError> {
        let m = Metadata::new(metadata, Rules::Dapr);
        let get = |key: &str| m.value(key);
        let url = get("natsURL").ok_or_else(|| {
            field_error(
                "natsURL",
                "required (the server, e.g. nats://localhost:4222)",
            )
        })?;
        let mut s = Self::new(url);
        if let Some(name) = get("name") {
            s.name = name.to_string();
        }
        s.auth = match (
            get("jwt"),
            get("seedKey"),
            get("tls_client_cert"),
            get("tls_client_key"),
        ) {
            (Some(_), None, _, _) => return Err(field_error("seedKey", "required with jwt")),
            (None, Some(_), _, _) => return Err(field_error("jwt", "required with seedKey")),
            (_, _, Some(_), None) => {
                return Err(field_error(
                    "tls_client_key",
                    "required with tls_client_cert",
                ));
            }
            (_, _, None, Some(_)) => {
                return Err(field_error(
                    "tls_client_cert",
                    "required with tls_client_key",
                ));
            }
            (Some(jwt), Some(seed), _, _) => NatsAuth::Jwt {
                jwt: jwt.to_string(),
                seed: seed.to_string(),
            },
            (None, None, Some(cert), Some(key)) => NatsAuth::TlsClient {
                cert: cert.into(),
                key: key.into(),
            },
            (None, None, None, None) => match get("token") {
                Some(token) => NatsAuth::Token(token.to_string()),
                None => NatsAuth::None,
            },
        };
        s.domain = get("domain").map(str::to_string);
        s.api_prefix = get("apiPrefix").map(str::to_string);
        if s.domain.is_some() && s.api_prefix.is_some() {
            return Err(field_error("apiPrefix", "set either domain or apiPrefix"));
        }
        if let Some(name) = get("streamName") {
            if !valid_name(name) {
                return Err(field_error(
                    "streamName",
                    format!("{name:?} is not a stream name (no '.', '*', '>', '/', whitespace)"),
                ));
            }
            s.stream_name = Some(name.to_string());
        }
        let start_sequence = m.number::<u64>("startSequence")?;
        let start_time = m.number::<u64>("startTime")?;
        s.start_at = match get("deliverPolicy").unwrap_or("all") {
            "all" => StartAt::All,
            "last" => StartAt::Last,
            "new" => StartAt::New,
            "sequence" => {
                StartAt::Sequence(start_sequence.filter(|&n| n > 0).ok_or_else(|| {
                    field_error(
                        "startSequence",
                        "required (at least 1) with deliverPolicy sequence",
                    )
                })?)
            }
            "time" => StartAt::Time(start_time.ok_or_else(|| {
                field_error(
                    "startTime",
                    "required (Unix seconds) with deliverPolicy time",
                )
            })?),
            other => {
                return Err(field_error(
                    "deliverPolicy",
                    format!("{other:?} is not one of all, last, new, sequence, time"),
                ));
            }
        };
        match get("ackPolicy") {
            None | Some("explicit") => {}
            Some(other) => {
                return Err(field_error(
                    "ackPolicy",
                    format!("{other:?}: herd acknowledges every message on its own (explicit)"),
                ));
            }
        }
        s.ack_wait = m.duration("ackWait")?;
        if s.ack_wait == Some(Duration::ZERO) {
            return Err(field_error("ackWait", "must be more than 0"));
        }
        s.max_deliver = match m.number::<i64>("maxDeliver")? {
            None | Some(0) => None,
            Some(n) if n < -1 => return Err(field_error("maxDeliver", "must be -1 or more")),
            Some(n) => Some(n),
        };
        if let Some(list) = get("backOff") {
            s.backoff = list
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| {
                    humantime::parse_duration(d)
                        .map_err(|e| field_error("backOff", format!("invalid duration {d:?}: {e}")))
                })
                .collect::<Result<_, _>>()?;
            if let Some(max) = s.max_deliver
                && max != -1
                && max <= s.backoff.len() as i64
            {
                return Err(field_error(
                    "maxDeliver",
                    "must be more than the number of backOff delays",
                ));
            }
        }
        s.max_ack_pending = match m.number::<u32>("maxAckPending")? {
            None | Some(0) => None,
            n => n,
        };
        if let Some(replicas) = m.number::<usize>("replicas")? {
            if !(1..=5).contains(&replicas) {
                return Err(field_error("replicas", "must be 1 to 5"));
            }
            s.replicas = replicas;
        }
        s.memory_storage = m.boolean("memoryStorage")?.unwrap_or(false);
        s.retention = m.duration("retention")?.unwrap_or(s.retention);
        s.dedupe_window = m.duration("dedupeWindow")?.unwrap_or(s.dedupe_window);
        s.timeout = m.duration("timeout")?.unwrap_or(s.timeout);
        if s.timeout.is_zero() {
            return Err(field_error("timeout", "must be more than 0"));
        }
        Ok(s)
    }
}

/// A valid stream or consumer name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| {
            matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control()
        })
}

/// A topic NATS can publish to: `.`-separated non-empty tokens, no wildcard tokens, no
/// whitespace, not a system subject (`$JS.…`, `$SYS.…`).
fn check_topic(topic: &str) -> Result<(), PubSubError> {
    let ok = !topic.starts_with('$')
        && topic.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        });
    if ok {
        Ok(())
    } else {
        Err(PubSubError::Invalid(format!(
            "topic {topic:?} is not a NATS subject (non-empty '.'-separated tokens, no '*' or '>' \
             tokens, no whitespace, not starting with '$')"
        )))
    }
}

/// `s` as part of a stream or consumer name: ASCII letters, digits and `-` kept, every other
/// byte written as `_` and two hex digits (so distinct inputs give distinct names).
fn name_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "_{b:02x}");
        }
    }
    out
}

/// The stream herd creates for `topic` when `streamName` is not set.
pub fn stream_name(topic: &str) -> String {
    name_part(topic)
}

/// The durable consumer of `group` on `topic`.
pub fn consumer_name(group: &str, topic: &str) -> String {
    format!("{}__{}", name_part(group), name_part(topic))
}

fn unavailable(e: impl std::fmt::Display) -> PubSubError {
    PubSubError::Unavailable(e.to_string())
}

/// The stream that holds a topic.
struct Resolved {
    stream: String,
    /// The stream accepts `Nats-TTL`.
    ttl: bool,
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

    /// The stream holding `topic`, found or created on first use.
    async fn stream_of(&self, topic: &str) -> Result<Arc<Resolved>, PubSubError> {
        check_topic(topic)?;
        let cell = self
            .topics
            .lock()
            .expect("poisoned")
            .entry(topic.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async { self.resolve(topic).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// Forgets `topic`'s stream, so the next use looks it up again (after a publish failed, the
    /// stream may have been deleted or replaced).
    fn forget(&self, topic: &str) {
        self.topics.lock().expect("poisoned").remove(topic);
    }

    async fn resolve(&self, topic: &str) -> Result<Resolved, PubSubError> {
        // Each pass reads the server's state and changes it at most once; a concurrent change by
        // another client (two creating the same stream, or adding subjects to a shared stream at
        // once) shows in the next pass.
        for _ in 0..5 {
            let holder = match self.js.stream_by_subject(topic).await {
                Ok(name) => Some(name),
                Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => None,
                Err(e) => {
                    return Err(unavailable(format!(
                        "looking up the stream of {topic}: {e}"
                    )));
                }
            };
            match (holder, &self.settings.stream_name) {
                (Some(name), Some(wanted)) if &name != wanted => {
                    return Err(PubSubError::Invalid(format!(
                        "topic {topic} is held by stream {name}, not by streamName {wanted}"
                    )));
                }
                (Some(name), _) => {
                    let info = self.stream_info(&name).await?;
                    return Ok(Resolved {
                        ttl: self.server_ttl && allows_ttl(&info.config),
                        stream: name,
                    });
                }
                (None, Some(shared)) => match self.js.get_stream(shared).await {
                    Ok(mut stream) => {
                        let mut config = stream.info().await.map_err(unavailable)?.config.clone();
                        config.subjects.push(topic.to_string());
                        self.js.update_stream(&config).await.map_err(|e| {
                            unavailable(format!("adding {topic} to stream {shared}: {e}"))
                        })?;
                    }
                    Err(e) if stream_not_found(&e) => self.create(shared, topic).await?,
                    Err(e) => return Err(unavailable(format!("stream {shared}: {e}"))),
                },
                (None, None) => self.create(&stream_name(topic), topic).await?,
            }
        }
        Err(PubSubError::Unavailable(format!(
            "the stream of {topic} kept changing while it was being set up"
        )))
    }

    async fn stream_info(&self, name: &str) -> Result<stream::Info, PubSubError> {
        let mut stream = self
            .js
            .get_stream(name)
            .await
            .map_err(|e| unavailable(format!("stream {name}: {e}")))?;
        stream
            .info()
            .await
            .cloned()
            .map_err(|e| unavailable(format!("stream {name}: {e}")))
    }

    /// Creates stream `name` for `topic`; one that already exists is left for the next pass.
    async fn create(&self, name: &str, topic: &str) -> Result<(), PubSubError> {
        let config = stream::Config {
            name: name.to_string(),
            subjects: vec![topic.to_string()],
            description: Some("herd pub/sub".to_string()),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.settings.replicas,
            max_age: self.settings.retention,
            duplicate_window: self.settings.dedupe_window,
            allow_message_ttl: self.server_ttl,
            ..Default::default()
        };
        match self.js.create_stream(config).await {
            Ok(_) => Ok(()),
            // Another client created it first, with other settings: fine if it holds the topic
            // (the next pass finds it), a name clash otherwise.
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
            {
                let info = self.stream_info(name).await?;
                if info.config.subjects.iter().any(|s| s == topic) {
                    Ok(())
                } else {
                    Err(PubSubError::Invalid(format!(
                        "stream {name} exists and does not hold topic {topic}"
                    )))
                }
            }
            Err(e) => Err(unavailable(format!(
                "creating stream {name} for {topic}: {e}"
            ))),
        }
    }
}

fn stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn allows_ttl(config: &stream::Config) -> bool {
    config.allow_message_ttl
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

fn deliver_policy(start_at: StartAt) -> Result<DeliverPolicy, PubSubError> {
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
struct NatsConsumer {
    messages: pull::Stream,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Backend, configure};

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<NatsSettings, FieldError> {
        NatsSettings::from_metadata(&meta(pairs))
    }

    fn field(pairs: &[(&str, &str)]) -> String {
        parse(pairs).unwrap_err().field.unwrap()
    }

    const URL: (&str, &str) = ("natsURL", "nats://n:4222");

    #[test]
    fn url_is_required_and_the_rest_defaults() {
        assert_eq!(field(&[]), "natsURL");
        assert_eq!(field(&[("natsURL", " ")]), "natsURL");
        let s = parse(&[URL]).unwrap();
        assert_eq!(s, NatsSettings::new("nats://n:4222"));
        assert_eq!(s.start_at, StartAt::All);
        assert_eq!(s.replicas, 1);
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert!(s.stream_name.is_none() && s.ack_wait.is_none() && s.max_ack_pending.is_none());
    }

    #[test]
    fn configure_serves_the_dapr_type() {
        assert!(crate::KINDS.contains(&"pubsub.jetstream"));
        let Ok(Backend::Jetstream(s)) = configure(
            "events",
            "pubsub.jetstream",
            &meta(&[URL, ("streamName", "EVENTS")]),
            std::path::Path::new("/d"),
        ) else {
            panic!("not a jetstream backend");
        };
        assert_eq!(s.stream_name.as_deref(), Some("EVENTS"));
        let err = configure(
            "events",
            "pubsub.jetstream",
            &meta(&[]),
            std::path::Path::new("/d"),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("natsURL"));
    }

    #[test]
    fn dapr_keys_map_to_settings() {
        let s = parse(&[
            URL,
            ("name", "orders-app"),
            ("streamName", "ORDERS"),
            ("deliverPolicy", "sequence"),
            ("startSequence", "42"),
            ("ackPolicy", "explicit"),
            ("ackWait", "30s"),
            ("maxDeliver", "5"),
            ("backOff", "[1s, 2s, 4s]"),
            ("maxAckPending", "100"),
            ("replicas", "3"),
            ("memoryStorage", "true"),
            ("domain", "hub"),
            // Push-consumer and runtime keys are accepted and have no effect.
            ("durableName", "d"),
            ("queueGroupName", "q"),
            ("flowControl", "true"),
            ("heartbeat", "5s"),
            ("rateLimit", "1000"),
            ("concurrency", "parallel"),
        ])
        .unwrap();
        assert_eq!(s.name, "orders-app");
        assert_eq!(s.stream_name.as_deref(), Some("ORDERS"));
        assert_eq!(s.start_at, StartAt::Sequence(42));
        assert_eq!(s.ack_wait, Some(Duration::from_secs(30)));
        assert_eq!(s.max_deliver, Some(5));
        assert_eq!(
            s.backoff,
            [1, 2, 4].map(Duration::from_secs).to_vec(),
            "Dapr's list form"
        );
        assert_eq!(s.max_ack_pending, Some(100));
        assert_eq!(s.replicas, 3);
        assert!(s.memory_storage);
        assert_eq!(s.domain.as_deref(), Some("hub"));
        assert_eq!(
            parse(&[URL, ("backOff", "1s,500ms")]).unwrap().backoff,
            [Duration::from_secs(1), Duration::from_millis(500)]
        );
    }

    #[test]
    fn herd_keys() {
        let s = parse(&[
            URL,
            ("retention", "1h"),
            ("dedupeWindow", "2m"),
            ("timeout", "10s"),
        ])
        .unwrap();
        assert_eq!(s.retention, Duration::from_secs(3600));
        assert_eq!(s.dedupe_window, Duration::from_secs(120));
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(field(&[URL, ("timeout", "0s")]), "timeout");
        assert_eq!(field(&[URL, ("retention", "forever")]), "retention");
    }

    #[test]
    fn deliver_policies() {
        let at = |pairs: &[(&str, &str)]| parse(pairs).unwrap().start_at;
        assert_eq!(at(&[URL, ("deliverPolicy", "all")]), StartAt::All);
        assert_eq!(at(&[URL, ("deliverPolicy", "last")]), StartAt::Last);
        assert_eq!(at(&[URL, ("deliverPolicy", "new")]), StartAt::New);
        assert_eq!(
            at(&[URL, ("deliverPolicy", "time"), ("startTime", "1640995200")]),
            StartAt::Time(1640995200)
        );
        assert_eq!(
            field(&[URL, ("deliverPolicy", "sequence")]),
            "startSequence"
        );
        assert_eq!(
            field(&[URL, ("deliverPolicy", "sequence"), ("startSequence", "0")]),
            "startSequence"
        );
        assert_eq!(field(&[URL, ("deliverPolicy", "time")]), "startTime");
        assert_eq!(field(&[URL, ("deliverPolicy", "first")]), "deliverPolicy");
        assert_eq!(
            field(&[URL, ("deliverPolicy", "time"), ("startTime", "yesterday")]),
            "startTime"
        );
        let start = deliver_policy(StartAt::Time(1640995200)).unwrap();
        let DeliverPolicy::ByStartTime { start_time } = start else {
            panic!("{start:?}");
        };
        assert_eq!(start_time.unix_timestamp(), 1640995200);
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(field(&[URL, ("ackPolicy", "none")]), "ackPolicy");
        assert_eq!(field(&[URL, ("ackPolicy", "all")]), "ackPolicy");
        assert_eq!(field(&[URL, ("ackWait", "soon")]), "ackWait");
        assert_eq!(field(&[URL, ("ackWait", "0s")]), "ackWait");
        assert_eq!(field(&[URL, ("maxDeliver", "many")]), "maxDeliver");
        assert_eq!(field(&[URL, ("maxDeliver", "-2")]), "maxDeliver");
        assert_eq!(
            field(&[URL, ("maxDeliver", "3"), ("backOff", "1s,2s,3s")]),
            "maxDeliver"
        );
        assert_eq!(field(&[URL, ("backOff", "1s,later")]), "backOff");
        assert_eq!(field(&[URL, ("maxAckPending", "-1")]), "maxAckPending");
        assert_eq!(field(&[URL, ("replicas", "0")]), "replicas");
        assert_eq!(field(&[URL, ("replicas", "7")]), "replicas");
        assert_eq!(field(&[URL, ("memoryStorage", "maybe")]), "memoryStorage");
        assert_eq!(field(&[URL, ("streamName", "a.b")]), "streamName");
        assert_eq!(
            field(&[URL, ("domain", "hub"), ("apiPrefix", "$JS.X.API")]),
            "apiPrefix"
        );
        // Unlimited deliveries (-1) and 0 (the server's default) are fine with a backOff.
        assert_eq!(
            parse(&[URL, ("maxDeliver", "-1"), ("backOff", "1s")])
                .unwrap()
                .max_deliver,
            Some(-1)
        );
        assert_eq!(
            parse(&[URL, ("maxDeliver", "0")]).unwrap().max_deliver,
            None
        );
    }

    #[test]
    fn credentials_come_in_pairs() {
        assert_eq!(field(&[URL, ("jwt", "eyJ")]), "seedKey");
        assert_eq!(field(&[URL, ("seedKey", "SUA")]), "jwt");
        assert_eq!(
            field(&[URL, ("tls_client_cert", "/c.pem")]),
            "tls_client_key"
        );
        assert_eq!(
            field(&[URL, ("tls_client_key", "/k.pem")]),
            "tls_client_cert"
        );
        assert_eq!(
            parse(&[URL, ("token", "t0k")]).unwrap().auth,
            NatsAuth::Token("t0k".into())
        );
        let jwt = parse(&[URL, ("jwt", "eyJ"), ("seedKey", "SUA")]).unwrap();
        assert_eq!(
            jwt.auth,
            NatsAuth::Jwt {
                jwt: "eyJ".into(),
                seed: "SUA".into()
            }
        );
        assert!(
            !format!("{jwt:?}").contains("SUA"),
            "secrets stay out of logs"
        );
        assert_eq!(
            parse(&[
                URL,
                ("tls_client_cert", "/c.pem"),
                ("tls_client_key", "/k.pem")
            ])
            .unwrap()
            .auth,
            NatsAuth::TlsClient {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            }
        );
    }

    #[test]
    fn names_are_valid_and_distinct() {
        assert_eq!(stream_name("orders"), "orders");
        assert_eq!(stream_name("orders.eu"), "orders_2eeu");
        assert_eq!(
            consumer_name("billing", "orders.eu"),
            "billing__orders_2eeu"
        );
        let topics = ["a.b", "a_b", "a_2eb", "a-b", "a b", "ä"];
        let streams: std::collections::BTreeSet<_> =
            topics.iter().map(|t| stream_name(t)).collect();
        assert_eq!(streams.len(), topics.len(), "{streams:?}");
        assert!(streams.iter().all(|s| valid_name(s)), "{streams:?}");
        // The separator cannot be confused with an escape: `_` in a part is always followed by
        // two hex digits.
        assert_ne!(consumer_name("a_", "b"), consumer_name("a", "_b"));
        assert_ne!(consumer_name("a", "b__c"), consumer_name("a__b", "c"));
    }

    #[test]
    fn topics_must_be_publishable_subjects() {
        for ok in ["orders", "orders.eu", "a-b_c", "x*y"] {
            assert!(check_topic(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a.*",
            ">",
            "a b",
            "$JS.API.STREAM.LIST",
            "a\tb",
        ] {
            assert!(
                matches!(check_topic(bad), Err(PubSubError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn message_ttl_needs_a_recent_server_and_whole_seconds() {
        assert!(!supports_message_ttl("2.9.10"));
        assert!(!supports_message_ttl("2.10.22"));
        assert!(supports_message_ttl("2.11.0"));
        assert!(supports_message_ttl("2.12.1-beta.1"));
        assert!(supports_message_ttl("3.0.0"));
        assert!(!supports_message_ttl(""));
        assert_eq!(ttl_header(Duration::from_millis(200)), "1");
        assert_eq!(ttl_header(Duration::from_secs(60)), "60");
        assert_eq!(ttl_header(Duration::from_millis(60_001)), "61");
        assert_eq!(ttl_header(Duration::ZERO), "1");
    }
}
