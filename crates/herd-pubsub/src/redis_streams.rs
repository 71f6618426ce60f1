//! The Redis Streams backend (`pubsub.redis`), laid out as Dapr's Redis pub/sub so herd and Dapr
//! sidecars can share a server: one stream per topic (the key is the topic name), one consumer
//! group per subscribing app, entries written by `XADD` with the body in a `data` field.
//!
//! # Mapping
//!
//! - [`PubSub::publish`] is one `XADD <topic> [MAXLEN ~ <maxLenApprox>] * data <body>`; a message
//!   with a TTL also carries `expiresAt` (Unix milliseconds), and a delivery found past it is
//!   acknowledged and skipped instead of handed out. The `XADD` reply is the acknowledgement.
//!   [`Message::metadata`] is not stored.
//! - [`PubSub::consume`] creates the group (`XGROUP CREATE <topic> <group> 0 MKSTREAM`, an existing
//!   group is fine; a new group starts at the oldest entry still in the stream, as in Dapr) and
//!   joins it under a consumer name unique to that [`Consumer`]. The group is the `group`
//!   argument (the app id), or the component's `consumerID` when set (`{appID}` in it is replaced
//!   by the argument), as in Dapr.
//! - New entries come from `XREADGROUP … COUNT n BLOCK t STREAMS <topic> >` on a connection of
//!   the consumer's own, so a blocked read never holds up the commands of other consumers or of
//!   publishers, which share one auto-reconnecting connection. `n` is the consumer's free room
//!   (at most `max_in_flight` deliveries are out and unanswered, and at most `queueDepth` are
//!   fetched at once); `t` ends when the next reclaim is due.
//! - Entries left pending by a consumer that went away (or whose delivery was not answered in
//!   time) are reclaimed with `XAUTOCLAIM` once idle for the ack timeout (`processingTimeout`
//!   when the component sets it), every `redeliverInterval` (by default a quarter of that idle
//!   time, between 50 ms and 15 s). Either set to `0` turns reclaiming off, as in Dapr.
//! - [`Delivery::ack`] is `XACK`.
//!
//! # Durability
//!
//! Redis answers `XADD` once the entry is in memory; whether it survives a restart is the
//! server's persistence setting (AOF with `appendfsync always` for every write, `everysec` for
//! up to a second of loss, RDB snapshots for more). herd does not wait for replicas. Publisher
//! idempotency keys ([`Message::id`]) are not kept: a publish retried after a lost answer may
//! store the message twice, which at-least-once consumers must tolerate anyway. Acknowledged
//! entries stay in the stream until `maxLenApprox` trims it (Dapr's behaviour): without it the
//! stream only grows.
//!
//! # Delivery counts
//!
//! Redis counts the deliveries of each pending entry in the group. An entry read with `>` is
//! delivery 1; an entry reclaimed with `XAUTOCLAIM` has its count incremented by Redis, and the
//! script that reclaims reads it back (`XPENDING`) in the same step; a nacked entry handed out
//! again by `XCLAIM` is one delivery more than before. So [`Delivery::attempt`] counts across
//! consumers and restarts.
//!
//! # Nack
//!
//! A nacked entry stays pending on its consumer, and comes back after the delay two ways, so it
//! is neither lost nor delivered twice:
//! 1. The nack sets the entry's idle time to `ack timeout - delay` (`XCLAIM … IDLE … JUSTID`,
//!    which does not count a delivery). If this consumer goes away, any consumer of the group
//!    reclaims the entry `delay` later instead of a whole ack timeout later.
//! 2. The consumer keeps the delivery's slot and, after the delay, takes the entry back itself
//!    (`XCLAIM` with a minimum idle time that only an untouched entry has), which counts a
//!    delivery, and hands it out again. If another consumer reclaimed it meanwhile, the claim
//!    finds it younger and does nothing.
//!
//! Keeping the slot during the delay means a consumer with `max_in_flight = 1` retries a message
//! before it reads the next one, so the order is kept across retries too. A delay longer than
//! the ack timeout is honoured by this consumer, but the entry may reach another consumer
//! earlier: once it has been idle for the ack timeout, the group reclaims it.
//!
//! Consumer names left behind by consumers that went away are removed once they have nothing
//! pending and have been idle for an hour (`XGROUP DELCONSUMER`). Needs Redis 6.2 or later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use herd_config::metadata::{FieldError, Metadata, Rules, field_error, userinfo};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::broker::{ConsumeOptions, Consumer, Delivery, Message, Nack, PubSub};
use crate::error::PubSubError;

