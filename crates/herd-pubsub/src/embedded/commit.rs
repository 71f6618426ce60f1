//! The embedded log's commit path: the writer thread's batches, each job planned against the
//! tables as the jobs before it left them, and the tables' layout.
//!
//! Write path for a publish, numbered:
//! 1. The API task sends the message to the writer thread over a bounded channel.
//! 2. The writer takes every job queued behind it (up to `MAX_BATCH`) into one write transaction:
//!    a publish appends at `head + 1` of its topic (or, when its idempotency key was seen within
//!    the dedupe window, is accepted without being stored again).
//! 3. A batch holding a publish commits with `Durability::Immediate`: redb fsyncs before
//!    `commit` returns. Concurrent publishers share that fsync (group commit).
//! 4. Only then is each publish acknowledged, and consumers of the topic are woken.
//!
//! Consumption state (each group's cursor and its pending deliveries with their attempt counts)
//! is written by the same thread in batches without publishes, committed with `Durability::None`:
//! it reaches the disk with the next durable commit. A crash can therefore forget recent claims
//! and acks, and those messages are delivered again: at-least-once, never at-most-once.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::{EmbeddedSettings, Wakers, internal};
use crate::broker::Message;
use crate::error::PubSubError;

/// `(topic, seq)` → `[published at ms][expires at ms, 0 = never][data]`.
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// Topic → the last sequence number used.
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
/// `(topic, group)` → the next sequence number to hand out.
const CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");
/// `(topic, group, seq)` → `(deliveries so far, visible again at ms)`.
const PENDING: TableDefinition<(&str, &str, u64), (u32, u64)> = TableDefinition::new("pending");
/// `(topic, idempotency key)` → forgotten at ms.
const DEDUPE: TableDefinition<(&str, &str), u64> = TableDefinition::new("dedupe");

/// Jobs committed together at most.
pub(super) const MAX_BATCH: usize = 512;
/// Messages (and forgotten idempotency keys) removed per topic per sweep, at most; sweeps run
/// every second, so this bounds the rate a topic can be cleaned at.
const SWEEP_LIMIT: usize = 100_000;

/// Where the writer sends a job's answer, after the commit.
pub(super) type Reply<T> = oneshot::Sender<Result<T, PubSubError>>;

/// A message handed out: sequence number, attempt, body.
pub(super) type Claimed = (u64, u32, Bytes);

/// What the writer thread is asked to do.
pub(super) enum Job {
    Publish(String, Message, Reply<()>),
    Claim {
        topic: String,
        group: String,
        max: usize,
        ack_timeout: Duration,
        reply: Reply<Vec<Claimed>>,
    },
    Settle {
        topic: String,
        group: String,
        seq: u64,
        /// `None`: ack; `Some(d)`: visible again after `d`.
        retry: Option<Duration>,
        reply: Reply<()>,
    },
    Sweep,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Creates the tables of a new log, and readies an existing one for this run.
pub(super) fn prepare(db: &Database) -> Result<(), PubSubError> {
    let txn = db.begin_write().map_err(internal)?;
    {
        txn.open_table(MESSAGES).map_err(internal)?;
        txn.open_table(HEADS).map_err(internal)?;
        txn.open_table(CURSORS).map_err(internal)?;
        txn.open_table(DEDUPE).map_err(internal)?;
        // Deliveries pending from an earlier run were handed to consumers that are gone
        // with it: make them due at once instead of after their ack timeout.
        let mut pending = txn.open_table(PENDING).map_err(internal)?;
        let due: Vec<((String, String, u64), u32)> = pending
            .iter()
            .map_err(internal)?
            .filter_map(|e| e.ok())
            .map(|(k, v)| {
                let (topic, group, seq) = k.value();
                ((topic.to_string(), group.to_string(), seq), v.value().0)
            })
            .collect();
        for ((topic, group, seq), attempts) in due {
            pending
                .insert((topic.as_str(), group.as_str(), seq), (attempts, 0))
                .map_err(internal)?;
        }
    }
    txn.commit().map_err(internal)
}

enum Answer {
    Unit(Reply<()>, Result<(), PubSubError>),
    Claimed(Reply<Vec<Claimed>>, Result<Vec<Claimed>, PubSubError>),
}

/// Commits a batch in two transactions: consumption state first (claims, acks, sweeps; no
/// fsync), then publishes (fsynced). Claims and acks queued behind a publish batch so never
/// wait for its fsync, and delivery keeps up while publishers keep the disk busy.
pub(super) fn run_batch(
    db: &Database,
    batch: &mut Vec<Job>,
    wakers: &Wakers,
    settings: &EmbeddedSettings,
) {
    let (mut durable, mut rest): (Vec<Job>, Vec<Job>) =
        batch.drain(..).partition(|j| matches!(j, Job::Publish(..)));
    if !rest.is_empty() {
        commit(db, &mut rest, false, wakers, settings);
    }
    if !durable.is_empty() {
        commit(db, &mut durable, true, wakers, settings);
    }
}

/// One write transaction over `batch`, fsynced when `durable`; every job is answered after the
/// commit.
fn commit(
    db: &Database,
    batch: &mut Vec<Job>,
    durable: bool,
    wakers: &Wakers,
    settings: &EmbeddedSettings,
) {
    let mut answers = Vec::with_capacity(batch.len());
    let mut published: Vec<String> = Vec::new();
    let committed = (|| -> Result<(), PubSubError> {
        let mut txn = db.begin_write().map_err(internal)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(internal)?;
        }
        {
            let mut t = Tables::open(&txn)?;
            let now = now_ms();
            for job in batch.drain(..) {
                match job {
                    Job::Publish(topic, message, reply) => {
                        let result = t.publish(&topic, &message, now, settings);
                        if result.is_ok() {
                            published.push(topic);
                        }
                        answers.push(Answer::Unit(reply, result));
                    }
                    Job::Claim {
                        topic,
                        group,
                        max,
                        ack_timeout,
                        reply,
                    } => {
                        let result = t.claim(&topic, &group, max, now, ms(ack_timeout));
                        answers.push(Answer::Claimed(reply, result));
                    }
                    Job::Settle {
                        topic,
                        group,
                        seq,
                        retry,
                        reply,
                    } => {
                        let result = t.settle(&topic, &group, seq, retry.map(|d| now + ms(d)));
                        answers.push(Answer::Unit(reply, result));
                    }
                    Job::Sweep => {
                        if let Err(e) = t.sweep(now, settings) {
                            tracing::warn!("pub/sub sweep failed: {e}");
                        }
                    }
                }
            }
        }
        txn.commit().map_err(internal)
    })();
    batch.clear();
    let failed = |e: &PubSubError| PubSubError::Unavailable(format!("commit failed: {e}"));
    for answer in answers {
        match (answer, &committed) {
            (Answer::Unit(r, result), Ok(())) => drop(r.send(result)),
            (Answer::Claimed(r, result), Ok(())) => drop(r.send(result)),
            (Answer::Unit(r, _), Err(e)) => drop(r.send(Err(failed(e)))),
            (Answer::Claimed(r, _), Err(e)) => drop(r.send(Err(failed(e)))),
        }
    }
    match committed {
        Ok(()) => {
            published.dedup();
            for topic in published {
                let wake = wakers.of(&topic);
                wake.published
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
                wake.notify.notify_waiters();
            }
        }
        Err(e) => tracing::error!("pub/sub commit failed: {e}"),
    }
}

