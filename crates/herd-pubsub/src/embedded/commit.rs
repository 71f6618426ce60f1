//! The embedded log's commit path: the writer thread's batches and the message tables.
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
//! Claims and acks change the groups' state in memory (`embedded/groups.rs`) and are answered
//! at once, reading messages through a read transaction; that state is written into the next
//! commit (a publish batch, the sweep, fsynced when it carries group state) and when the writer
//! stops. A crash can therefore forget recent claims and acks, and those messages are delivered
//! again: at-least-once, never at-most-once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use tokio::sync::oneshot;

use super::groups::{self, Groups, Source};
use super::{EmbeddedSettings, Wakers, internal};
use crate::broker::Message;
use crate::error::PubSubError;

/// `(topic, seq)` → `[published at ms][expires at ms, 0 = never][data]`.
pub(super) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// Topic → the last sequence number used.
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
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
        topic: Arc<str>,
        group: Arc<str>,
        max: usize,
        ack_timeout: Duration,
        reply: Reply<Vec<Claimed>>,
    },
    Settle {
        topic: Arc<str>,
        group: Arc<str>,
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

/// A message record's body, unless it expired by `now`.
pub(super) fn live_body(record: &[u8], now: u64) -> Result<Option<Bytes>, PubSubError> {
    if record.len() < 16 {
        return Err(internal("truncated message record"));
    }
    let expires = u64_at(record, 8);
    if expires != 0 && expires <= now {
        return Ok(None);
    }
    Ok(Some(Bytes::copy_from_slice(&record[16..])))
}

/// The writer thread's state: the file, and the groups' consumption state it keeps in memory.
/// Dropped when the writer stops (every sender gone): the groups' last changes are written
/// then.
pub(super) struct Writer {
    db: Database,
    groups: Groups,
    wakers: Arc<Wakers>,
    settings: EmbeddedSettings,
}

impl Writer {
    /// Creates the tables of a new log (or moves an older file's layout to this one) and reads
    /// the groups' state.
    pub(super) fn open(
        db: Database,
        wakers: Arc<Wakers>,
        settings: EmbeddedSettings,
    ) -> Result<Self, PubSubError> {
        let txn = db.begin_write().map_err(internal)?;
        txn.open_table(MESSAGES).map_err(internal)?;
        txn.open_table(HEADS).map_err(internal)?;
        txn.open_table(DEDUPE).map_err(internal)?;
        let groups = groups::load(&txn)?;
        txn.commit().map_err(internal)?;
        let mut writer = Self {
            db,
            groups,
            wakers,
            settings,
        };
        writer.groups.written();
        Ok(writer)
    }

    /// Runs a batch: claims, acks and sweeps first (in memory, and the sweep's own commit),
    /// then the publishes in one fsynced commit. Claims and acks queued behind a publish batch
    /// so never wait for its fsync, and delivery keeps up while publishers keep the disk busy.
    pub(super) fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let mut durable = Vec::new();
        let mut sweep = false;
        let mut read = None;
        let now = now_ms();
        for job in batch.drain(..) {
            match job {
                job @ Job::Publish(..) => durable.push(job),
                Job::Claim {
                    topic,
                    group,
                    max,
                    ack_timeout,
                    reply,
                } => {
                    let result = (|| {
                        if read.is_none() {
                            read = Some(self.db.begin_read().map_err(internal)?);
                        }
                        let txn = read.as_ref().expect("just begun");
                        let messages = txn.open_table(MESSAGES).map_err(internal)?;
                        let heads = txn.open_table(HEADS).map_err(internal)?;
                        let head = heads
                            .get(&*topic)
                            .map_err(internal)?
                            .map_or(0, |v| v.value());
                        let source = Source {
                            messages: &messages,
                            head,
                        };
                        self.groups
                            .claim(source, &topic, &group, max, now, ms(ack_timeout))
                    })();
                    drop(reply.send(result));
                }
                Job::Settle {
                    topic,
                    group,
                    seq,
                    retry,
                    reply,
                } => {
                    let at = retry.map(|d| now + ms(d));
                    self.groups.settle(&topic, &group, seq, at);
                    drop(reply.send(Ok(())));
                }
                Job::Sweep => sweep = true,
            }
        }
        drop(read);
        if sweep {
            self.sweep(now);
        }
        if !durable.is_empty() {
            self.publish(&mut durable, now);
        }
    }

    /// One fsynced commit of `batch`'s publishes and the groups' changes; every publish is
    /// answered after it.
    fn publish(&mut self, batch: &mut Vec<Job>, now: u64) {
        let mut answers = Vec::with_capacity(batch.len());
        let mut published: Vec<String> = Vec::new();
        let committed = (|| -> Result<(), PubSubError> {
            let txn = self.db.begin_write().map_err(internal)?;
            {
                let mut t = Tables::open(&txn)?;
                for job in batch.drain(..) {
                    if let Job::Publish(topic, message, reply) = job {
                        let result = t.publish(&topic, &message, now, &self.settings);
                        if result.is_ok() && published.last() != Some(&topic) {
                            published.push(topic);
                        }
                        answers.push((reply, result));
                    }
                }
            }
            self.groups.write(&txn)?;
            txn.commit().map_err(internal)
        })();
        batch.clear();
        match &committed {
            Ok(()) => self.groups.written(),
            Err(e) => tracing::error!("pub/sub commit failed: {e}"),
        }
        for (reply, result) in answers {
            let answer = match &committed {
                Ok(()) => result,
                Err(e) => Err(PubSubError::Unavailable(format!("commit failed: {e}"))),
            };
            drop(reply.send(answer));
        }
        if committed.is_ok() {
            published.sort_unstable();
            published.dedup();
            for topic in published {
                let wake = self.wakers.of(&topic);
                wake.published
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
                wake.notify.notify_waiters();
            }
        }
    }

    /// Removes what no group needs any more, and writes the groups' changes: fsynced when
    /// there are any, so consumption state reaches the disk within a sweep period even while
    /// nothing is published.
    fn sweep(&mut self, now: u64) {
        let durable = self.groups.dirty();
        let committed = (|| -> Result<(), PubSubError> {
            let mut txn = self.db.begin_write().map_err(internal)?;
            if !durable {
                txn.set_durability(Durability::None).map_err(internal)?;
            }
            {
                let mut t = Tables::open(&txn)?;
                t.sweep(now, &self.groups.floors(), &self.settings)?;
            }
            self.groups.write(&txn)?;
            txn.commit().map_err(internal)
        })();
        match committed {
            Ok(()) => self.groups.written(),
            Err(e) => tracing::warn!("pub/sub sweep failed: {e}"),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.groups.dirty() {
            return;
        }
        let committed = (|| -> Result<(), PubSubError> {
            let txn = self.db.begin_write().map_err(internal)?;
            self.groups.write(&txn)?;
            txn.commit().map_err(internal)
        })();
        if let Err(e) = committed {
            tracing::warn!("pub/sub log: consumption state not written at stop: {e}");
        }
    }
}

struct Tables<'t> {
    messages: Table<'t, (&'static str, u64), &'static [u8]>,
    heads: Table<'t, &'static str, u64>,
    dedupe: Table<'t, (&'static str, &'static str), u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, PubSubError> {
        Ok(Self {
            messages: txn.open_table(MESSAGES).map_err(internal)?,
            heads: txn.open_table(HEADS).map_err(internal)?,
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

    /// Removes messages every group is past (or older than the retention time) and forgotten
    /// idempotency keys.
    fn sweep(
        &mut self,
        now: u64,
        needed: &HashMap<&str, u64>,
        settings: &EmbeddedSettings,
    ) -> Result<(), PubSubError> {
        let cutoff = now.saturating_sub(ms(settings.retention));
        let heads: Vec<String> = self
            .heads
            .iter()
            .map_err(internal)?
            .filter_map(|e| e.ok().map(|(k, _)| k.value().to_string()))
            .collect();
        for topic in heads {
            // Without any group, messages wait (up to the retention time) for one to appear.
            let below = needed.get(topic.as_str()).copied().unwrap_or(0);
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
