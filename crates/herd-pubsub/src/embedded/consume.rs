//! A group's deliveries from the embedded log: a consumer claims batches from the writer and
//! hands them out one by one; a delivery's ack or nack is a job for the writer too.
//!
//! A consumer keeps up to a window's worth of claimed messages ready beside the window handed
//! out, and claims more in the background once half of them are gone: a place freed in the
//! window is filled at once, not after the writer's next turn (with publishers busy, behind an
//! fsync). With a window of 1 (in order) it claims only when the window is free.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::Wake;
use super::commit::{Claimed, Job};
use crate::broker::{ConsumeOptions, Consumer, Delivery, Nack};
use crate::error::PubSubError;

/// One consumer of a group: claims batches from the writer, hands them out one by one.
///
/// At most `max_in_flight` deliveries are out at once (the window), and at most as many more
/// are claimed and ready, so a stalled app holds two windows' worth of messages in herd at
/// most. `next` is cancel-safe: a claim sent to the writer is kept (with the publish count seen
/// before it) until its answer is read, and a window place taken is kept until it is used.
pub(super) struct EmbeddedConsumer {
    jobs: mpsc::Sender<Job>,
    wake: Arc<Wake>,
    topic: Arc<str>,
    group: Arc<str>,
    options: ConsumeOptions,
    permits: Arc<Semaphore>,
    /// A window place taken while nothing was ready.
    held: Option<OwnedSemaphorePermit>,
    ready: VecDeque<Claimed>,
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
            topic: topic.into(),
            group: group.into(),
            options,
            permits: Arc::new(Semaphore::new(window(options))),
            held: None,
            ready: VecDeque::new(),
            claim: None,
        }
    }

    /// Sends a claim for up to `max` messages.
    async fn send_claim(&mut self, max: usize) -> Result<(), PubSubError> {
        let published = self.wake.published();
        let (reply, answer) = oneshot::channel();
        let job = Job::Claim {
            topic: self.topic.clone(),
            group: self.group.clone(),
            max,
            ack_timeout: self.options.ack_timeout,
            reply,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        self.claim = Some(PendingClaim { answer, published });
        Ok(())
    }

    /// The delivery of `claimed`, in the window place `permit`.
    fn delivery(&self, claimed: Claimed, permit: OwnedSemaphorePermit) -> Box<dyn Delivery> {
        let (seq, attempt, data) = claimed;
        Box::new(EmbeddedDelivery {
            jobs: self.jobs.clone(),
            topic: self.topic.clone(),
            group: self.group.clone(),
            seq,
            attempt,
            data,
            _permit: permit,
        })
    }
}

/// Deliveries out at once, at most.
fn window(options: ConsumeOptions) -> usize {
    options.max_in_flight.max(1) as usize
}

fn stopped() -> PubSubError {
    PubSubError::Unavailable("pub/sub writer stopped".into())
}

/// A claim sent to the writer and not yet answered.
struct PendingClaim {
    answer: oneshot::Receiver<Result<Vec<Claimed>, PubSubError>>,
    published: u64,
}

/// How long a consumer with nothing to do waits before looking again for deliveries whose ack
/// timeout or retry delay has passed (new messages wake it at once).
const IDLE_POLL: Duration = Duration::from_millis(100);

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, PubSubError>> {
        let window = window(self.options);
        // Ready messages kept beside the window (none in order: a message is claimed only once
        // the one before it is settled).
        let prefetch = if window > 1 { window } else { 0 };
        loop {
            // A background claim's answer, if it is in.
            if let Some(pending) = self.claim.as_mut() {
                match pending.answer.try_recv() {
                    Ok(Ok(batch)) => {
                        self.claim = None;
                        self.ready.extend(batch);
                    }
                    Ok(Err(e)) => {
                        self.claim = None;
                        return Some(Err(e));
                    }
                    Err(TryRecvError::Closed) => {
                        self.claim = None;
                        return Some(Err(stopped()));
                    }
                    Err(TryRecvError::Empty) => {}
                }
            }
            if !self.ready.is_empty() {
                if self.claim.is_none() && self.ready.len() <= prefetch / 2 {
                    let max = prefetch - self.ready.len();
                    if let Err(e) = self.send_claim(max).await {
                        return Some(Err(e));
                    }
                }
                let permit = match self.held.take() {
                    Some(p) => p,
                    None => self.permits.clone().acquire_owned().await.ok()?,
                };
                let claimed = self.ready.pop_front().expect("not empty");
                return Some(Ok(self.delivery(claimed, permit)));
            }
            if self.claim.is_none() {
                // Nothing ready: wait for a place in the window before claiming, so a stalled
                // app makes no claims.
                if self.held.is_none() {
                    self.held = Some(self.permits.clone().acquire_owned().await.ok()?);
                }
                let max = prefetch.max(1 + self.permits.available_permits());
                if let Err(e) = self.send_claim(max).await {
                    return Some(Err(e));
                }
            }
            let pending = self.claim.as_mut().expect("a claim was just sent");
            let answer = (&mut pending.answer).await;
            let PendingClaim { published, .. } = self.claim.take().expect("still pending");
            match answer {
                Err(_) => return Some(Err(stopped())),
                Ok(Err(e)) => return Some(Err(e)),
                Ok(Ok(batch)) if batch.is_empty() => {
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
                Ok(Ok(batch)) => self.ready.extend(batch),
            }
        }
    }
}

struct EmbeddedDelivery {
    jobs: mpsc::Sender<Job>,
    topic: Arc<str>,
    group: Arc<str>,
    seq: u64,
    attempt: u32,
    data: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl EmbeddedDelivery {
    /// Queues the ack or nack, frees the delivery's place in the window, then waits for the
    /// writer's answer.
    ///
    /// The place is freed once the job is queued rather than once it is answered: the writer
    /// applies jobs in the order they were queued, so this settle lands before any claim the
    /// freed place leads to, and the consumer claims its next message in the same writer batch
    /// as this ack.
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