/// The entry field holding the message body (Dapr's).
const DATA: &str = "data";
/// The entry field holding the time after which the message is dropped, in Unix milliseconds.
const EXPIRES_AT: &str = "expiresAt";

/// The longest a read blocks, whatever the reclaim schedule.
const MAX_BLOCK: Duration = Duration::from_secs(15);
/// Bounds of the default reclaim interval (a quarter of the minimum idle time).
const MIN_REDELIVER: Duration = Duration::from_millis(50);
const MAX_REDELIVER: Duration = MAX_BLOCK;
/// How often a consumer removes consumer names nobody uses any more, and after how long idle.
const FORGET_EVERY: Duration = Duration::from_secs(600);
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Retry delays after a failed read or reclaim: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

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
        let m = Metadata::new(metadata, Rules::Dapr);
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
        Ok(Self {
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

    /// The `redis://` URL these settings connect to.
    fn url(&self) -> String {
        let auth = userinfo(self.username.as_deref(), self.password.as_deref());
        format!("redis://{auth}{}/{}", self.host, self.db)
    }

    /// The group a subscription of app `app` joins.
    fn group(&self, app: &str) -> String {
        match &self.consumer_id {
            Some(id) => id.replace("{appID}", app),
            None => app.to_string(),
        }
    }
}

/// Reclaims up to ARGV[4] entries of group ARGV[1] idle for ARGV[3] ms or more for consumer
/// ARGV[2], each with its delivery count: `{id, count, {field, value, …}}`. KEYS[1]: the stream.
const CLAIM: &str = r#"
local out = {}
local want = tonumber(ARGV[4])
local cursor = '0-0'
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor,
    'COUNT', want - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e and e[2] then
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1, ARGV[2])
      local n = 1
      if p[1] then n = p[1][4] end
      out[#out + 1] = { e[1], n, e[2] }
    elseif e then
      redis.call('XACK', KEYS[1], ARGV[1], e[1])
    end
  end
until cursor == '0-0' or #out >= want
return out
"#;

/// Removes the consumers of group ARGV[1] with nothing pending that have been idle for more than
/// ARGV[2] ms. KEYS[1]: the stream. Returns how many.
const FORGET: &str = r#"
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] and info['pending'] == 0 and (info['idle'] or 0) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    n = n + 1
  end
end
return n
"#;

/// What every consumer of one backend shares: the client (for each consumer's own reading
/// connection), one auto-reconnecting connection for everything else, the scripts.
struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    settings: RedisStreamsSettings,
    claim: Script,
    forget: Script,
}

/// The Redis Streams pub/sub backend.
pub struct RedisStreams {
    shared: Arc<Shared>,
}

fn unavailable(e: RedisError) -> PubSubError {
    PubSubError::Unavailable(e.to_string())
}

fn malformed(what: &str, v: &Value) -> PubSubError {
    PubSubError::Internal(format!("unexpected Redis answer to {what}: {v:?}"))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms)
}

/// Runs one command against the shared connection, within `limit`.
async fn query<T: redis::FromRedisValue>(
    conn: &ConnectionManager,
    cmd: &redis::Cmd,
    limit: Duration,
) -> Result<T, RedisError> {
    match tokio::time::timeout(limit, cmd.query_async(&mut conn.clone())).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(limit)),
    }
}

fn timed_out(limit: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer from Redis within {limit:?}"),
    ))
}

