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
//! The groups' consumption state (`embedded/groups.rs`) is shared with the consumers, which
//! claim and settle on their own side without a job for this thread. The writer locks it only to
//! encode the groups changed since the last commit into the commit it is making anyway (a
//! publish batch; the sweep, fsynced when it carries group state; the last commit when the
//! writer stops). A change made after that encoding leaves its group dirty for the next commit,
//! and a commit that fails marks its groups dirty again. A crash can therefore forget recent
//! claims and acks, and those messages are delivered again: at-least-once, never at-most-once.
//!
//! The sweep computes the floors (per topic, the lowest message a group still needs) and
//! encodes the groups under one lock, so the commit that removes messages below the floors
//! carries group state at least as far along as those floors. A group's floor only rises, so a
//! claim reading an older snapshot never reserves a message that sweep removes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::groups::{self, Groups, Row, lock};
use super::{EmbeddedSettings, Wakers, internal};
use crate::broker::Message;
use crate::error::PubSubError;

/// `(topic, seq)` → `[published at ms][expires at ms, 0 = never][data]`.
pub(super) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// Topic → the last sequence number used.
pub(super) const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
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
    Sweep,
    /// Tests: a commit that takes until `release` says so (a slow fsync); `entered` is
    /// signalled once its write transaction is open and holds the groups' changes.
    #[cfg(test)]
    Hold {
        entered: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

pub(super) fn now_ms() -> u64 {
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

pub(super) fn ms(d: Duration) -> u64 {
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

/// The writer thread's state: the file, and the groups' consumption state it shares with the
/// consumers. Dropped when the writer stops (every sender gone, and with them every consumer):
/// the groups' last changes are written then.
pub(super) struct Writer {
    db: Arc<Database>,
    groups: Arc<Mutex<Groups>>,
    wakers: Arc<Wakers>,
    settings: EmbeddedSettings,
}

impl Writer {
    /// Creates the tables of a new log (or moves an older file's layout to this one) and reads
    /// the groups' state, which the writer and the consumers then share.
    pub(super) fn open(
        db: Arc<Database>,
        wakers: Arc<Wakers>,
        settings: EmbeddedSettings,
    ) -> Result<Self, PubSubError> {
        let txn = db.begin_write().map_err(internal)?;
        txn.open_table(MESSAGES).map_err(internal)?;
        txn.open_table(HEADS).map_err(internal)?;
        txn.open_table(DEDUPE).map_err(internal)?;
        let groups = groups::load(&txn)?;
        txn.commit().map_err(internal)?;
        Ok(Self {
            db,
            groups: Arc::new(Mutex::new(groups)),
            wakers,
            settings,
        })
    }

    /// The groups' state, for the consumers.
    pub(super) fn groups(&self) -> Arc<Mutex<Groups>> {
        self.groups.clone()
    }

    /// Runs a batch: the sweep first (its own commit), then the publishes in one fsynced
    /// commit. Claims and acks are not jobs: they never wait for either.
    pub(super) fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let now = now_ms();
        let mut sweep = false;
        let mut publishes = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Publish(topic, message, reply) => publishes.push((topic, message, reply)),
                Job::Sweep => sweep = true,
                #[cfg(test)]
                Job::Hold { entered, release } => self.hold(entered, release),
            }
        }
        if sweep {
            self.sweep(now);
        }
        if !publishes.is_empty() {
            self.publish(publishes, now);
        }
    }

    /// Encodes the groups changed since the last commit, for the commit being made (see
    /// [`Writer::finish`]).
    fn changed_groups(&self) -> Vec<Row> {
        lock(&self.groups).take_changed()
    }

    /// Writes `rows` into `txn` and commits it; when either fails, their groups are dirty
    /// again (the next commit writes them as they are then).
    fn finish(&self, txn: WriteTransaction, rows: &[Row]) -> Result<(), PubSubError> {
        let committed = groups::write(&txn, rows).and_then(|()| txn.commit().map_err(internal));
        if committed.is_err() && !rows.is_empty() {
            lock(&self.groups).unwritten(rows);
        }
        committed
    }

    /// One fsynced commit of `batch`'s publishes and the groups' changes; every publish is
    /// answered after it.
    fn publish(&mut self, batch: Vec<(String, Message, Reply<()>)>, now: u64) {
        let mut answers = Vec::with_capacity(batch.len());
        let mut published: Vec<String> = Vec::new();
        let committed = (|| -> Result<(), PubSubError> {
            let txn = self.db.begin_write().map_err(internal)?;
            {
                let mut t = Tables::open(&txn)?;
                for (topic, message, reply) in batch {
                    let result = t.publish(&topic, &message, now, &self.settings);
                    if result.is_ok() && published.last() != Some(&topic) {
                        published.push(topic);
                    }
                    answers.push((reply, result));
                }
            }
            self.finish(txn, &self.changed_groups())
        })();
        if let Err(e) = &committed {
            tracing::error!("pub/sub commit failed: {e}");
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
    ///
    /// The floors and the rows come from one lock: the commit that removes messages below a
    /// group's floor carries that group's state as of the floor (or a later one, written
    /// before), never an older one that still needs them.
    fn sweep(&mut self, now: u64) {
        let (floors, rows) = {
            let mut groups = lock(&self.groups);
            (groups.floors(), groups.take_changed())
        };
        let committed = (|| -> Result<(), PubSubError> {
            let mut txn = self.db.begin_write().map_err(internal)?;
            if rows.is_empty() {
                txn.set_durability(Durability::None).map_err(internal)?;
            }
            {
                let mut t = Tables::open(&txn)?;
                t.sweep(now, &floors, &self.settings)?;
            }
            self.finish(txn, &rows)
        })();
        if let Err(e) = committed {
            // The rows may not have reached `finish` (the sweep failed before); marking them
            // twice changes nothing.
            lock(&self.groups).unwritten(&rows);
            tracing::warn!("pub/sub sweep failed: {e}");
        }
    }

    /// A commit of the groups' changes held open until `release` (see [`Job::Hold`]).
    #[cfg(test)]
    fn hold(&mut self, entered: oneshot::Sender<()>, release: std::sync::mpsc::Receiver<()>) {
        let txn = self.db.begin_write().expect("begin");
        let rows = self.changed_groups();
        let _ = entered.send(());
        // A test that panicked dropped the sender: go on.
        let _ = release.recv();
        self.finish(txn, &rows).expect("commit");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let rows = self.changed_groups();
        if rows.is_empty() {
            return;
        }
        let committed = self
            .db
            .begin_write()
            .map_err(internal)
            .and_then(|txn| self.finish(txn, &rows));
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
        needed: &HashMap<String, u64>,
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
