//! A consumer's task and what it hands out: deliveries over a channel (so `next` is
//! cancel-safe), acks, and nacked entries taken back after their delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fetch::{Entry, Fetcher, entries};
use super::{MAX_BLOCK, Shared, ms, now_ms, query, unavailable};
use crate::broker::{ConsumeOptions, Consumer, Delivery, Nack};
use crate::error::PubSubError;

/// Bounds of the default reclaim interval (a quarter of the minimum idle time).
const MIN_REDELIVER: Duration = Duration::from_millis(50);
const MAX_REDELIVER: Duration = MAX_BLOCK;

/// Starts a consumer of `group` on `topic`: its task fetches over `reader`, the consumer's own
/// connection, and hands deliveries to the returned [`RedisConsumer`].
pub(super) fn start(
    shared: Arc<Shared>,
    topic: &str,
    group: String,
    reader: ConnectionManager,
    options: ConsumeOptions,
) -> RedisConsumer {
    let settings = &shared.settings;
    let room = options
        .max_in_flight
        .min(settings.concurrency.unwrap_or(u32::MAX))
        .max(1) as usize;
    let min_idle = settings.processing_timeout.unwrap_or(options.ack_timeout);
    let every = settings
        .redeliver_interval
        .unwrap_or_else(|| (min_idle / 4).clamp(MIN_REDELIVER, MAX_REDELIVER));
    let batch = settings.queue_depth.unwrap_or(u32::MAX).max(1) as usize;
    let permits = Arc::new(Semaphore::new(room));
    let (out, deliveries) = mpsc::channel(room + 1);
    let (retry_tx, retries) = mpsc::channel(room);
    let sub = Arc::new(Sub {
        shared: shared.clone(),
        topic: topic.to_string(),
        group,
        name: consumer_name(),
        min_idle,
        retries: retry_tx,
    });
    let fetcher = Fetcher::new(sub.clone(), reader, permits, batch, min_idle, every);
    let worker = tokio::spawn(run(fetcher, retries, Out { sub, tx: out }));
    RedisConsumer { deliveries, worker }
}

/// Consumer names: unique per process start and consumer.
fn consumer_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    format!(
        "herd-{}-{start:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the deliveries of one consumer share.
pub(super) struct Sub {
    pub(super) shared: Arc<Shared>,
    pub(super) topic: String,
    pub(super) group: String,
    /// This consumer's name in the group.
    pub(super) name: String,
    /// Idle time after which a pending entry is reclaimed.
    min_idle: Duration,
    /// Nacked deliveries to hand out again.
    retries: mpsc::Sender<Retry>,
}

/// A nacked entry waiting for its delay.
struct Retry {
    id: String,
    attempt: u32,
    due: Instant,
    /// The idle time the nack gave the entry, and when.
    idle: Duration,
    nacked: Instant,
    /// The delivery's slot, kept for the redelivery.
    permit: OwnedSemaphorePermit,
}

/// Hands entries to the consumer.
struct Out {
    sub: Arc<Sub>,
    tx: mpsc::Sender<Result<Box<dyn Delivery>, PubSubError>>,
}

impl Out {
    /// False once the consumer is gone.
    async fn hand_out(&self, entry: Entry, permit: OwnedSemaphorePermit) -> bool {
        if entry.expires_at.is_some_and(|at| at <= now_ms()) {
            let sub = &self.sub;
            if let Err(e) = sub.shared.ack(&sub.topic, &sub.group, &entry.id).await {
                tracing::warn!(topic = %sub.topic, id = %entry.id, "dropping an expired message failed: {e}");
            }
            return true;
        }
        let delivery = RedisDelivery {
            sub: self.sub.clone(),
            id: entry.id,
            data: entry.data,
            attempt: entry.attempt,
            received: Instant::now(),
            permit,
        };
        self.tx.send(Ok(Box::new(delivery))).await.is_ok()
    }

    fn report(&self, e: PubSubError) {
        tracing::warn!(topic = %self.sub.topic, group = %self.sub.group, "Redis consumer: {e}");
        // Deliveries have room by their permits; an error that finds no room is only logged.
        let _ = self.tx.try_send(Err(e));
    }

    /// Takes a nacked entry back (if nobody else did meanwhile) and hands it out again.
    async fn redeliver(&self, retry: Retry) -> bool {
        let sub = &self.sub;
        // The entry has been idle at least this long unless another consumer took it since.
        let untouched =
            (retry.idle + retry.nacked.elapsed()).saturating_sub(Duration::from_millis(1));
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&sub.topic)
            .arg(&sub.group)
            .arg(&sub.name)
            .arg(ms(untouched))
            .arg(&retry.id);
        let claimed =
            match query::<Value>(&sub.shared.conn, &cmd, sub.shared.settings.timeout).await {
                Ok(v) => entries(&v, retry.attempt.saturating_add(1)),
                Err(e) => Err(unavailable(e)),
            };
        match claimed {
            Ok(mut got) => match got.pop() {
                Some(entry) => self.hand_out(entry, retry.permit).await,
                // Reclaimed by another consumer, or trimmed from the stream.
                None => true,
            },
            Err(e) => {
                // Still pending: the group reclaims it once idle for the ack timeout.
                self.report(e);
                true
            }
        }
    }
}

