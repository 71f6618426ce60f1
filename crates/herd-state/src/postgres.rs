//! The PostgreSQL backend (`state.postgresql`), over tokio-postgres with a deadpool pool.
//!
//! Tables, created on first use (under an advisory lock, so several herds starting at once do
//! not race): `<table>` (key, value, version, expires_at, updated_at), `<table>_fences` (key,
//! highest fencing token written) and the sequence `<table>_version` that every write draws its
//! ETag from, so a key deleted and written again never repeats an ETag.
//!
//! A write (single or transactional) is one SQL transaction: each operation locks its row
//! (`SELECT … FOR UPDATE`), checks its conditions and applies itself; the first failed condition
//! rolls everything back. Two writers creating the same missing key both see no row to lock; the
//! primary key decides, and the loser's unique violation is reported as an ETag conflict.
//!
//! Consistency: both `strong` and `eventual` mean a committed transaction on the server herd is
//! connected to (with the server's `synchronous_commit` and replication settings); reads go to
//! the same server, so they see every acknowledged write. Expired rows are invisible to reads and
//! deleted by a sweep every `cleanupIntervalInSeconds`.

pub(crate) mod settings;

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::error::StateError;
use crate::rules::{self, Current};
use crate::store::{Consistency, StateStore, Versioned, WriteOp};
pub use settings::PostgresSettings;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    sql: Sql,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// The statements, with the table name filled in once.
struct Sql {
    get: String,
    bulk_get: String,
    lock_row: String,
    lock_fence: String,
    insert: String,
    update: String,
    upsert: String,
    delete: String,
    raise_fence: String,
}

impl Sql {
    fn new(t: &str) -> Self {
        let live = "(expires_at IS NULL OR expires_at > now())";
        let expires =
            "CASE WHEN $3::bigint > 0 THEN now() + $3::bigint * interval '1 millisecond' END";
        Sql {
            get: format!("SELECT value, version, expires_at FROM {t} WHERE key = $1 AND {live}"),
            bulk_get: format!(
                "SELECT key, value, version, expires_at FROM {t} WHERE key = ANY($1) AND {live}"
            ),
            lock_row: format!("SELECT version, {live} FROM {t} WHERE key = $1 FOR UPDATE"),
            lock_fence: format!("SELECT token FROM {t}_fences WHERE key = $1 FOR UPDATE"),
            insert: format!(
                "INSERT INTO {t} (key, value, version, expires_at) \
                 VALUES ($1, $2, nextval('{t}_version'), {expires})"
            ),
            update: format!(
                "UPDATE {t} SET value = $2, version = nextval('{t}_version'), \
                 expires_at = {expires}, updated_at = now() WHERE key = $1"
            ),
            upsert: format!(
                "INSERT INTO {t} (key, value, version, expires_at) \
                 VALUES ($1, $2, nextval('{t}_version'), {expires}) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version, \
                 expires_at = EXCLUDED.expires_at, updated_at = now()"
            ),
            delete: format!("DELETE FROM {t} WHERE key = $1"),
            raise_fence: format!(
                "INSERT INTO {t}_fences (key, token) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET token = GREATEST({t}_fences.token, EXCLUDED.token)"
            ),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl PostgresStore {
    /// Connects, creates the tables if needed and starts the expiry sweep.
    pub async fn connect(settings: PostgresSettings) -> Result<Self, StateError> {
        let mut connection = settings.connection.clone();
        connection.connect_timeout(settings.timeout);
        let manager = Manager::from_config(
            connection,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_conns)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .build()
            .map_err(unavailable)?;
        let t = &settings.table;
        let mut client = pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[t])
            .await
            .map_err(unavailable)?;
        let index = format!("{}_expires", t.rsplit('.').next().unwrap_or(t));
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, value bytea NOT NULL, \
               version bigint NOT NULL, expires_at timestamptz, \
               updated_at timestamptz NOT NULL DEFAULT now());
             CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at) WHERE expires_at IS NOT NULL;
             CREATE TABLE IF NOT EXISTS {t}_fences (key text PRIMARY KEY, token bigint NOT NULL);
             CREATE SEQUENCE IF NOT EXISTS {t}_version;"
        ))
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        drop(client);

        let sweep_sql = format!(
            "DELETE FROM {t} WHERE ctid IN \
             (SELECT ctid FROM {t} WHERE expires_at < now() LIMIT 1000)"
        );
        let sweep_pool = pool.clone();
        let every = settings.cleanup_interval;
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Ok(client) = sweep_pool.get().await
                    && let Err(e) = client.execute(sweep_sql.as_str(), &[]).await
                {
                    tracing::warn!("postgres state sweep failed: {e}");
                }
            }
        });
        Ok(Self {
            pool,
            sql: Sql::new(t),
            sweeper,
        })
    }
}

