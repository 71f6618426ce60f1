//! The embedded store's commit path: the writer thread's batches, and each job planned and
//! applied against the tables as the jobs before it left them.
//!
//! Write path, numbered:
//! 1. An API task sends its operations to the writer thread over a bounded channel and waits for
//!    the answer.
//! 2. The writer takes the first waiting job and every job queued behind it (up to
//!    `MAX_BATCH`), opens one redb write transaction and evaluates each job in order: a job's
//!    conditions are checked against the database as left by the jobs before it, and a job whose
//!    condition fails writes nothing (its operations are planned first, then applied).
//! 3. The transaction commits with `Durability::Immediate`: redb fsyncs before `commit` returns.
//! 4. Only then is every job of the batch answered. A write acknowledged to a client is on disk.
//!
//! Concurrent writers therefore share one fsync (group commit) instead of queueing for one each.

use std::collections::HashMap;

use bytes::Bytes;
use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::{EXPIRY, FENCES, LOCKS, META, OUTBOX, Record, STATE, encode, internal, now_ms, u64_at};
use crate::error::StateError;
use crate::rules::{self, Current};
use crate::store::{LockOutcome, LockRequest, UnlockStatus, WriteOp};

/// Jobs committed together at most; bounds the latency a large batch adds to its first job.
pub(super) const MAX_BATCH: usize = 512;
/// Expired keys removed per sweep transaction at most.
const SWEEP_LIMIT: usize = 1000;

/// Where the writer sends a job's answer, after the commit.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StateError>>;

/// What the writer thread is asked to do.
pub(super) enum Job {
    Write(Vec<WriteOp>, Vec<Bytes>, Reply<()>),
    OutboxRemove(Vec<u64>, Reply<()>),
    Lock(LockRequest, Reply<LockOutcome>),
    Unlock(String, String, Reply<UnlockStatus>),
    Sweep,
}

/// An answer computed inside the transaction, sent only after the commit.
enum Answer {
    Write(Reply<()>, Result<(), StateError>),
    Lock(Reply<LockOutcome>, Result<LockOutcome, StateError>),
    Unlock(Reply<UnlockStatus>, Result<UnlockStatus, StateError>),
}

pub(super) fn run_batch(db: &Database, batch: &mut Vec<Job>) {
    let mut answers = Vec::with_capacity(batch.len());
    let committed = (|| -> Result<(), StateError> {
        let txn = db.begin_write().map_err(internal)?;
        {
            let mut tables = Tables::open(&txn)?;
            let now = now_ms();
            for job in batch.drain(..) {
                match job {
                    Job::Write(ops, outbox, reply) => {
                        let result = tables
                            .write(&ops, now)
                            .and_then(|()| tables.outbox_add(&outbox));
                        answers.push(Answer::Write(reply, result));
                    }
                    Job::OutboxRemove(ids, reply) => {
                        let result = tables.outbox_remove(&ids);
                        answers.push(Answer::Write(reply, result));
                    }
                    Job::Lock(request, reply) => {
                        let result = tables.lock(&request, now);
                        answers.push(Answer::Lock(reply, result));
                    }
                    Job::Unlock(resource, owner, reply) => {
                        let result = tables.unlock(&resource, &owner, now);
                        answers.push(Answer::Unlock(reply, result));
                    }
                    Job::Sweep => {
                        if let Err(e) = tables.sweep(now) {
                            tracing::warn!("state sweep failed: {e}");
                        }
                    }
                }
            }
            tables.finish()?;
        }
        txn.commit().map_err(internal)
    })();
    batch.clear();
    // A failed commit fails every job of the batch: none of them is durable.
    let failed = |e: &StateError| StateError::Unavailable(format!("commit failed: {e}"));
    for answer in answers {
        match (answer, &committed) {
            (Answer::Write(r, result), Ok(())) => drop(r.send(result)),
            (Answer::Lock(r, result), Ok(())) => drop(r.send(result)),
            (Answer::Unlock(r, result), Ok(())) => drop(r.send(result)),
            (Answer::Write(r, _), Err(e)) => drop(r.send(Err(failed(e)))),
            (Answer::Lock(r, _), Err(e)) => drop(r.send(Err(failed(e)))),
            (Answer::Unlock(r, _), Err(e)) => drop(r.send(Err(failed(e)))),
        }
    }
    if let Err(e) = committed {
        tracing::error!("state commit failed: {e}");
    }
}

