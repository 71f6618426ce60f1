//! The Redis backend (`state.redis`, and `lock.redis` for locks), over redis-rs's auto-reconnecting
//! `ConnectionManager`.
//!
//! Layout, compatible with Dapr's Redis state store: a key is a hash with fields `data` (the
//! value) and `version` (the ETag). TTLs are Redis expiries. Every write, single or
//! transactional, runs as one Lua script (`TRANSACT`) that first checks every operation's
//! conditions and then applies them, so a transaction is all or nothing and ETag checks are
//! atomic. Versions come from one counter key (`herd||version`), so ETags never repeat for a key
//! that was deleted and written again. Fencing tokens written with a key are kept in
//! `herd-fence||<key>`, which outlives the key. Locks are `SET NX PX` keys holding the owner (as
//! Dapr's `lock.redis`), and each grant increments `herd||fence` for its fencing token. The
//! transactional outbox lives in the same script: a transaction's messages go into
//! `herd-outbox||<component>||data` (behind `<keyPrefix>||` when that is a fixed text; a hash of
//! id → body, with the id counter in field `next`) and `…||ids` (a sorted set of ids, the
//! relay's order), written with the state or not at all; the relay reads the oldest ids and
//! removes what it published, so two herds relaying one store publish an entry twice at worst,
//! never lose one.
//!
//! Consistency: Redis acknowledges a write once the primary applied it. With `strong` and the
//! component's `replicas` metadata above zero, herd also waits (`WAIT`) until that many replicas
//! have the write, failing the request if they do not confirm within `strongTimeout`; with
//! `eventual`, or without replicas, the primary's answer is the acknowledgement. Durability is
//! Redis's own (AOF/RDB settings); the fencing and version counters are only as durable as that.

pub(crate) mod settings;

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisWrite as _, Script, ServerErrorKind, Value};

use crate::error::StateError;
use crate::rules;
use crate::store::{
    Capabilities, Concurrency, Consistency, LockOutcome, LockRequest, OutboxEntry, StateStore,
    UnlockStatus, Versioned, WriteOp,
};
pub use settings::RedisSettings;

/// Checks every operation's condition, then applies them all, and adds any outbox messages in the
/// same script (so Redis applies the state and the messages together or not at all). KEYS: the
/// version counter, each operation's key and fence key, then (with messages) the outbox's id set
/// and data hash. ARGV: the number of operations n; six per operation — kind (`s`/`d`), ETag
/// (empty: none), concurrency (`u`/`f`/`l`), fencing token (empty: none), TTL in ms (`0`: none),
/// value; then one per outbox message.
///
/// Every `redis.call` costs Redis about a microsecond and a half (against a third of one for the
/// same command sent directly), so the script reads only what a condition needs: the stored
/// version only for an ETag or first-write check, the fence only for a fencing token. A
/// transaction's new versions are numbered 1, 2, … while checking and take their place after the
/// counter's value once every check passed (one `INCRBY`); the counter is read earlier only when
/// a later operation's ETag is compared with a version this transaction assigns. A plain save
/// is three calls (`INCRBY`, `HSET`, `PERSIST`). The script is `redis/transact.lua`.
const TRANSACT: &str = include_str!("redis/transact.lua");

/// KEYS: the lock key, the fencing counter. ARGV: owner, lease in ms. Returns the token, or 0
/// when the lock is held.
const LOCK: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return t
"#;

/// KEYS: the lock key. ARGV: owner. Returns 1 released, -1 no lock, -2 someone else's.
const UNLOCK: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == false then return -1 end
if v ~= ARGV[1] then return -2 end
redis.call('DEL', KEYS[1])
return 1
"#;

const VERSION_KEY: &str = "herd||version";
const FENCE_COUNTER: &str = "herd||fence";

#[cfg(test)]
fn fence_key(key: &str) -> String {
    format!("herd-fence||{key}")
}

fn lock_key(resource: &str) -> String {
    format!("lock||{resource}")
}