/// The consumer's task: fetches entries and hands them out, and hands nacked entries out again
/// when their delay is over. A fetch in progress is never abandoned for a retry (an abandoned
/// read would strand what it read), only polled later.
async fn run(mut fetcher: Fetcher, mut retries: mpsc::Receiver<Retry>, out: Out) {
    let mut waiting: Vec<Retry> = Vec::new();
    loop {
        let step = fetcher.step();
        tokio::pin!(step);
        let fetched = loop {
            let due = waiting.iter().map(|r| r.due).min();
            tokio::select! {
                fetched = &mut step => break fetched,
                Some(retry) = retries.recv() => waiting.push(retry),
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let now = Instant::now();
                    let (ready, later): (Vec<_>, Vec<_>) =
                        waiting.drain(..).partition(|r| r.due <= now);
                    waiting = later;
                    for retry in ready {
                        if !out.redeliver(retry).await {
                            return;
                        }
                    }
                }
            }
        };
        match fetched {
            Ok(entries) => {
                for (entry, permit) in entries {
                    if !out.hand_out(entry, permit).await {
                        return;
                    }
                }
            }
            Err(e) => out.report(e),
        }
        if out.tx.is_closed() {
            return;
        }
    }
}

/// A consumer of a group: deliveries come from its task over a channel, so [`Consumer::next`]
/// is cancel-safe.
pub(super) struct RedisConsumer {
    deliveries: mpsc::Receiver<Result<Box<dyn Delivery>, PubSubError>>,
    worker: JoinHandle<()>,
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        // Entries read and not answered stay pending and are reclaimed by the group.
        self.worker.abort();
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, PubSubError>> {
        self.deliveries.recv().await
    }
}

struct RedisDelivery {
    sub: Arc<Sub>,
    id: String,
    data: Bytes,
    attempt: u32,
    /// When this consumer got the entry: the entry has been idle at least this long since,
    /// unless another consumer took it.
    received: Instant,
    permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Delivery for RedisDelivery {
    fn data(&self) -> &Bytes {
        &self.data
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    async fn ack(self: Box<Self>) -> Result<(), PubSubError> {
        let sub = &self.sub;
        sub.shared.ack(&sub.topic, &sub.group, &self.id).await
    }

    async fn nack(self: Box<Self>, how: Nack) -> Result<(), PubSubError> {
        let Nack::Retry(delay) = how;
        let this = *self;
        let sub = &this.sub;
        let idle = sub.min_idle.saturating_sub(delay);
        let untouched = this
            .received
            .elapsed()
            .saturating_sub(Duration::from_millis(1));
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&sub.topic)
            .arg(&sub.group)
            .arg(&sub.name)
            .arg(ms(untouched))
            .arg(&this.id)
            .arg("IDLE")
            .arg(ms(idle))
            .arg("JUSTID");
        let claimed: Vec<Value> = query(&sub.shared.conn, &cmd, sub.shared.settings.timeout)
            .await
            .map_err(unavailable)?;
        if claimed.is_empty() {
            // Another consumer reclaimed it (this one took longer than the ack timeout), or it
            // was trimmed: nothing to hand out again here.
            return Ok(());
        }
        let now = Instant::now();
        let retry = Retry {
            id: this.id,
            attempt: this.attempt,
            due: now + delay,
            idle,
            nacked: now,
            permit: this.permit,
        };
        // The consumer may be gone: the entry stays pending and the group reclaims it.
        let _ = sub.retries.send(retry).await;
        Ok(())
    }
}
