//! A group's deliveries from the embedded log: a consumer claims batches from the writer and
//! hands them out one by one; a delivery's ack or nack is a job for the writer too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::Wake;
use super::commit::{Claimed, Job};
use crate::broker::{ConsumeOptions, Consumer, Delivery, Nack};
use crate::error::PubSubError;

/// One consumer of a group: claims batches from the writer, hands them out one by one.
///
/// `next` is cancel-safe: a claim sent to the writer is kept (with its permits and the publish
/// count seen before it) until its answer is read, so a cancelled `next` loses no delivery.
pub(super) struct EmbeddedConsumer {
    jobs: mpsc::Sender<Job>,
    wake: Arc<Wake>,
    topic: String,
    group: String,
    options: ConsumeOptions,
    permits: Arc<Semaphore>,
    ready: VecDeque<(Claimed, OwnedSemaphorePermit)>,
    claim: Option<PendingClaim>,
}

impl EmbeddedConsumer {
    /// A consumer of `group` on `topic`, woken by `wake` when the topic gets a message.
    pub(super) fn new(
        jobs: mpsc::Sender<Job>,
        wake: Arc<Wake>,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Self {
        Self {
            jobs,
            wake,
            topic: topic.to_string(),
            group: group.to_string(),
            options,
            permits: Arc::new(Semaphore::new(options.max_in_flight.max(1) as usize)),
            ready: VecDeque::new(),
            claim: None,
        }
    }
}

/// A claim sent to the writer and not yet answered.
struct PendingClaim {
    answer: oneshot::Receiver<Result<Vec<Claimed>, PubSubError>>,
    permits: Vec<OwnedSemaphorePermit>,
    published: u64,
}

/// How long a consumer with nothing to do waits before looking again for deliveries whose ack
/// timeout or retry delay has passed (new messages wake it at once).
const IDLE_POLL: Duration = Duration::from_millis(100);

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, PubSubError>> {
        loop {
            if let Some(((seq, attempt, data), permit)) = self.ready.pop_front() {
                return Some(Ok(Box::new(EmbeddedDelivery {
                    jobs: self.jobs.clone(),
                    topic: self.topic.clone(),
                    group: self.group.clone(),
                    seq,
                    attempt,
                    data,
                    _permit: permit,
                })));
            }
            if self.claim.is_none() {
                // Wait for room: at most max_in_flight deliveries are out at once.
                let first = self.permits.clone().acquire_owned().await.ok()?;
                let mut permits = vec![first];
                while let Ok(p) = self.permits.clone().try_acquire_owned() {
                    permits.push(p);
                }
                let published = self.wake.published();
                let (reply, answer) = oneshot::channel();
                let job = Job::Claim {
                    topic: self.topic.clone(),
                    group: self.group.clone(),
                    max: permits.len(),
                    ack_timeout: self.options.ack_timeout,
                    reply,
                };
                if self.jobs.send(job).await.is_err() {
                    return Some(Err(PubSubError::Unavailable(
                        "pub/sub writer stopped".into(),
                    )));
                }
                self.claim = Some(PendingClaim {
                    answer,
                    permits,
                    published,
                });
            }
            let pending = self.claim.as_mut().expect("a claim was just sent");
            let answer = (&mut pending.answer).await;
            let PendingClaim {
                permits, published, ..
            } = self.claim.take().expect("still pending");
            match answer {
                Err(_) => {
                    return Some(Err(PubSubError::Unavailable(
                        "pub/sub writer stopped".into(),
                    )));
                }
                Ok(Err(e)) => return Some(Err(e)),
                Ok(Ok(batch)) if batch.is_empty() => {
                    drop(permits);
                    // Register before comparing, so a publish right now is not missed.
                    let woken = self.wake.notify.notified();
                    tokio::pin!(woken);
                    woken.as_mut().enable();
                    if self.wake.published() == published {
                        tokio::select! {
                            _ = woken => {}
                            _ = tokio::time::sleep(IDLE_POLL) => {}
                        }
                    }
                }
                Ok(Ok(batch)) => {
                    self.ready.extend(batch.into_iter().zip(permits));
                }
            }
        }
    }
}

struct EmbeddedDelivery {
    jobs: mpsc::Sender<Job>,
    topic: String,
    group: String,
    seq: u64,
    attempt: u32,
    data: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl EmbeddedDelivery {
    /// Queues the ack or nack, frees the delivery's place in the window, then waits for the
    /// commit.
    ///
    /// The place is freed once the job is queued rather than once it is committed: the writer
    /// applies jobs in the order they were queued, so this settle lands before any claim the
    /// freed place leads to, and the consumer claims its next message in the same writer batch
    /// as this ack instead of one commit later.
    async fn settle(self: Box<Self>, retry: Option<Duration>) -> Result<(), PubSubError> {
        let EmbeddedDelivery {
            jobs,
            topic,
            group,
            seq,
            _permit: permit,
            ..
        } = *self;
        let stopped = || PubSubError::Unavailable("pub/sub writer stopped".into());
        let (reply, answer) = oneshot::channel();
        let job = Job::Settle {
            topic,
            group,
            seq,
            retry,
            reply,
        };
        jobs.send(job).await.map_err(|_| stopped())?;
        drop(permit);
        answer.await.map_err(|_| stopped())?
    }
}

#[async_trait]
impl Delivery for EmbeddedDelivery {
    fn data(&self) -> &Bytes {
        &self.data
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    async fn ack(self: Box<Self>) -> Result<(), PubSubError> {
        self.settle(None).await
    }

    async fn nack(self: Box<Self>, how: Nack) -> Result<(), PubSubError> {
        let Nack::Retry(delay) = how;
        self.settle(Some(delay)).await
    }
}