async fn connect(
    client: &redis::Client,
    settings: &RedisStreamsSettings,
    response_timeout: Duration,
) -> Result<ConnectionManager, PubSubError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2);
    // The connection manager retries connecting: bound the whole attempt too.
    let limit = settings.timeout * 4;
    match tokio::time::timeout(limit, client.get_connection_manager_with_config(config)).await {
        Ok(conn) => conn.map_err(unavailable),
        Err(_) => Err(unavailable(timed_out(limit))),
    }
}

impl RedisStreams {
    /// Connects to the server (once; the connection reconnects on its own afterwards).
    pub async fn connect(settings: RedisStreamsSettings) -> Result<Self, PubSubError> {
        let client = redis::Client::open(settings.url()).map_err(unavailable)?;
        let conn = connect(&client, &settings, settings.timeout).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                conn,
                settings,
                claim: Script::new(CLAIM),
                forget: Script::new(FORGET),
            }),
        })
    }
}

impl Shared {
    async fn create_group(&self, topic: &str, group: &str) -> Result<(), PubSubError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(topic)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        match query::<Value>(&self.conn, &cmd, self.settings.timeout).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn ack(&self, topic: &str, group: &str, id: &str) -> Result<(), PubSubError> {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(topic).arg(group).arg(id);
        query::<i64>(&self.conn, &cmd, self.settings.timeout)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

fn check_name(what: &str, name: &str) -> Result<(), PubSubError> {
    if name.is_empty() {
        return Err(PubSubError::Invalid(format!("the {what} name is empty")));
    }
    Ok(())
}

/// Consumer names: unique per process start and consumer.
fn consumer_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    format!(
        "herd-{}-{start:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[async_trait]
impl PubSub for RedisStreams {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), PubSubError> {
        check_name("topic", topic)?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(topic);
        if let Some(n) = self.shared.settings.max_len_approx {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*").arg(DATA).arg(message.data.as_ref());
        if let Some(ttl) = message.ttl {
            cmd.arg(EXPIRES_AT).arg(now_ms().saturating_add(ms(ttl)));
        }
        query::<Value>(&self.shared.conn, &cmd, self.shared.settings.timeout)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn consume(
        &self,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, PubSubError> {
        check_name("topic", topic)?;
        let settings = &self.shared.settings;
        let group = settings.group(group);
        check_name("group", &group)?;
        self.shared.create_group(topic, &group).await?;
        let reader = connect(&self.shared.client, settings, MAX_BLOCK + settings.timeout).await?;

        let room = options
            .max_in_flight
            .min(settings.concurrency.unwrap_or(u32::MAX))
            .max(1) as usize;
        let min_idle = settings.processing_timeout.unwrap_or(options.ack_timeout);
        let every = settings
            .redeliver_interval
            .unwrap_or_else(|| (min_idle / 4).clamp(MIN_REDELIVER, MAX_REDELIVER));
        let reclaim = (!min_idle.is_zero() && !every.is_zero()).then(|| Reclaim {
            min_idle,
            every,
            next: Instant::now(),
        });
        let permits = Arc::new(Semaphore::new(room));
        let (out, deliveries) = mpsc::channel(room + 1);
        let (retry_tx, retries) = mpsc::channel(room);
        let sub = Arc::new(Sub {
            shared: self.shared.clone(),
            topic: topic.to_string(),
            group,
            name: consumer_name(),
            min_idle,
            retries: retry_tx,
        });
        let fetcher = Fetcher {
            sub: sub.clone(),
            reader,
            permits,
            batch: settings.queue_depth.unwrap_or(u32::MAX).max(1) as usize,
            reclaim,
            forget_at: Instant::now(),
            backoff: None,
        };
        let worker = tokio::spawn(run(fetcher, retries, Out { sub, tx: out }));
        Ok(Box::new(RedisConsumer { deliveries, worker }))
    }
}

/// What the deliveries of one consumer share.
struct Sub {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    /// This consumer's name in the group.
    name: String,
    /// Idle time after which a pending entry is reclaimed.
    min_idle: Duration,
    /// Nacked deliveries to hand out again.
    retries: mpsc::Sender<Retry>,
}

/// A stream entry taken by this consumer.
struct Entry {
    id: String,
    data: Bytes,
    expires_at: Option<u64>,
    attempt: u32,
}

/// A nacked entry waiting for its delay.
struct Retry {
    id: String,
    attempt: u32,
    due: Instant,
    /// The idle time the nack gave the entry, and when.
    idle: Duration,
    nacked: Instant,
    /// The delivery's slot, kept for the redelivery.
    permit: OwnedSemaphorePermit,
}

/// The reclaim schedule.
struct Reclaim {
    min_idle: Duration,
    every: Duration,
    next: Instant,
}

/// Fetches entries for one consumer: reclaims, reads.
struct Fetcher {
    sub: Arc<Sub>,
    /// This consumer's own connection, for blocking reads.
    reader: ConnectionManager,
    /// One per delivery that may be out: `max_in_flight` (or `concurrency`) in all.
    permits: Arc<Semaphore>,
    /// Entries per read or reclaim, at most (`queueDepth`).
    batch: usize,
    reclaim: Option<Reclaim>,
    forget_at: Instant,
    backoff: Option<Duration>,
}

type Fetched = Vec<(Entry, OwnedSemaphorePermit)>;

impl Fetcher {
    /// Waits for room, then reclaims (when due) or reads; an error is returned once and the next
    /// call waits a growing delay first.
    async fn step(&mut self) -> Result<Fetched, PubSubError> {
        if let Some(delay) = self.backoff {
            tokio::time::sleep(delay).await;
        }
        let result = self.fetch().await;
        self.backoff = match &result {
            Ok(_) => None,
            Err(_) => Some(self.backoff.map_or(BACKOFF.0, |d| (d * 2).min(BACKOFF.1))),
        };
        result
    }

    async fn fetch(&mut self) -> Result<Fetched, PubSubError> {
        let Ok(first) = self.permits.clone().acquire_owned().await else {
            return Ok(Vec::new());
        };
        let mut permits = vec![first];
        while permits.len() < self.batch {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if now >= self.forget_at {
            self.forget_at = now + FORGET_EVERY;
            self.forget().await;
        }
        let mut block = MAX_BLOCK;
        if let Some(r) = &mut self.reclaim {
            if now >= r.next {
                r.next = now + r.every;
                let min_idle = r.min_idle;
                let entries = self.claim(min_idle, permits.len()).await?;
                if !entries.is_empty() {
                    if entries.len() == permits.len()
                        && let Some(r) = &mut self.reclaim
                    {
                        // There may be more: look again before reading.
                        r.next = now;
                    }
                    return Ok(entries.into_iter().zip(permits).collect());
                }
            }
            if let Some(r) = &self.reclaim {
                block = r.next.saturating_duration_since(Instant::now());
            }
        }
        let block = block.clamp(Duration::from_millis(1), MAX_BLOCK);
        let entries = self.read(permits.len(), block).await?;
        Ok(entries.into_iter().zip(permits).collect())
    }

    /// Recreates the group after the stream or group vanished (deleted, or lost by the server).
    async fn recover(&self, e: RedisError) -> Result<Vec<Entry>, PubSubError> {
        if e.code() == Some("NOGROUP") {
            tracing::warn!(
                topic = %self.sub.topic,
                group = %self.sub.group,
                "Redis consumer group is gone; creating it again"
            );
            self.sub
                .shared
                .create_group(&self.sub.topic, &self.sub.group)
                .await?;
            return Ok(Vec::new());
        }
        Err(unavailable(e))
    }

    async fn read(&mut self, count: usize, block: Duration) -> Result<Vec<Entry>, PubSubError> {
        let sub = &self.sub;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&sub.group)
            .arg(&sub.name)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(ms(block))
            .arg("STREAMS")
            .arg(&sub.topic)
            .arg(">");
        let limit = block + sub.shared.settings.timeout;
        let reply = match tokio::time::timeout(limit, cmd.query_async(&mut self.reader)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return self.recover(e).await,
            Err(_) => return Err(unavailable(timed_out(limit))),
        };
        read_reply(reply)
    }

    async fn claim(&self, min_idle: Duration, count: usize) -> Result<Vec<Entry>, PubSubError> {
        let sub = &self.sub;
        let mut invocation = sub.shared.claim.prepare_invoke();
        invocation
            .key(&sub.topic)
            .arg(&sub.group)
            .arg(&sub.name)
            .arg(ms(min_idle))
            .arg(count);
        let limit = sub.shared.settings.timeout;
        let mut conn = sub.shared.conn.clone();
        let reply: Value =
            match tokio::time::timeout(limit, invocation.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return self.recover(e).await,
                Err(_) => return Err(unavailable(timed_out(limit))),
            };
        let Value::Array(items) = reply else {
            return Err(malformed("the reclaim script", &reply));
        };
        items
            .iter()
            .map(|item| match item {
                Value::Array(parts) if parts.len() == 3 => {
                    let attempt = match &parts[1] {
                        Value::Int(n) => u32::try_from(*n).unwrap_or(u32::MAX).max(1),
                        other => return Err(malformed("the reclaim script", other)),
                    };
                    let id = text(&parts[0]).ok_or_else(|| malformed("XAUTOCLAIM", item))?;
                    fields(id, &parts[2], attempt)
                }
                other => Err(malformed("the reclaim script", other)),
            })
            .collect()
    }

    /// Removes consumer names nobody has used for a long time; failures only delay that.
    async fn forget(&self) {
        let sub = &self.sub;
        let mut invocation = sub.shared.forget.prepare_invoke();
        invocation
            .key(&sub.topic)
            .arg(&sub.group)
            .arg(ms(FORGET_AFTER));
        let limit = sub.shared.settings.timeout;
        let mut conn = sub.shared.conn.clone();
        match tokio::time::timeout(limit, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::debug!(topic = %sub.topic, group = %sub.group, "removed {n} idle Redis consumer(s)")
            }
            Ok(Err(e)) => {
                tracing::debug!(topic = %sub.topic, "removing idle Redis consumers failed: {e}")
            }
            Err(_) => {
                tracing::debug!(topic = %sub.topic, "removing idle Redis consumers timed out")
            }
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An entry's field list (`[field, value, …]`, or a map under RESP3) → an [`Entry`].
fn fields(id: String, v: &Value, attempt: u32) -> Result<Entry, PubSubError> {
    let pairs: Vec<(&Value, &Value)> = match v {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((k, v)),
                _ => None,
            })
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        other => return Err(malformed("a stream entry", other)),
    };
    let mut entry = Entry {
        id,
        data: Bytes::new(),
        expires_at: None,
        attempt,
    };
    for (k, v) in pairs {
        match text(k).as_deref() {
            Some(DATA) => {
                if let Value::BulkString(b) = v {
                    entry.data = Bytes::from(b.clone());
                } else if let Some(t) = text(v) {
                    entry.data = Bytes::from(t);
                }
            }
            Some(EXPIRES_AT) => entry.expires_at = text(v).and_then(|t| t.parse().ok()),
            _ => {}
        }
    }
    Ok(entry)
}

/// `[id, fields]` entries; deleted ones (nil fields, or nil) are skipped.
fn entries(v: &Value, attempt: u32) -> Result<Vec<Entry>, PubSubError> {
    let Value::Array(items) = v else {
        return Err(malformed("a stream read", v));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(parts) if parts.len() == 2 => {
                if matches!(parts[1], Value::Nil) {
                    continue;
                }
                let id = text(&parts[0]).ok_or_else(|| malformed("a stream entry", item))?;
                out.push(fields(id, &parts[1], attempt)?);
            }
            Value::Nil => {}
            other => return Err(malformed("a stream entry", other)),
        }
    }
    Ok(out)
}

/// The answer of `XREADGROUP … STREAMS <topic> >`: nil (nothing within the block time), or the
/// one stream with its new entries, each delivered for the first time.
fn read_reply(v: Value) -> Result<Vec<Entry>, PubSubError> {
    match &v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for s in streams {
                match s {
                    Value::Array(pair) if pair.len() == 2 => out.extend(entries(&pair[1], 1)?),
                    other => return Err(malformed("XREADGROUP", other)),
                }
            }
            Ok(out)
        }
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, e) in streams {
                out.extend(entries(e, 1)?);
            }
            Ok(out)
        }
        other => Err(malformed("XREADGROUP", other)),
    }
}