/// The Redis store.
pub struct RedisStore {
    conn: ConnectionManager,
    settings: RedisSettings,
    transact: Script,
    lock: Script,
    unlock: Script,
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects (once; the connection manager reconnects on its own afterwards).
    pub async fn connect(settings: RedisSettings) -> Result<Self, StateError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            conn,
            settings,
            transact: Script::new(TRANSACT),
            lock: Script::new(LOCK),
            unlock: Script::new(UNLOCK),
        })
    }

    /// Runs `TRANSACT`: the operations, checked then applied, and the outbox messages, in one
    /// script.
    async fn write(&self, ops: Vec<WriteOp>, messages: Vec<Bytes>) -> Result<(), StateError> {
        if ops.is_empty() && messages.is_empty() {
            return Ok(());
        }
        let mut strong = false;
        for op in &ops {
            let guard = op.guard();
            if let Some(etag) = &guard.etag
                && guard.concurrency != Concurrency::LastWrite
            {
                rules::parse_etag(op.key(), etag)?;
            }
            strong |= guard.consistency == Consistency::Strong;
        }
        let command = transact_command(self.transact.get_hash(), &ops, &messages, || {
            self.outbox_keys()
        });
        let reply: Vec<String> = match command.query_async(&mut self.conn.clone()).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.transact
                    .load_async(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                command.query_async(&mut self.conn.clone()).await
            }
            reply => reply,
        }
        .map_err(unavailable)?;
        match reply.first().map(String::as_str) {
            Some("OK") => {}
            Some("MISMATCH") => {
                return Err(StateError::EtagMismatch {
                    key: reply.get(1).cloned().unwrap_or_default(),
                });
            }
            Some("FENCED") => {
                let num = |i: usize| reply.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
                return Err(StateError::Fenced {
                    key: reply.get(1).cloned().unwrap_or_default(),
                    token: num(2),
                    seen: num(3),
                });
            }
            other => {
                return Err(StateError::Internal(format!(
                    "unexpected script answer {other:?}"
                )));
            }
        }
        if strong && self.settings.replicas > 0 {
            self.wait_replicas().await?;
        }
        Ok(())
    }

    /// The outbox's sorted set of entry ids and its hash of entry bodies (and id counter).
    fn outbox_keys(&self) -> (String, String) {
        let base = &self.settings.outbox_key;
        (format!("{base}||ids"), format!("{base}||data"))
    }

    async fn wait_replicas(&self) -> Result<(), StateError> {
        let wanted = self.settings.replicas;
        let ms = self.settings.strong_timeout.as_millis() as u64;
        let acked: u32 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(ms)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if acked < wanted {
            return Err(StateError::Unavailable(format!(
                "strong write reached {acked} of {wanted} replica(s) within {ms} ms"
            )));
        }
        Ok(())
    }
}

/// `EVALSHA` of the `TRANSACT` script (`sha`) for `ops` and `messages`, written straight into
/// one command buffer (a `ScriptInvocation` keeps every key and argument in a `Vec` of its own,
/// then copies them into the command). `outbox_keys` names the outbox's id set and data hash.
fn transact_command(
    sha: &str,
    ops: &[WriteOp],
    messages: &[Bytes],
    outbox_keys: impl FnOnce() -> (String, String),
) -> redis::Cmd {
    let keys = 1 + 2 * ops.len() + if messages.is_empty() { 0 } else { 2 };
    let data: usize = ops
        .iter()
        .map(|op| {
            let value = match op {
                WriteOp::Set(s) => s.value.len(),
                WriteOp::Delete(_) => 0,
            };
            2 * op.key().len() + value + 64
        })
        .sum::<usize>()
        + messages.iter().map(Bytes::len).sum::<usize>()
        + 128;
    let mut cmd = redis::Cmd::with_capacity(3 + keys + 1 + 6 * ops.len() + messages.len(), data);
    cmd.arg("EVALSHA").arg(sha).arg(keys).arg(VERSION_KEY);
    for op in ops {
        cmd.arg(op.key());
        // The fence key, `herd-fence||<key>`, written in place.
        let mut fence = cmd.writer_for_next_arg();
        let _ = fence.write_all(b"herd-fence||");
        let _ = fence.write_all(op.key().as_bytes());
    }
    if !messages.is_empty() {
        let (ids_key, data_key) = outbox_keys();
        cmd.arg(ids_key).arg(data_key);
    }
    cmd.arg(ops.len());
    for op in ops {
        let guard = op.guard();
        let (kind, ttl, value): (&str, u64, &[u8]) = match op {
            WriteOp::Set(s) => (
                "s",
                s.ttl.map_or(0, |t| (t.as_millis() as u64).max(1)),
                &s.value,
            ),
            WriteOp::Delete(_) => ("d", 0, b""),
        };
        let concurrency = match guard.concurrency {
            Concurrency::Unspecified => "u",
            Concurrency::FirstWrite => "f",
            Concurrency::LastWrite => "l",
        };
        cmd.arg(kind)
            .arg(guard.etag.as_deref().unwrap_or(""))
            .arg(concurrency);
        match guard.fence {
            Some(f) => cmd.arg(f),
            None => cmd.arg(""),
        };
        cmd.arg(ttl).arg(value);
    }
    for m in messages {
        cmd.arg(m.as_ref());
    }
    cmd
}

