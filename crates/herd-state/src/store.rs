//! The contract every state backend implements: [`StateStore`] and the values it speaks in.
//!
//! The trait is small on purpose. A backend must read ([`StateStore::get`]) and apply a list of
//! writes all or nothing ([`StateStore::transact`]); single saves and deletes are one-element
//! transactions unless a backend has a faster path. Locks are optional and announced through
//! [`Capabilities`], so the API can answer "not a lock store" instead of failing at run time.
//!
//! Concurrency rules, the same on every backend (they follow Dapr's state API):
//! - a write that carries an ETag succeeds only if the key exists with that ETag, unless the
//!   request asks for `last-write` concurrency, which ignores ETags;
//! - a write without an ETag under explicit `first-write` concurrency creates the key only if it
//!   does not exist (the first writer wins);
//! - otherwise the write is unconditional (last write wins).
//!
//! ETags are decimal version numbers drawn from one counter per store, so a key that is deleted
//! and written again never repeats an ETag a client may still hold.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::StateError;

/// Dapr's `options.concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Not given: ETags are checked when present.
    #[default]
    Unspecified,
    /// `first-write`: ETags are checked; without one, only a missing key may be written.
    FirstWrite,
    /// `last-write`: ETags are ignored.
    LastWrite,
}

/// Dapr's `options.consistency`. What each backend does with it is documented in its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// `eventual` (Dapr's default).
    #[default]
    Eventual,
    /// `strong`.
    Strong,
}

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The bytes as saved (for Dapr clients, a JSON document).
    pub value: Bytes,
    /// The version, handed to clients as the ETag.
    pub etag: String,
    /// When the value expires, if it was saved with a TTL.
    pub expires_at: Option<SystemTime>,
}

/// Conditions shared by saves and deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// The ETag the client read, if it sent one.
    pub etag: Option<String>,
    /// The requested concurrency mode.
    pub concurrency: Concurrency,
    /// A fencing token from a lock grant: the write is refused if the key has already been
    /// written with a higher token.
    pub fence: Option<u64>,
    /// The requested consistency.
    pub consistency: Consistency,
}

/// One save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOp {
    /// The full key (after the API applied any app prefix).
    pub key: String,
    /// The value to store.
    pub value: Bytes,
    /// Expire the value after this long.
    pub ttl: Option<Duration>,
    /// ETag, concurrency, fencing and consistency.
    pub guard: Guard,
}

/// One delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOp {
    /// The full key.
    pub key: String,
    /// ETag, concurrency, fencing and consistency.
    pub guard: Guard,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Upsert a key.
    Set(SetOp),
    /// Remove a key.
    Delete(DeleteOp),
}

impl WriteOp {
    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Set(s) => &s.key,
            WriteOp::Delete(d) => &d.key,
        }
    }

    /// The operation's conditions.
    pub fn guard(&self) -> &Guard {
        match self {
            WriteOp::Set(s) => &s.guard,
            WriteOp::Delete(d) => &d.guard,
        }
    }
}

/// A request for a lease on a named resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// What is locked.
    pub resource: String,
    /// Who asks; only the owner may unlock.
    pub owner: String,
    /// How long the lease lasts unless unlocked first.
    pub expiry: Duration,
}

/// The answer to a [`LockRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    /// The lease is granted with this fencing token, greater than every token the store handed
    /// out before.
    Granted(u64),
    /// Someone else holds the resource.
    Held,
}

/// The answer to an unlock, with Dapr's numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockStatus {
    /// Released.
    Success = 0,
    /// No lease on the resource (never taken, or expired).
    LockDoesNotExist = 1,
    /// The lease belongs to another owner.
    LockBelongsToOthers = 2,
}

/// What a backend supports beyond reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`StateStore::lock`] and [`StateStore::unlock`] work.
    pub lock: bool,
    /// [`StateStore::transact_with_outbox`] and the outbox reads work.
    pub outbox: bool,
}

/// A message written to the store's outbox with a transaction, waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its place in the outbox (ascending in write order).
    pub id: u64,
    /// The message body.
    pub data: Bytes,
}

/// A key/value state backend. Implementations must be safe to share across tasks.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// A short name of the backend for logs and `/v1.0/metadata` (`embedded`, `redis`, …).
    fn kind(&self) -> &'static str;

    /// What the backend supports.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            lock: false,
            outbox: false,
        }
    }

    /// Reads one key; `None` when it does not exist or has expired.
    async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Versioned>, StateError>;

    /// Reads several keys; the answer has one entry per key, in order.
    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key, Consistency::Eventual).await?);
        }
        Ok(out)
    }

    /// Applies every operation or none. The first operation whose condition fails decides the
    /// error; operations see the effects of earlier ones in the same list.
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StateError>;

    /// Saves one key.
    async fn set(&self, op: SetOp) -> Result<(), StateError> {
        self.transact(vec![WriteOp::Set(op)]).await
    }

    /// Deletes one key. Deleting a missing key without an ETag succeeds.
    async fn delete(&self, op: DeleteOp) -> Result<(), StateError> {
        self.transact(vec![WriteOp::Delete(op)]).await
    }

    /// Applies `ops` like [`StateStore::transact`] and, in the same storage transaction, adds
    /// `messages` to the outbox: both happen or neither does (the transactional outbox).
    async fn transact_with_outbox(
        &self,
        _ops: Vec<WriteOp>,
        _messages: Vec<Bytes>,
    ) -> Result<(), StateError> {
        Err(StateError::Unsupported("an outbox"))
    }

    /// The oldest outbox entries, at most `max`.
    async fn outbox_peek(&self, _max: usize) -> Result<Vec<OutboxEntry>, StateError> {
        Err(StateError::Unsupported("an outbox"))
    }

    /// Removes published outbox entries.
    async fn outbox_remove(&self, _ids: Vec<u64>) -> Result<(), StateError> {
        Err(StateError::Unsupported("an outbox"))
    }

    /// Tries to take a lease.
    async fn lock(&self, _request: LockRequest) -> Result<LockOutcome, StateError> {
        Err(StateError::Unsupported("locks"))
    }

    /// Releases a lease held by `owner`.
    async fn unlock(&self, _resource: &str, _owner: &str) -> Result<UnlockStatus, StateError> {
        Err(StateError::Unsupported("locks"))
    }
}
