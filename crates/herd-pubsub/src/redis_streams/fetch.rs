//! Fetching entries for one consumer: reclaiming what other consumers left pending
//! (`XAUTOCLAIM`, in a script that reads the delivery counts too), reading new entries
//! (`XREADGROUP`), forgetting consumer names nobody uses, and parsing Redis's answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{RedisError, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::consume::Sub;
use super::{DATA, EXPIRES_AT, MAX_BLOCK, malformed, ms, timed_out, unavailable};
use crate::error::PubSubError;

/// How often a consumer removes consumer names nobody uses any more, and after how long idle.
const FORGET_EVERY: Duration = Duration::from_secs(600);
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Retry delays after a failed read or reclaim: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Reclaims up to ARGV[4] entries of group ARGV[1] idle for ARGV[3] ms or more for consumer
/// ARGV[2], each with its delivery count: `{id, count, {field, value, …}}`. KEYS[1]: the stream.
pub(super) const CLAIM: &str = r#"
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
pub(super) const FORGET: &str = r#"
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

/// A stream entry taken by this consumer.
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) data: Bytes,
    pub(super) expires_at: Option<u64>,
    pub(super) attempt: u32,
}

/// The reclaim schedule.
struct Reclaim {
    min_idle: Duration,
    every: Duration,
    next: Instant,
}

/// Fetches entries for one consumer: reclaims, reads.
pub(super) struct Fetcher {
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
    /// A fetcher for `sub` reading over `reader`, taking a permit per entry; it reclaims entries
    /// idle for `min_idle` every `every`, unless either is zero.
    pub(super) fn new(
        sub: Arc<Sub>,
        reader: ConnectionManager,
        permits: Arc<Semaphore>,
        batch: usize,
        min_idle: Duration,
        every: Duration,
    ) -> Self {
        let reclaim = (!min_idle.is_zero() && !every.is_zero()).then(|| Reclaim {
            min_idle,
            every,
            next: Instant::now(),
        });
        Self {
            sub,
            reader,
            permits,
            batch,
            reclaim,
            forget_at: Instant::now(),
            backoff: None,
        }
    }

    /// Waits for room, then reclaims (when due) or reads; an error is returned once and the next
    /// call waits a growing delay first.
    pub(super) async fn step(&mut self) -> Result<Fetched, PubSubError> {
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
pub(super) fn entries(v: &Value, attempt: u32) -> Result<Vec<Entry>, PubSubError> {
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
pub(super) fn read_reply(v: Value) -> Result<Vec<Entry>, PubSubError> {
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