fn versioned(value: Vec<u8>, version: i64, expires_at: Option<SystemTime>) -> Versioned {
    Versioned {
        value: Bytes::from(value),
        etag: version.to_string(),
        expires_at,
    }
}

/// Maps a failed statement: a unique violation is two creators racing for one key.
fn write_error(key: &str, e: tokio_postgres::Error) -> StateError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StateError::EtagMismatch {
            key: key.to_string(),
        }
    } else {
        unavailable(e)
    }
}

impl PostgresStore {
    /// Checks and applies one operation inside `tx`.
    async fn apply(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        op: &WriteOp,
    ) -> Result<(), StateError> {
        let key = op.key();
        let guard = op.guard();
        let row = tx
            .query_opt(self.sql.lock_row.as_str(), &[&key])
            .await
            .map_err(unavailable)?;
        let exists = row.is_some();
        let version = row
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| r.get::<_, i64>(0) as u64);
        let mut fence = 0;
        if guard.fence.is_some() {
            // Create the fence row first so that concurrent fenced writers serialise on it.
            tx.execute(self.sql.raise_fence.as_str(), &[&key, &0i64])
                .await
                .map_err(unavailable)?;
            let row = tx
                .query_one(self.sql.lock_fence.as_str(), &[&key])
                .await
                .map_err(unavailable)?;
            fence = row.get::<_, i64>(0) as u64;
        }
        rules::check(key, guard, Current { version, fence })?;
        match op {
            WriteOp::Set(set) => {
                let ttl = set.ttl.map_or(0i64, |t| (t.as_millis() as i64).max(1));
                let statement = if exists {
                    &self.sql.update
                } else if guard.etag.is_none()
                    && guard.concurrency == crate::store::Concurrency::FirstWrite
                {
                    &self.sql.insert
                } else {
                    &self.sql.upsert
                };
                let value: &[u8] = &set.value;
                tx.execute(statement.as_str(), &[&key, &value, &ttl])
                    .await
                    .map_err(|e| write_error(key, e))?;
            }
            WriteOp::Delete(_) => {
                tx.execute(self.sql.delete.as_str(), &[&key])
                    .await
                    .map_err(unavailable)?;
            }
        }
        if let Some(token) = guard.fence {
            tx.execute(self.sql.raise_fence.as_str(), &[&key, &(token as i64)])
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    async fn get(&self, key: &str, _: Consistency) -> Result<Option<Versioned>, StateError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let statement = client
            .prepare_cached(&self.sql.get)
            .await
            .map_err(unavailable)?;
        let row = client
            .query_opt(&statement, &[&key])
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| versioned(r.get(0), r.get(1), r.get(2))))
    }

    async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>, StateError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(self.sql.bulk_get.as_str(), &[&keys])
            .await
            .map_err(unavailable)?;
        let mut found: std::collections::HashMap<String, Versioned> = rows
            .into_iter()
            .map(|r| (r.get(0), versioned(r.get(1), r.get(2), r.get(3))))
            .collect();
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StateError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        for op in &ops {
            // Dropping `tx` on an error rolls the whole transaction back.
            self.apply(&tx, op).await?;
        }
        tx.commit().await.map_err(unavailable)
    }
}