/// Hands entries to the consumer.
struct Out {
    sub: Arc<Sub>,
    tx: mpsc::Sender<Result<Box<dyn Delivery>, PubSubError>>,
}

impl Out {
    /// False once the consumer is gone.
    async fn hand_out(&self, entry: Entry, permit: OwnedSemaphorePermit) -> bool {
        if entry.expires_at.is_some_and(|at| at <= now_ms()) {
            let sub = &self.sub;
            if let Err(e) = sub.shared.ack(&sub.topic, &sub.group, &entry.id).await {
                tracing::warn!(topic = %sub.topic, id = %entry.id, "dropping an expired message failed: {e}");
            }
            return true;
        }
        let delivery = RedisDelivery {
            sub: self.sub.clone(),
            id: entry.id,
            data: entry.data,
            attempt: entry.attempt,
            received: Instant::now(),
            permit,
        };
        self.tx.send(Ok(Box::new(delivery))).await.is_ok()
    }

    fn report(&self, e: PubSubError) {
        tracing::warn!(topic = %self.sub.topic, group = %self.sub.group, "Redis consumer: {e}");
        // Deliveries have room by their permits; an error that finds no room is only logged.
        let _ = self.tx.try_send(Err(e));
    }

    /// Takes a nacked entry back (if nobody else did meanwhile) and hands it out again.
    async fn redeliver(&self, retry: Retry) -> bool {
        let sub = &self.sub;
        // The entry has been idle at least this long unless another consumer took it since.
        let untouched =
            (retry.idle + retry.nacked.elapsed()).saturating_sub(Duration::from_millis(1));
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&sub.topic)
            .arg(&sub.group)
            .arg(&sub.name)
            .arg(ms(untouched))
            .arg(&retry.id);
        let claimed =
            match query::<Value>(&sub.shared.conn, &cmd, sub.shared.settings.timeout).await {
                Ok(v) => entries(&v, retry.attempt.saturating_add(1)),
                Err(e) => Err(unavailable(e)),
            };
        match claimed {
            Ok(mut got) => match got.pop() {
                Some(entry) => self.hand_out(entry, retry.permit).await,
                // Reclaimed by another consumer, or trimmed from the stream.
                None => true,
            },
            Err(e) => {
                // Still pending: the group reclaims it once idle for the ack timeout.
                self.report(e);
                true
            }
        }
    }
}

