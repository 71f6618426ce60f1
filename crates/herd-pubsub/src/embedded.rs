//! The embedded backend (`pubsub.embedded`, herd's default): a durable log per topic in a redb
//! database in the data directory, stored a batch per commit (`embedded/batches.rs`). This is
//! the handle callers use ([`EmbeddedLog`]); every write to the file goes to its one writer
//! thread, whose commit path (numbered) is in `embedded/commit.rs`; the groups' consumption
//! state is in `embedded/groups.rs`, in memory shared by the consumers (which claim and settle
//! there, on their own side) and the writer (which writes it into its commits), and a group's
//! deliveries come from `embedded/consume.rs`.
//!
//! A new group starts at the oldest message still retained, so subscribers that appear after a
//! publish (an app still starting) get it. Messages are removed once every group is past them,
//! or when older than the retention time.

mod batches;
mod commit;
mod consume;
mod groups;
pub(crate) mod settings;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redb::Database;
use tokio::sync::{Notify, mpsc};

use crate::broker::{ConsumeOptions, Consumer, Message, PubSub};
use crate::error::PubSubError;
use commit::{Job, MAX_BATCH, Reply, Writer};
use consume::EmbeddedConsumer;
use groups::Groups;
pub use settings::EmbeddedSettings;

/// Jobs waiting for the writer at most; senders wait beyond that (back-pressure).
const QUEUE: usize = 4096;

/// The embedded pub/sub log.
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    sweeper: tokio::task::JoinHandle<()>,
}

/// What the handle, its consumers and their deliveries share. Its sender keeps the writer
/// running: the writer stops (writing the groups' last changes) once the handle and every
/// consumer and delivery are gone, so no claim or settle comes after that last commit.
struct Shared {
    jobs: mpsc::Sender<Job>,
    /// For reads (claims); every write goes through the writer thread.
    db: Arc<Database>,
    groups: Arc<Mutex<Groups>>,
    wakers: Arc<Wakers>,
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// Per topic: a count of durable publishes and a `Notify` signalled after each.
#[derive(Default)]
struct Wake {
    published: std::sync::atomic::AtomicU64,
    notify: Notify,
}

impl Wake {
    fn published(&self) -> u64 {
        self.published.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[derive(Default)]
struct Wakers(Mutex<HashMap<String, Arc<Wake>>>);

impl Wakers {
    fn of(&self, topic: &str) -> Arc<Wake> {
        let mut map = self.0.lock().expect("poisoned");
        if let Some(wake) = map.get(topic) {
            return wake.clone();
        }
        map.entry(topic.to_string()).or_default().clone()
    }
}

fn internal(e: impl std::fmt::Display) -> PubSubError {
    PubSubError::Internal(e.to_string())
}

impl EmbeddedLog {
    /// Opens (or creates) the log at `path`. Must be called inside a tokio runtime.
    pub fn open(path: &Path, settings: EmbeddedSettings) -> Result<Self, PubSubError> {
        let db = Arc::new(herd_storage::create(path).map_err(PubSubError::Unavailable)?);
        let wakers = Arc::new(Wakers::default());
        let mut writer = Writer::open(db.clone(), wakers.clone(), settings)?;
        let groups = writer.groups();
        let (tx, rx) = mpsc::channel(QUEUE);
        herd_storage::writer("herd-pubsub-writer", rx, MAX_BATCH, move |batch| {
            writer.run_batch(batch)
        })
        .map_err(internal)?;
        let sweeper = herd_storage::every(Duration::from_secs(1), tx.clone(), || Job::Sweep);
        let shared = Arc::new(Shared {
            jobs: tx,
            db,
            groups,
            wakers,
        });
        Ok(Self { shared, sweeper })
    }
}

async fn submit<T>(
    jobs: &mpsc::Sender<Job>,
    job: impl FnOnce(Reply<T>) -> Job,
) -> Result<T, PubSubError> {
    herd_storage::submit(jobs, job, || {
        PubSubError::Unavailable("pub/sub writer stopped".into())
    })
    .await
}

#[async_trait]
impl PubSub for EmbeddedLog {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), PubSubError> {
        let topic = topic.to_string();
        submit(&self.shared.jobs, |reply| {
            Job::Publish(topic, message, reply)
        })
        .await
    }

    async fn consume(
        &self,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, PubSubError> {
        Ok(Box::new(EmbeddedConsumer::new(
            self.shared.clone(),
            topic,
            group,
            options,
        )))
    }
}

#[cfg(test)]
mod tests;
