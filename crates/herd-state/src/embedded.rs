//! The embedded backend (`state.embedded`, herd's default): a redb database in the data directory.
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
//! Reads run on tokio's blocking pool in their own read transactions and see the last commit.
//!
//! Consistency: this is a single durable node, so `strong` and `eventual` are the same: every read
//! sees every acknowledged write. Expired values are invisible at once and removed by a sweep
//! every second. Fencing tokens and lock leases live in the same file and survive restarts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::error::StateError;
use crate::rules::{self, Current};
use crate::store::{
    Capabilities, Consistency, LockOutcome, LockRequest, OutboxEntry, StateStore, UnlockStatus,
    Versioned, WriteOp,
};

/// Key → `[version u64 LE][expires at, ms since the epoch, 0 = never, u64 LE][value]`.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// `(expires at ms, key)` for keys saved with a TTL, so the sweep reads only what is due.
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
/// Key → the highest fencing token it was written with; kept when the key is deleted.
const FENCES: TableDefinition<&str, u64> = TableDefinition::new("fences");
/// Resource → `[token u64 LE][expires at ms u64 LE][owner]`.
const LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("locks");
/// Outbox entry number → message, written with a transaction and removed once published.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Counters: `version` (the last ETag issued), `fence` (the last fencing token) and `outbox`
/// (the last outbox entry number).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Jobs committed together at most; bounds the latency a large batch adds to its first job.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer at most; senders wait beyond that (back-pressure).
const QUEUE: usize = 4096;
/// Expired keys removed per sweep transaction at most.
const SWEEP_LIMIT: usize = 1000;

type Reply<T> = oneshot::Sender<Result<T, StateError>>;

enum Job {
    Write(Vec<WriteOp>, Vec<Bytes>, Reply<()>),
    OutboxRemove(Vec<u64>, Reply<()>),
    Lock(LockRequest, Reply<LockOutcome>),
    Unlock(String, String, Reply<UnlockStatus>),
    Sweep,
}

/// The embedded store. Dropping it stops the sweeper; the writer thread ends once the last
/// in-flight request is answered.
pub struct Embedded {
    db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

fn internal(e: impl std::fmt::Display) -> StateError {
    StateError::Internal(e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// A decoded value record.
struct Record<'a> {
    version: u64,
    expires_ms: u64,
    value: &'a [u8],
}

impl<'a> Record<'a> {
    fn decode(bytes: &'a [u8]) -> Result<Self, StateError> {
        if bytes.len() < 16 {
            return Err(internal("truncated record"));
        }
        Ok(Record {
            version: u64_at(bytes, 0),
            expires_ms: u64_at(bytes, 8),
            value: &bytes[16..],
        })
    }

    fn live(&self, now: u64) -> bool {
        self.expires_ms == 0 || self.expires_ms > now
    }

    fn to_versioned(&self) -> Versioned {
        Versioned {
            value: Bytes::copy_from_slice(self.value),
            etag: self.version.to_string(),
            expires_at: (self.expires_ms != 0)
                .then(|| UNIX_EPOCH + Duration::from_millis(self.expires_ms)),
        }
    }
}

fn encode(version: u64, expires_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(value);
    out
}

impl Embedded {
    /// Opens (or creates) the database at `path`. Must be called inside a tokio runtime.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let db = herd_storage::create(path).map_err(StateError::Unavailable)?;
        let txn = db.begin_write().map_err(internal)?;
        {
            txn.open_table(STATE).map_err(internal)?;
            txn.open_table(EXPIRY).map_err(internal)?;
            txn.open_table(FENCES).map_err(internal)?;
            txn.open_table(LOCKS).map_err(internal)?;
            txn.open_table(META).map_err(internal)?;
            txn.open_table(OUTBOX).map_err(internal)?;
        }
        txn.commit().map_err(internal)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer_db = db.clone();
        herd_storage::writer("herd-state-writer", rx, MAX_BATCH, move |batch| {
            run_batch(&writer_db, batch)
        })
        .map_err(internal)?;
        let sweeper = herd_storage::every(Duration::from_secs(1), tx.clone(), || Job::Sweep);
        Ok(Self {
            db,
            jobs: tx,
            sweeper,
        })
    }

    async fn submit<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StateError> {
        herd_storage::submit(&self.jobs, job, || {
            StateError::Unavailable("state writer stopped".into())
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&str, &[u8]>, u64) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(STATE).map_err(internal)?;
            f(&table, now_ms())
        })
        .await
        .map_err(internal)?
    }
}

fn read_one(
    table: &redb::ReadOnlyTable<&str, &[u8]>,
    key: &str,
    now: u64,
) -> Result<Option<Versioned>, StateError> {
    let Some(guard) = table.get(key).map_err(internal)? else {
        return Ok(None);
    };
    let record = Record::decode(guard.value())?;
    Ok(record.live(now).then(|| record.to_versioned()))
}