fn decode(
    key: &str,
    fields: (Option<Vec<u8>>, Option<String>),
    pttl: i64,
) -> Result<Option<Versioned>, StateError> {
    match fields {
        (Some(data), Some(version)) => Ok(Some(Versioned {
            value: Bytes::from(data),
            etag: version,
            expires_at: (pttl > 0).then(|| SystemTime::now() + Duration::from_millis(pttl as u64)),
        })),
        (None, None) => Ok(None),
        _ => Err(StateError::Internal(format!(
            "key {key:?} is not a state hash with data and version"
        ))),
    }
}

#[async_trait]
impl StateStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            lock: true,
            outbox: true,
        }
    }

    async fn get(&self, key: &str, _: Consistency) -> Result<Option<Versioned>, StateError> {
        let (fields, pttl): ((Option<Vec<u8>>, Option<String>), i64) = redis::pipe()
            .cmd("HMGET")
            .arg(key)
            .arg("data")
            .arg("version")
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        decode(key, fields, pttl)
    }

    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET").arg(key).arg("data").arg("version");
            pipe.cmd("PTTL").arg(key);
        }
        let values: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, pair) in keys.iter().zip(values.chunks(2)) {
            let fields: (Option<Vec<u8>>, Option<String>) =
                redis::from_redis_value_ref(&pair[0])
                    .map_err(|e| StateError::Internal(e.to_string()))?;
            let pttl: i64 = redis::from_redis_value_ref(&pair[1])
                .map_err(|e| StateError::Internal(e.to_string()))?;
            out.push(decode(key, fields, pttl)?);
        }
        Ok(out)
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StateError> {
        self.write(ops, Vec::new()).await
    }

    async fn transact_with_outbox(
        &self,
        ops: Vec<WriteOp>,
        messages: Vec<Bytes>,
    ) -> Result<(), StateError> {
        self.write(ops, messages).await
    }

    async fn outbox_peek(&self, max: usize) -> Result<Vec<OutboxEntry>, StateError> {
        let (ids_key, data_key) = self.outbox_keys();
        let ids: Vec<u64> = redis::cmd("ZRANGE")
            .arg(&ids_key)
            .arg(0)
            .arg(max.max(1) as i64 - 1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let data: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&data_key)
            .arg(&ids)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        // An entry another herd's relay removed between the two reads is skipped.
        Ok(ids
            .into_iter()
            .zip(data)
            .filter_map(|(id, d)| {
                Some(OutboxEntry {
                    id,
                    data: Bytes::from(d?),
                })
            })
            .collect())
    }

    async fn outbox_remove(&self, ids: Vec<u64>) -> Result<(), StateError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (ids_key, data_key) = self.outbox_keys();
        redis::pipe()
            .atomic()
            .cmd("ZREM")
            .arg(&ids_key)
            .arg(&ids)
            .ignore()
            .cmd("HDEL")
            .arg(&data_key)
            .arg(&ids)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn lock(&self, request: LockRequest) -> Result<LockOutcome, StateError> {
        let token: u64 = self
            .lock
            .key(lock_key(&request.resource))
            .key(FENCE_COUNTER)
            .arg(&request.owner)
            .arg((request.expiry.as_millis() as u64).max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match token {
            0 => LockOutcome::Held,
            t => LockOutcome::Granted(t),
        })
    }

    async fn unlock(&self, resource: &str, owner: &str) -> Result<UnlockStatus, StateError> {
        let status: i64 = self
            .unlock
            .key(lock_key(resource))
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match status {
            1 => UnlockStatus::Success,
            -2 => UnlockStatus::LockBelongsToOthers,
            _ => UnlockStatus::LockDoesNotExist,
        })
    }
}

#[cfg(test)]
mod tests;