struct Tables<'t> {
    messages: Table<'t, (&'static str, u64), &'static [u8]>,
    heads: Table<'t, &'static str, u64>,
    cursors: Table<'t, (&'static str, &'static str), u64>,
    pending: Table<'t, (&'static str, &'static str, u64), (u32, u64)>,
    dedupe: Table<'t, (&'static str, &'static str), u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, PubSubError> {
        Ok(Self {
            messages: txn.open_table(MESSAGES).map_err(internal)?,
            heads: txn.open_table(HEADS).map_err(internal)?,
            cursors: txn.open_table(CURSORS).map_err(internal)?,
            pending: txn.open_table(PENDING).map_err(internal)?,
            dedupe: txn.open_table(DEDUPE).map_err(internal)?,
        })
    }

    fn publish(
        &mut self,
        topic: &str,
        message: &Message,
        now: u64,
        settings: &EmbeddedSettings,
    ) -> Result<(), PubSubError> {
        if let Some(id) = &message.id {
            let seen = self.dedupe.get((topic, id.as_str())).map_err(internal)?;
            if seen.is_some_and(|until| until.value() > now) {
                return Ok(());
            }
            self.dedupe
                .insert((topic, id.as_str()), now + ms(settings.dedupe_window))
                .map_err(internal)?;
        }
        let seq = self
            .heads
            .get(topic)
            .map_err(internal)?
            .map_or(0, |v| v.value())
            + 1;
        self.heads.insert(topic, seq).map_err(internal)?;
        let expires = message.ttl.map_or(0, |t| now + ms(t).max(1));
        let mut record = Vec::with_capacity(16 + message.data.len());
        record.extend_from_slice(&now.to_le_bytes());
        record.extend_from_slice(&expires.to_le_bytes());
        record.extend_from_slice(&message.data);
        self.messages
            .insert((topic, seq), record.as_slice())
            .map_err(internal)?;
        Ok(())
    }

    /// The oldest sequence number still stored for `topic`.
    fn oldest(&self, topic: &str) -> Result<u64, PubSubError> {
        let first = self
            .messages
            .range((topic, 0)..=(topic, u64::MAX))
            .map_err(internal)?
            .next()
            .transpose()
            .map_err(internal)?;
        Ok(match first {
            Some((k, _)) => k.value().1,
            None => {
                self.heads
                    .get(topic)
                    .map_err(internal)?
                    .map_or(0, |v| v.value())
                    + 1
            }
        })
    }

    fn claim(
        &mut self,
        topic: &str,
        group: &str,
        max: usize,
        now: u64,
        ack_timeout: u64,
    ) -> Result<Vec<Claimed>, PubSubError> {
        let mut out = Vec::new();
        // Redeliveries first: pending entries whose ack timeout or retry delay has passed.
        let due: Vec<(u64, u32)> = self
            .pending
            .range((topic, group, 0)..=(topic, group, u64::MAX))
            .map_err(internal)?
            .filter_map(|e| e.ok())
            .map(|(k, v)| (k.value().2, v.value()))
            .filter(|(_, (_, visible))| *visible <= now)
            .take(max)
            .map(|(seq, (attempts, _))| (seq, attempts))
            .collect();
        for (seq, attempts) in due {
            match self.body(topic, seq, now)? {
                Some(data) => {
                    self.pending
                        .insert((topic, group, seq), (attempts + 1, now + ack_timeout))
                        .map_err(internal)?;
                    out.push((seq, attempts + 1, data));
                }
                // Removed by retention or expired by its TTL: nothing to redeliver.
                None => {
                    self.pending.remove((topic, group, seq)).map_err(internal)?;
                }
            }
        }
        // Then new messages from the group's cursor.
        let mut cursor = match self.cursors.get((topic, group)).map_err(internal)? {
            Some(c) => c.value(),
            None => self.oldest(topic)?,
        };
        let head = self
            .heads
            .get(topic)
            .map_err(internal)?
            .map_or(0, |v| v.value());
        while out.len() < max && cursor <= head {
            if let Some(data) = self.body(topic, cursor, now)? {
                self.pending
                    .insert((topic, group, cursor), (1, now + ack_timeout))
                    .map_err(internal)?;
                out.push((cursor, 1, data));
            }
            cursor += 1;
        }
        self.cursors
            .insert((topic, group), cursor)
            .map_err(internal)?;
        Ok(out)
    }

    /// A message's body, unless it is gone or expired.
    fn body(&self, topic: &str, seq: u64, now: u64) -> Result<Option<Bytes>, PubSubError> {
        let Some(record) = self.messages.get((topic, seq)).map_err(internal)? else {
            return Ok(None);
        };
        let record = record.value();
        if record.len() < 16 {
            return Err(internal("truncated message record"));
        }
        let expires = u64_at(record, 8);
        if expires != 0 && expires <= now {
            return Ok(None);
        }
        Ok(Some(Bytes::copy_from_slice(&record[16..])))
    }

    fn settle(
        &mut self,
        topic: &str,
        group: &str,
        seq: u64,
        retry_at: Option<u64>,
    ) -> Result<(), PubSubError> {
        match retry_at {
            None => {
                self.pending.remove((topic, group, seq)).map_err(internal)?;
            }
            Some(at) => {
                let attempts = self
                    .pending
                    .get((topic, group, seq))
                    .map_err(internal)?
                    .map(|v| v.value().0);
                if let Some(attempts) = attempts {
                    self.pending
                        .insert((topic, group, seq), (attempts, at))
                        .map_err(internal)?;
                }
            }
        }
        Ok(())
    }

    /// Removes messages every group is past (or older than the retention time) and forgotten
    /// idempotency keys.
    fn sweep(&mut self, now: u64, settings: &EmbeddedSettings) -> Result<(), PubSubError> {
        let mut needed: HashMap<String, u64> = HashMap::new();
        for entry in self.cursors.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (topic, _) = k.value();
            let low = needed.entry(topic.to_string()).or_insert(u64::MAX);
            *low = (*low).min(v.value());
        }
        for entry in self.pending.iter().map_err(internal)? {
            let (k, _) = entry.map_err(internal)?;
            let (topic, _, seq) = k.value();
            let low = needed.entry(topic.to_string()).or_insert(u64::MAX);
            *low = (*low).min(seq);
        }
        let cutoff = now.saturating_sub(ms(settings.retention));
        let heads: Vec<String> = self
            .heads
            .iter()
            .map_err(internal)?
            .filter_map(|e| e.ok().map(|(k, _)| k.value().to_string()))
            .collect();
        for topic in heads {
            // Without any group, messages wait (up to the retention time) for one to appear.
            let below = needed.get(&topic).copied().unwrap_or(0);
            let mut doomed = Vec::new();
            for entry in self
                .messages
                .range((topic.as_str(), 0)..=(topic.as_str(), u64::MAX))
                .map_err(internal)?
                .take(SWEEP_LIMIT)
            {
                let (k, v) = entry.map_err(internal)?;
                let seq = k.value().1;
                let published = u64_at(v.value(), 0);
                if seq < below || published < cutoff {
                    doomed.push(seq);
                } else {
                    break;
                }
            }
            for seq in doomed {
                self.messages
                    .remove((topic.as_str(), seq))
                    .map_err(internal)?;
            }
        }
        let stale: Vec<(String, String)> = self
            .dedupe
            .iter()
            .map_err(internal)?
            .filter_map(|e| e.ok())
            .filter(|(_, until)| until.value() <= now)
            .map(|(k, _)| (k.value().0.to_string(), k.value().1.to_string()))
            .take(SWEEP_LIMIT)
            .collect();
        for (topic, id) in stale {
            self.dedupe
                .remove((topic.as_str(), id.as_str()))
                .map_err(internal)?;
        }
        Ok(())
    }
}