/// The open tables of one write transaction, with the counters read once per batch.
struct Tables<'t> {
    state: Table<'t, &'static str, &'static [u8]>,
    expiry: Table<'t, (u64, &'static str), ()>,
    fences: Table<'t, &'static str, u64>,
    locks: Table<'t, &'static str, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    outbox: Table<'t, u64, &'static [u8]>,
    version: u64,
    fence: u64,
}

/// What planning decided for one operation, applied once the whole job passed.
enum Planned<'o> {
    Set {
        op: &'o crate::store::SetOp,
        version: u64,
    },
    Delete {
        key: &'o str,
    },
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StateError> {
        let meta = txn.open_table(META).map_err(internal)?;
        let counter = |name| -> Result<u64, StateError> {
            Ok(meta.get(name).map_err(internal)?.map_or(0, |v| v.value()))
        };
        let version = counter("version")?;
        let fence = counter("fence")?;
        Ok(Self {
            state: txn.open_table(STATE).map_err(internal)?,
            expiry: txn.open_table(EXPIRY).map_err(internal)?,
            fences: txn.open_table(FENCES).map_err(internal)?,
            locks: txn.open_table(LOCKS).map_err(internal)?,
            outbox: txn.open_table(OUTBOX).map_err(internal)?,
            meta,
            version,
            fence,
        })
    }

    fn finish(&mut self) -> Result<(), StateError> {
        self.meta
            .insert("version", self.version)
            .map_err(internal)?;
        self.meta.insert("fence", self.fence).map_err(internal)?;
        Ok(())
    }

    /// The key's live version and expiry, as stored.
    fn current(&self, key: &str, now: u64) -> Result<(Option<u64>, u64), StateError> {
        match self.state.get(key).map_err(internal)? {
            Some(guard) => {
                let r = Record::decode(guard.value())?;
                Ok((r.live(now).then_some(r.version), r.expires_ms))
            }
            None => Ok((None, 0)),
        }
    }

    fn fence_of(&self, key: &str) -> Result<u64, StateError> {
        Ok(self
            .fences
            .get(key)
            .map_err(internal)?
            .map_or(0, |v| v.value()))
    }

    /// Plans every operation of one job against the database plus the job's own earlier
    /// operations, then applies them; a failed condition leaves the database untouched.
    fn write(&mut self, ops: &[WriteOp], now: u64) -> Result<(), StateError> {
        let mut seen: HashMap<&str, Current> = HashMap::new();
        let mut plan = Vec::with_capacity(ops.len());
        let mut next = self.version;
        for op in ops {
            let key = op.key();
            let current = match seen.get(key) {
                Some(c) => *c,
                None => Current {
                    version: self.current(key, now)?.0,
                    fence: self.fence_of(key)?,
                },
            };
            let guard = op.guard();
            rules::check(key, guard, current)?;
            let fence = current.fence.max(guard.fence.unwrap_or(0));
            match op {
                WriteOp::Set(set) => {
                    next += 1;
                    seen.insert(
                        key,
                        Current {
                            version: Some(next),
                            fence,
                        },
                    );
                    plan.push(Planned::Set {
                        op: set,
                        version: next,
                    });
                }
                WriteOp::Delete(_) => {
                    seen.insert(
                        key,
                        Current {
                            version: None,
                            fence,
                        },
                    );
                    plan.push(Planned::Delete { key });
                }
            }
        }
        self.version = next;
        for step in plan {
            let key = match step {
                Planned::Set { op, .. } => op.key.as_str(),
                Planned::Delete { key } => key,
            };
            let (_, old_expiry) = self.current(key, now)?;
            if old_expiry != 0 {
                self.expiry.remove((old_expiry, key)).map_err(internal)?;
            }
            match step {
                Planned::Set { op, version } => {
                    let expires = op
                        .ttl
                        .map_or(0, |t| now.saturating_add(t.as_millis() as u64).max(1));
                    self.state
                        .insert(key, encode(version, expires, &op.value).as_slice())
                        .map_err(internal)?;
                    if expires != 0 {
                        self.expiry.insert((expires, key), ()).map_err(internal)?;
                    }
                }
                Planned::Delete { key } => {
                    self.state.remove(key).map_err(internal)?;
                }
            }
        }
        for (key, current) in seen {
            if current.fence > 0 && current.fence > self.fence_of(key)? {
                self.fences.insert(key, current.fence).map_err(internal)?;
            }
        }
        Ok(())
    }

    /// Appends outbox messages after the last entry (a job's writes passed, so they go with it).
    fn outbox_add(&mut self, messages: &[Bytes]) -> Result<(), StateError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut last = self
            .meta
            .get("outbox")
            .map_err(internal)?
            .map_or(0, |v| v.value());
        for m in messages {
            last += 1;
            self.outbox.insert(last, m.as_ref()).map_err(internal)?;
        }
        self.meta.insert("outbox", last).map_err(internal)?;
        Ok(())
    }

    fn outbox_remove(&mut self, ids: &[u64]) -> Result<(), StateError> {
        for id in ids {
            self.outbox.remove(id).map_err(internal)?;
        }
        Ok(())
    }

    fn lock(&mut self, request: &LockRequest, now: u64) -> Result<LockOutcome, StateError> {
        if let Some(guard) = self
            .locks
            .get(request.resource.as_str())
            .map_err(internal)?
        {
            let lease = guard.value();
            if lease.len() >= 16 && u64_at(lease, 8) > now {
                return Ok(LockOutcome::Held);
            }
        }
        self.fence += 1;
        let expires = now.saturating_add(request.expiry.as_millis() as u64);
        let mut lease = Vec::with_capacity(16 + request.owner.len());
        lease.extend_from_slice(&self.fence.to_le_bytes());
        lease.extend_from_slice(&expires.to_le_bytes());
        lease.extend_from_slice(request.owner.as_bytes());
        self.locks
            .insert(request.resource.as_str(), lease.as_slice())
            .map_err(internal)?;
        Ok(LockOutcome::Granted(self.fence))
    }

    fn unlock(
        &mut self,
        resource: &str,
        owner: &str,
        now: u64,
    ) -> Result<UnlockStatus, StateError> {
        let status = match self.locks.get(resource).map_err(internal)? {
            None => UnlockStatus::LockDoesNotExist,
            Some(guard) => {
                let lease = guard.value();
                if lease.len() < 16 || u64_at(lease, 8) <= now {
                    UnlockStatus::LockDoesNotExist
                } else if &lease[16..] != owner.as_bytes() {
                    UnlockStatus::LockBelongsToOthers
                } else {
                    UnlockStatus::Success
                }
            }
        };
        if status == UnlockStatus::Success {
            self.locks.remove(resource).map_err(internal)?;
        }
        Ok(status)
    }

    /// Removes up to `SWEEP_LIMIT` expired keys.
    fn sweep(&mut self, now: u64) -> Result<(), StateError> {
        let due: Vec<(u64, String)> = self
            .expiry
            .range(..(now, ""))
            .map_err(internal)?
            .take(SWEEP_LIMIT)
            .map(|entry| entry.map(|(k, _)| (k.value().0, k.value().1.to_string())))
            .collect::<Result<_, _>>()
            .map_err(internal)?;
        for (at, key) in due {
            self.expiry.remove((at, key.as_str())).map_err(internal)?;
            let (_, expires) = self.current(&key, now)?;
            if expires == at {
                self.state.remove(key.as_str()).map_err(internal)?;
            }
        }
        Ok(())
    }
}
