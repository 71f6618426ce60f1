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

mod consume;
mod fetch;
pub(crate) mod settings;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};

use crate::broker::{ConsumeOptions, Consumer, Message, PubSub};
use crate::error::PubSubError;
use fetch::{CLAIM, FORGET};
pub use settings::RedisStreamsSettings;

/// The entry field holding the message body (Dapr's).
const DATA: &str = "data";
/// The entry field holding the time after which the message is dropped, in Unix milliseconds.
const EXPIRES_AT: &str = "expiresAt";

/// The longest a read blocks, whatever the reclaim schedule.
const MAX_BLOCK: Duration = Duration::from_secs(15);

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

        Ok(Box::new(consume::start(
            self.shared.clone(),
            topic,
            group,
            reader,
            options,
        )))
    }
}

#[cfg(test)]
mod tests;
