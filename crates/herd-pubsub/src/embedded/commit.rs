//! The embedded log's commit path: the writer thread's batches and the message tables.
//!
//! Write path for a publish, numbered:
//! 1. The API task sends the message to the writer thread over a bounded channel.
//! 2. The writer takes every job queued behind it (up to `MAX_BATCH`) into one write transaction:
//!    the publishes of each topic become one row of `batches` (`embedded/batches.rs`) numbered
//!    from `head + 1` of the topic (a publish whose idempotency key was seen within the dedupe
//!    window is accepted without being stored again).
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

use super::batches::{self, BATCHES, Batch};
use super::groups::{self, Groups, Row, lock};
use super::{EmbeddedSettings, Wakers, internal};
use crate::broker::Message;
use crate::error::PubSubError;

/// Topic → the last sequence number used.
pub(super) const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
/// `(topic, idempotency key)` → forgotten at ms.
const DEDUPE: TableDefinition<(&str, &str), u64> = TableDefinition::new("dedupe");

/// Jobs committed together at most.
pub(super) const MAX_BATCH: usize = 512;
/// Batches of messages (and forgotten idempotency keys) removed per topic per sweep, at most;
/// sweeps run every second, so this bounds the rate a topic can be cleaned at.
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

pub(super) fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
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
        batches::migrate(&txn)?;
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
        let mut replies = Vec::with_capacity(batch.len());
        let mut published: Vec<String> = Vec::new();
        let committed = (|| -> Result<(), PubSubError> {
            let txn = self.db.begin_write().map_err(internal)?;
            {
                let mut t = Tables::open(&txn)?;
                // Per topic, in the order first seen: its batch.
                let mut rows: Vec<(String, Batch)> = Vec::new();
                for (topic, message, reply) in batch {
                    replies.push(reply);
                    if t.seen(&topic, &message, now, &self.settings)? {
                        continue;
                    }
                    let at = match rows.iter().position(|(t, _)| *t == topic) {
                        Some(at) => at,
                        None => {
                            rows.push((topic, Batch::new(now)));
                            rows.len() - 1
                        }
                    };
                    let expires = message.ttl.map_or(0, |t| now + ms(t).max(1));
                    rows[at].1.push(expires, &message.data);
                }
                for (topic, batch) in rows {
                    t.append(&topic, &batch)?;
                    published.push(topic);
                }
            }
            self.finish(txn, &self.changed_groups())
        })();
        if let Err(e) = &committed {
            tracing::error!("pub/sub commit failed: {e}");
        }
        for reply in replies {
            let answer = match &committed {
                Ok(()) => Ok(()),
                Err(e) => Err(PubSubError::Unavailable(format!("commit failed: {e}"))),
            };
            drop(reply.send(answer));
        }
        if committed.is_ok() {
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
    batches: Table<'t, (&'static str, u64), &'static [u8]>,
    heads: Table<'t, &'static str, u64>,
    dedupe: Table<'t, (&'static str, &'static str), u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, PubSubError> {
        Ok(Self {
            batches: txn.open_table(BATCHES).map_err(internal)?,
            heads: txn.open_table(HEADS).map_err(internal)?,
            dedupe: txn.open_table(DEDUPE).map_err(internal)?,
        })
    }

    /// Whether `message` was published within the dedupe window (by its idempotency key): it
    /// is not stored again. Remembers the key otherwise.
    fn seen(
        &mut self,
        topic: &str,
        message: &Message,
        now: u64,
        settings: &EmbeddedSettings,
    ) -> Result<bool, PubSubError> {
        let Some(id) = &message.id else {
            return Ok(false);
        };
        let seen = self.dedupe.get((topic, id.as_str())).map_err(internal)?;
        if seen.is_some_and(|until| until.value() > now) {
            return Ok(true);
        }
        self.dedupe
            .insert((topic, id.as_str()), now + ms(settings.dedupe_window))
            .map_err(internal)?;
        Ok(false)
    }

    /// Stores `batch` as `topic`'s next messages.
    fn append(&mut self, topic: &str, batch: &Batch) -> Result<(), PubSubError> {
        let head = self
            .heads
            .get(topic)
            .map_err(internal)?
            .map_or(0, |v| v.value());
        let full = || internal(format!("topic {topic:?} has used every sequence number"));
        let last = head.checked_add(batch.len()).ok_or_else(full)?;
        self.batches
            .insert((topic, head + 1), batch.row())
            .map_err(internal)?;
        self.heads.insert(topic, last).map_err(internal)?;
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
            batches::sweep(&mut self.batches, &topic, below, cutoff, SWEEP_LIMIT)?;
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
