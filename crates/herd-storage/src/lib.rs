//! The plumbing herd's embedded stores share (the state store and the pub/sub log): opening a
//! redb file, one writer thread that takes every queued job into one batch (group commit), a
//! request/answer helper for callers on the runtime, and a periodic job (sweeps).
//!
//! Why a thread: a redb write transaction and its fsync block; one dedicated thread owns all
//! writes so the runtime never blocks and concurrent writers share one commit. The queue is
//! bounded (senders wait when it is full) and the thread ends when every sender is gone.

#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod fuzzing;

use std::path::Path;
use std::time::Duration;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

/// redb's page cache per database. Its default (1 GiB) let herd's memory follow the size of a
/// busy log; the hot data of a store (recent messages, pending deliveries, live keys) is far
/// smaller.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Creates `path`'s directory if needed and opens (or creates) the database.
///
/// Every open verifies the checksum of every page the last commit references (redb's
/// integrity check): a file damaged since it was written is refused with an error naming it,
/// never trusted (a plain open could serve a changed value, or panic on a changed page). It
/// reads the whole file once per start (its cost on a large store is not measured yet).
///
/// A file that was not closed cleanly (herd was killed, the machine lost power) is repaired on
/// the way: the last commit is kept only if every page it wrote checks out, else the one before
/// it becomes current again. Acknowledged writes were fsynced, so only a commit nobody was told
/// about can be dropped. The repair is reported once, as a warning and
/// `herd_storage_repairs_total{file}`.
pub fn create(path: &Path) -> Result<Database, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let unclean = restore_length(path);
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if unclean {
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        tracing::warn!(
            "{}: not closed cleanly; repaired (a commit that was not completely on disk, never \
             acknowledged, is dropped; every acknowledged write is kept)",
            path.display()
        );
        metrics::counter!("herd_storage_repairs_total", "file" => file).increment(1);
    }
    Ok(db)
}

/// redb's file header (its `docs/design.md`): the magic number, the god byte (bit 1: recovery
/// required) and the region geometry.
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
const RECOVERY_REQUIRED: u8 = 2;

/// Whether `header` is redb's and marked "recovery required": the file was not closed cleanly.
fn unclean(header: &[u8; 32]) -> bool {
    header[..9] == MAGIC && header[9] & RECOVERY_REQUIRED != 0
}

/// The length the header of an interrupted file says it has, if that is longer than `len` by
/// a plausible growth (a damaged header claiming terabytes is left to redb to refuse).
fn expected_length(header: &[u8; 32], len: u64) -> Option<u64> {
    if !unclean(header) {
        return None;
    }
    let field = |at: usize| -> Option<u64> {
        Some(u64::from(u32::from_le_bytes(
            header.get(at..at + 4)?.try_into().ok()?,
        )))
    };
    let (page, region_header, region_max) = (field(12)?, field(16)?, field(20)?);
    let (full, trailing) = (field(24)?, field(28)?);
    let full_bytes = region_header.checked_add(region_max)?.checked_mul(page)?;
    let trailing_bytes = match trailing {
        0 => 0,
        t => region_header.checked_add(t)?.checked_mul(page)?,
    };
    let expected = page
        .checked_add(full.checked_mul(full_bytes)?)?
        .checked_add(trailing_bytes)?;
    let plausible = len.saturating_mul(4).saturating_add(64 << 20);
    (expected > len && expected <= plausible).then_some(expected)
}

/// A file whose last commit grew it can come back from a power loss with the new header but
/// without its new length (the header page was overwritten in place; the size change was not
/// yet journaled). redb then fails to open it ("failed to fill whole buffer") instead of falling
/// back to the commit before. Giving the file back the length its header names, as zeros, lets
/// the repair see the interrupted commit's pages as not written and fall back. Only a file that
/// needs recovery is touched, and only by appending.
///
/// Returns whether the file was not closed cleanly.
fn restore_length(path: &Path) -> bool {
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    else {
        return false;
    };
    let mut header = [0u8; 32];
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    if std::io::Read::read_exact(&mut file, &mut header).is_err() {
        return false;
    }
    if let Some(expected) = expected_length(&header, len) {
        tracing::warn!(
            "{}: {len} bytes where its header says {expected}: the end of an interrupted \
             commit was lost; extending it with zeros so the repair falls back to the last \
             complete commit",
            path.display()
        );
        if let Err(e) = file.set_len(expected).and_then(|()| file.sync_all()) {
            tracing::warn!("{}: cannot extend: {e}", path.display());
        }
    }
    unclean(&header)
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

    fn header(god: u8, full: u32, trailing: u32) -> [u8; 32] {
        let mut h = [0u8; 32];
        h[..9].copy_from_slice(&MAGIC);
        h[9] = god;
        for (at, v) in [
            (12, 4096u32),
            (16, 1),
            (20, 256),
            (24, full),
            (28, trailing),
        ] {
            h[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        h
    }

    #[test]
    fn only_an_interrupted_file_shorter_than_its_header_is_extended() {
        // Super-header page, one full region of 1 + 256 pages, a trailing one of 1 + 3.
        let expected = 4096 * (1 + 257 + 4);
        assert_eq!(expected_length(&header(2, 1, 3), 4096 * 20), Some(expected));
        assert_eq!(expected_length(&header(3, 1, 0), 4096), Some(4096 * 258));
        // Long enough already, closed cleanly, not redb, or a claim of terabytes: untouched.
        assert_eq!(expected_length(&header(2, 1, 3), expected), None);
        assert_eq!(expected_length(&header(0, 1, 3), 4096), None);
        let mut other = header(2, 1, 3);
        other[0] = b'R';
        assert_eq!(expected_length(&other, 4096), None);
        assert_eq!(expected_length(&header(2, u32::MAX, 3), 4096), None);
    }

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