/// The consumer's task: fetches entries and hands them out, and hands nacked entries out again
/// when their delay is over. A fetch in progress is never abandoned for a retry (an abandoned
/// read would strand what it read), only polled later.
async fn run(mut fetcher: Fetcher, mut retries: mpsc::Receiver<Retry>, out: Out) {
    let mut waiting: Vec<Retry> = Vec::new();
    loop {
        let step = fetcher.step();
        tokio::pin!(step);
        let fetched = loop {
            let due = waiting.iter().map(|r| r.due).min();
            tokio::select! {
                fetched = &mut step => break fetched,
                Some(retry) = retries.recv() => waiting.push(retry),
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let now = Instant::now();
                    let (ready, later): (Vec<_>, Vec<_>) =
                        waiting.drain(..).partition(|r| r.due <= now);
                    waiting = later;
                    for retry in ready {
                        if !out.redeliver(retry).await {
                            return;
                        }
                    }
                }
            }
        };
        match fetched {
            Ok(entries) => {
                for (entry, permit) in entries {
                    if !out.hand_out(entry, permit).await {
                        return;
                    }
                }
            }
            Err(e) => out.report(e),
        }
        if out.tx.is_closed() {
            return;
        }
    }
}

/// A consumer of a group: deliveries come from its task over a channel, so [`Consumer::next`]
/// is cancel-safe.
struct RedisConsumer {
    deliveries: mpsc::Receiver<Result<Box<dyn Delivery>, PubSubError>>,
    worker: JoinHandle<()>,
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        // Entries read and not answered stay pending and are reclaimed by the group.
        self.worker.abort();
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, PubSubError>> {
        self.deliveries.recv().await
    }
}

