//! The embedded backend (`state.embedded`, herd's default): a redb database in the data directory.
//! This is the handle callers use ([`Embedded`]) and the file's layout. Every write goes to the
//! store's one writer thread, whose commit path (numbered) is in `embedded/commit.rs`; reads
//! run on tokio's blocking pool in their own read transactions and see the last commit.
//!
//! Consistency: this is a single durable node, so `strong` and `eventual` are the same: every read
//! sees every acknowledged write. Expired values are invisible at once and removed by a sweep
//! every second. Fencing tokens and lock leases live in the same file and survive restarts.

mod commit;
pub(crate) mod settings;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use crate::error::StateError;
use crate::store::{
    Capabilities, Consistency, LockOutcome, LockRequest, OutboxEntry, StateStore, UnlockStatus,
    Versioned, WriteOp,
};
use commit::{Job, MAX_BATCH, Reply, run_batch};

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

/// Jobs waiting for the writer at most; senders wait beyond that (back-pressure).
const QUEUE: usize = 4096;

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

    /// Up to `max` stored keys, in order (expired ones included).
    pub(crate) async fn keys(&self, max: usize) -> Result<Vec<String>, StateError> {
        self.read(move |table, _| {
            table
                .iter()
                .map_err(internal)?
                .take(max)
                .map(|e| e.map(|(k, _)| k.value().to_string()).map_err(internal))
                .collect()
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

#[cfg(test)]
mod tests;
