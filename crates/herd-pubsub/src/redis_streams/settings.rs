//! `pubsub.redis` metadata → [`RedisStreamsSettings`]: the keys of Dapr's Redis pub/sub component.

use std::collections::BTreeMap;
use std::time::Duration;

use herd_config::metadata::{FieldError, Metadata, Rules, field_error, userinfo};

/// Settings of a `pubsub.redis` component, from Dapr's metadata names.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStreamsSettings {
    /// `host:port` (`redisHost`).
    pub host: String,
    /// `redisUsername`, if any.
    pub username: Option<String>,
    /// `redisPassword`, if any.
    pub password: Option<String>,
    /// `redisDB`.
    pub db: u32,
    /// `consumerID`: the consumer group every subscription of this component joins instead of
    /// the app's own (`{appID}` stands for the app id).
    pub consumer_id: Option<String>,
    /// `processingTimeout`: how long an entry stays pending before it is reclaimed; `None` uses
    /// the subscription's ack timeout, zero turns reclaiming off.
    pub processing_timeout: Option<Duration>,
    /// `redeliverInterval`: how often pending entries are looked at; `None` is a quarter of the
    /// minimum idle time (50 ms to 15 s), zero turns reclaiming off.
    pub redeliver_interval: Option<Duration>,
    /// `queueDepth`: entries fetched per read, at most.
    pub queue_depth: Option<u32>,
    /// `concurrency`: deliveries out per consumer, at most (below the subscription's own limit).
    pub concurrency: Option<u32>,
    /// `maxLenApprox`: the stream is trimmed to about this many entries on each publish.
    pub max_len_approx: Option<u64>,
    /// `readTimeout`: the time limit of every command (a blocking read gets its block time on
    /// top), and of connecting.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisStreamsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsSettings")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("consumer_id", &self.consumer_id)
            .field("processing_timeout", &self.processing_timeout)
            .field("redeliver_interval", &self.redeliver_interval)
            .field("queue_depth", &self.queue_depth)
            .field("concurrency", &self.concurrency)
            .field("max_len_approx", &self.max_len_approx)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisStreamsSettings {
    /// Reads a `pubsub.redis` component's metadata. Keys herd does not use are ignored; settings
    /// herd cannot honour (TLS, cluster, Sentinel) are errors rather than silently dropped.
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Result<Self, FieldError> {
        configure(&Metadata::new(metadata, Rules::Dapr))
    }

    /// The `redis://` URL these settings connect to.
    pub(super) fn url(&self) -> String {
        let auth = userinfo(self.username.as_deref(), self.password.as_deref());
        format!("redis://{auth}{}/{}", self.host, self.db)
    }

    /// The group a subscription of app `app` joins.
    pub(super) fn group(&self, app: &str) -> String {
        match &self.consumer_id {
            Some(id) => id.replace("{appID}", app),
            None => app.to_string(),
        }
    }
}

/// The settings of a `pubsub.redis` component.
pub(crate) fn configure(m: &Metadata<'_>) -> Result<RedisStreamsSettings, FieldError> {
    let host = m
        .value("redisHost")
        .ok_or_else(|| field_error("redisHost", "required (host:port)"))?;
    match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
        _ => {
            return Err(field_error(
                "redisHost",
                format!("{host:?} is not host:port"),
            ));
        }
    }
    let flag = |key: &str| -> Result<bool, FieldError> {
        match m.value(key) {
            None => Ok(false),
            Some(v) => v
                .parse()
                .map_err(|_| field_error(key, format!("invalid boolean {v:?}"))),
        }
    };
    if flag("enableTLS")? {
        return Err(field_error(
            "enableTLS",
            "TLS to Redis is not supported yet",
        ));
    }
    if flag("failover")? {
        return Err(field_error("failover", "Redis Sentinel is not supported"));
    }
    if let Some(kind) = m.value("redisType")
        && !kind.eq_ignore_ascii_case("node")
    {
        return Err(field_error(
            "redisType",
            format!("{kind:?} is not supported; herd connects to a single node"),
        ));
    }
    let positive = |key: &str| -> Result<Option<u32>, FieldError> {
        match m.number::<u32>(key)? {
            Some(0) => Err(field_error(key, "must be at least 1")),
            n => Ok(n),
        }
    };
    let timeout = m.duration("readTimeout")?.unwrap_or(Duration::from_secs(5));
    if timeout.is_zero() {
        return Err(field_error("readTimeout", "must be above zero"));
    }
    Ok(RedisStreamsSettings {
        host: host.to_string(),
        username: m.value("redisUsername").map(str::to_string),
        password: m.value("redisPassword").map(str::to_string),
        db: m.number("redisDB")?.unwrap_or(0),
        consumer_id: m.value("consumerID").map(str::to_string),
        processing_timeout: m.duration("processingTimeout")?,
        redeliver_interval: m.duration("redeliverInterval")?,
        queue_depth: positive("queueDepth")?,
        concurrency: positive("concurrency")?,
        max_len_approx: match m.number::<u64>("maxLenApprox")? {
            Some(0) | None => None,
            n => n,
        },
        timeout,
    })
}
