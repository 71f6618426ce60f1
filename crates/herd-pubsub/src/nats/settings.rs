//! `pubsub.jetstream` metadata → [`NatsSettings`]: Dapr's keys of its JetStream component, plus
//! herd's `retention`, `dedupeWindow` and `timeout`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use herd_config::metadata::{FieldError, Metadata, Rules, field_error};

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
        configure(&Metadata::new(metadata, Rules::Dapr))
    }
}

/// The settings of a `pubsub.jetstream` component.
pub(crate) fn configure(m: &Metadata<'_>) -> Result<NatsSettings, FieldError> {
    let get = |key: &str| m.value(key);
    let url = get("natsURL").ok_or_else(|| {
        field_error(
            "natsURL",
            "required (the server, e.g. nats://localhost:4222)",
        )
    })?;
    let mut s = NatsSettings::new(url);
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
        "sequence" => StartAt::Sequence(start_sequence.filter(|&n| n > 0).ok_or_else(|| {
            field_error(
                "startSequence",
                "required (at least 1) with deliverPolicy sequence",
            )
        })?),
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
                herd_config::duration::parse(d)
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

/// A valid stream or consumer name.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| {
            matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control()
        })
}