struct RedisDelivery {
    sub: Arc<Sub>,
    id: String,
    data: Bytes,
    attempt: u32,
    /// When this consumer got the entry: the entry has been idle at least this long since,
    /// unless another consumer took it.
    received: Instant,
    permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Delivery for RedisDelivery {
    fn data(&self) -> &Bytes {
        &self.data
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    async fn ack(self: Box<Self>) -> Result<(), PubSubError> {
        let sub = &self.sub;
        sub.shared.ack(&sub.topic, &sub.group, &self.id).await
    }

    async fn nack(self: Box<Self>, how: Nack) -> Result<(), PubSubError> {
        let Nack::Retry(delay) = how;
        let this = *self;
        let sub = &this.sub;
        let idle = sub.min_idle.saturating_sub(delay);
        let untouched = this
            .received
            .elapsed()
            .saturating_sub(Duration::from_millis(1));
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&sub.topic)
            .arg(&sub.group)
            .arg(&sub.name)
            .arg(ms(untouched))
            .arg(&this.id)
            .arg("IDLE")
            .arg(ms(idle))
            .arg("JUSTID");
        let claimed: Vec<Value> = query(&sub.shared.conn, &cmd, sub.shared.settings.timeout)
            .await
            .map_err(unavailable)?;
        if claimed.is_empty() {
            // Another consumer reclaimed it (this one took longer than the ack timeout), or it
            // was trimmed: nothing to hand out again here.
            return Ok(());
        }
        let now = Instant::now();
        let retry = Retry {
            id: this.id,
            attempt: this.attempt,
            due: now + delay,
            idle,
            nacked: now,
            permit: this.permit,
        };
        // The consumer may be gone: the entry stays pending and the group reclaims it.
        let _ = sub.retries.send(retry).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_with_only_a_host() {
        let s = RedisStreamsSettings::from_metadata(&meta(&[("redisHost", "cache:6379")])).unwrap();
        assert_eq!(
            s,
            RedisStreamsSettings {
                host: "cache:6379".into(),
                username: None,
                password: None,
                db: 0,
                consumer_id: None,
                processing_timeout: None,
                redeliver_interval: None,
                queue_depth: None,
                concurrency: None,
                max_len_approx: None,
                timeout: Duration::from_secs(5),
            }
        );
        assert_eq!(s.url(), "redis://cache:6379/0");
        assert_eq!(s.group("orders-app"), "orders-app");
    }

    #[test]
    fn dapr_metadata() {
        let s = RedisStreamsSettings::from_metadata(&meta(&[
            ("redisHost", "10.0.0.7:6380"),
            ("redisUsername", "app"),
            ("redisPassword", "p@ss:w/rd"),
            ("redisDB", "3"),
            ("consumerID", "{appID}-workers"),
            ("processingTimeout", "30000"),
            ("redeliverInterval", "2s"),
            ("queueDepth", "10"),
            ("concurrency", "4"),
            ("maxLenApprox", "10000"),
            ("readTimeout", "1500ms"),
            ("enableTLS", "false"),
            ("redisType", "node"),
            ("idleTimeout", "5m"),
        ]))
        .unwrap();
        assert_eq!(s.url(), "redis://app:p%40ss%3Aw%2Frd@10.0.0.7:6380/3");
        assert_eq!(s.group("checkout"), "checkout-workers");
        assert_eq!(s.processing_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.redeliver_interval, Some(Duration::from_secs(2)));
        assert_eq!(s.queue_depth, Some(10));
        assert_eq!(s.concurrency, Some(4));
        assert_eq!(s.max_len_approx, Some(10000));
        assert_eq!(s.timeout, Duration::from_millis(1500));
        let debug = format!("{s:?}");
        assert!(!debug.contains("p@ss"), "{debug}");
    }

    #[test]
    fn configure_serves_the_dapr_type() {
        assert!(crate::KINDS.contains(&"pubsub.redis"));
        let dir = std::path::Path::new("/d");
        let backend = crate::configure(
            "events",
            "pubsub.redis",
            &meta(&[("redisHost", "h:1")]),
            dir,
        );
        assert!(
            matches!(&backend, Ok(crate::Backend::Redis(s)) if s.host == "h:1"),
            "{backend:?}"
        );
        let err = crate::configure("events", "pubsub.redis", &meta(&[]), dir).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("redisHost"));
    }

    #[test]
    fn zero_turns_reclaiming_off_and_trimming_off() {
        let s = RedisStreamsSettings::from_metadata(&meta(&[
            ("redisHost", "h:1"),
            ("processingTimeout", "0"),
            ("redeliverInterval", "0s"),
            ("maxLenApprox", "0"),
        ]))
        .unwrap();
        assert_eq!(s.processing_timeout, Some(Duration::ZERO));
        assert_eq!(s.redeliver_interval, Some(Duration::ZERO));
        assert_eq!(s.max_len_approx, None);
    }

    #[test]
    fn bad_metadata_names_its_key() {
        let field = |pairs: &[(&str, &str)]| {
            RedisStreamsSettings::from_metadata(&meta(pairs))
                .unwrap_err()
                .field
        };
        assert_eq!(field(&[]).as_deref(), Some("redisHost"));
        for host in ["cache", "cache:port", ":6379", "cache:70000"] {
            assert_eq!(
                field(&[("redisHost", host)]).as_deref(),
                Some("redisHost"),
                "{host}"
            );
        }
        let with_host = |k: &'static str, v: &'static str| field(&[("redisHost", "h:1"), (k, v)]);
        for (key, bad) in [
            ("redisDB", "one"),
            ("processingTimeout", "soon"),
            ("redeliverInterval", "-5"),
            ("queueDepth", "0"),
            ("concurrency", "many"),
            ("maxLenApprox", "-1"),
            ("readTimeout", "0"),
            ("enableTLS", "true"),
            ("enableTLS", "yes please"),
            ("failover", "true"),
            ("redisType", "cluster"),
        ] {
            assert_eq!(with_host(key, bad).as_deref(), Some(key), "{key}={bad}");
        }
    }

    #[test]
    fn replies_are_parsed() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry =
            |id: &str, fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("orders"),
            Value::Array(vec![
                entry("1-0", vec![bulk("data"), bulk("a")]),
                entry(
                    "2-0",
                    vec![bulk("data"), bulk("b"), bulk(EXPIRES_AT), bulk("42")],
                ),
            ]),
        ])]);
        let got = read_reply(reply).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].id.as_str(), &got[0].data[..], got[0].attempt),
            ("1-0", &b"a"[..], 1)
        );
        assert_eq!(got[0].expires_at, None);
        assert_eq!(got[1].expires_at, Some(42));
        assert!(read_reply(Value::Nil).unwrap().is_empty());
        // A claim of an entry trimmed from the stream: skipped.
        let claimed = Value::Array(vec![Value::Array(vec![bulk("3-0"), Value::Nil])]);
        assert!(entries(&claimed, 2).unwrap().is_empty());
        assert!(read_reply(bulk("nonsense")).is_err());
    }
}