#[async_trait]
impl StateStore for Embedded {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            lock: true,
            outbox: true,
        }
    }

    async fn get(&self, key: &str, _: Consistency) -> Result<Option<Versioned>, StateError> {
        let key = key.to_string();
        self.read(move |table, now| read_one(table, &key, now))
            .await
    }

    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError> {
        let keys = keys.to_vec();
        self.read(move |table, now| keys.iter().map(|k| read_one(table, k, now)).collect())
            .await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StateError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.submit(|reply| Job::Write(ops, Vec::new(), reply))
            .await
    }

    async fn transact_with_outbox(
        &self,
        ops: Vec<WriteOp>,
        messages: Vec<Bytes>,
    ) -> Result<(), StateError> {
        self.submit(|reply| Job::Write(ops, messages, reply)).await
    }

    async fn outbox_peek(&self, max: usize) -> Result<Vec<OutboxEntry>, StateError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(OUTBOX).map_err(internal)?;
            table
                .iter()
                .map_err(internal)?
                .take(max)
                .map(|e| {
                    let (k, v) = e.map_err(internal)?;
                    Ok(OutboxEntry {
                        id: k.value(),
                        data: Bytes::copy_from_slice(v.value()),
                    })
                })
                .collect()
        })
        .await
        .map_err(internal)?
    }

    async fn outbox_remove(&self, ids: Vec<u64>) -> Result<(), StateError> {
        self.submit(|reply| Job::OutboxRemove(ids, reply)).await
    }

    async fn lock(&self, request: LockRequest) -> Result<LockOutcome, StateError> {
        self.submit(|reply| Job::Lock(request, reply)).await
    }

    async fn unlock(&self, resource: &str, owner: &str) -> Result<UnlockStatus, StateError> {
        let (resource, owner) = (resource.to_string(), owner.to_string());
        self.submit(|reply| Job::Unlock(resource, owner, reply))
            .await
    }
}

/// An answer computed inside the transaction, sent only after the commit.
enum Answer {
    Write(Reply<()>, Result<(), StateError>),
    Lock(Reply<LockOutcome>, Result<LockOutcome, StateError>),
    Unlock(Reply<UnlockStatus>, Result<UnlockStatus, StateError>),
}

fn run_batch(db: &Database, batch: &mut Vec<Job>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Concurrency, Guard, SetOp};

    fn set(key: &str, value: &str, etag: Option<String>) -> SetOp {
        SetOp {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            ttl: None,
            guard: Guard {
                etag,
                concurrency: Concurrency::FirstWrite,
                ..Guard::default()
            },
        }
    }

    #[tokio::test]
    async fn writes_survive_reopening_and_etags_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Embedded::open(&path).unwrap();
        store.set(set("a", "1", None)).await.unwrap();
        let first = store.get("a", Consistency::Strong).await.unwrap().unwrap();
        drop(store);
        // The writer thread closes the file once its queue is closed, a moment after the drop.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let store = loop {
            match Embedded::open(&path) {
                Ok(s) => break s,
                Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let again = store.get("a", Consistency::Strong).await.unwrap().unwrap();
        assert_eq!(again, first);
        store.set(set("b", "2", None)).await.unwrap();
        let b = store.get("b", Consistency::Strong).await.unwrap().unwrap();
        assert!(b.etag.parse::<u64>().unwrap() > first.etag.parse::<u64>().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_compare_and_set_has_one_winner_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Embedded::open(&dir.path().join("s.redb")).unwrap());
        store.set(set("k", "0", None)).await.unwrap();
        let etag = store
            .get("k", Consistency::Strong)
            .await
            .unwrap()
            .unwrap()
            .etag;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let (store, etag) = (store.clone(), etag.clone());
            tasks.spawn(async move { store.set(set("k", &i.to_string(), Some(etag))).await });
        }
        let results = tasks.join_all().await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| matches!(e, StateError::EtagMismatch { .. }))
        );
    }

    #[tokio::test]
    async fn expired_keys_are_invisible_then_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(&dir.path().join("s.redb")).unwrap();
        let mut op = set("t", "1", None);
        op.ttl = Some(Duration::from_millis(1));
        store.set(op).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.get("t", Consistency::Strong).await.unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "never expired");
            tokio::task::yield_now().await;
        }
        // The sweep removes the record itself, not only hides it.
        let db = store.db.clone();
        let gone = || {
            let txn = db.begin_read().unwrap();
            txn.open_table(STATE).unwrap().get("t").unwrap().is_none()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gone() {
            assert!(std::time::Instant::now() < deadline, "never swept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
