//! The plumbing herd's embedded stores share (the state store and the pub/sub log): opening a
//! redb file, one writer thread that takes every queued job into one batch (group commit), a
//! request/answer helper for callers on the runtime, and a periodic job (sweeps).
//!
//! Why a thread: a redb write transaction and its fsync block; one dedicated thread owns all
//! writes so the runtime never blocks and concurrent writers share one commit. The queue is
//! bounded (senders wait when it is full) and the thread ends when every sender is gone.

#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

/// redb's page cache per database. Its default (1 GiB) let herd's memory follow the size of a
/// busy log; the hot data of a store (recent messages, pending deliveries, live keys) is far
/// smaller.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Creates `path`'s directory if needed and opens (or creates) the database.
pub fn create(path: &Path) -> Result<Database, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// Starts the writer thread `name`: it waits for a job, takes every job queued behind it (up to
/// `max_batch`) and hands the batch to `run`, which commits it and answers each job.
pub fn writer<J: Send + 'static>(
    name: &str,
    mut jobs: mpsc::Receiver<J>,
    max_batch: usize,
    mut run: impl FnMut(&mut Vec<J>) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut batch = Vec::with_capacity(max_batch);
            while let Some(first) = jobs.blocking_recv() {
                batch.push(first);
                while batch.len() < max_batch {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                run(&mut batch);
                batch.clear();
            }
        })
        .map(drop)
}

/// Sends the job `make(reply)` to the writer and waits for its answer; `stopped` is the error
/// when the writer is gone.
pub async fn submit<J, T, E>(
    jobs: &mpsc::Sender<J>,
    make: impl FnOnce(oneshot::Sender<Result<T, E>>) -> J,
    stopped: impl Fn() -> E,
) -> Result<T, E> {
    let (tx, rx) = oneshot::channel();
    jobs.send(make(tx)).await.map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

/// Queues `make()` every `period` until the writer is gone; a full queue skips a tick (the
/// writer is busy and the next tick comes soon). Abort the task to stop earlier.
pub fn every<J: Send + 'static>(
    period: Duration,
    jobs: mpsc::Sender<J>,
    make: fn() -> J,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(mpsc::error::TrySendError::Closed(_)) = jobs.try_send(make()) {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_jobs_are_batched_and_answered() {
        let (tx, rx) = mpsc::channel::<(u32, oneshot::Sender<Result<usize, ()>>)>(64);
        // Five jobs wait before the writer starts: they form one batch.
        let answers: Vec<_> = (0..5)
            .map(|i| {
                let (reply, answer) = oneshot::channel();
                tx.try_send((i, reply)).unwrap();
                answer
            })
            .collect();
        writer("test-writer", rx, 16, |batch| {
            let n = batch.len();
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Ok(n));
            }
        })
        .unwrap();
        for a in answers {
            assert_eq!(a.await.unwrap(), Ok(5));
        }
        // A later job is a batch of its own, answered through `submit`.
        assert_eq!(submit(&tx, |r| (9, r), || ()).await, Ok(1));
        drop(tx);
    }
}
