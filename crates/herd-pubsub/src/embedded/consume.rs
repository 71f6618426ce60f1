//! A group's deliveries from the embedded log: a consumer claims batches and hands them out one
//! by one; a delivery's ack or nack changes the group's state at once. Neither is a job for the
//! writer thread, so neither waits for a commit (with publishers busy, each ends in an fsync):
//! a claim reads the messages in a read transaction on tokio's blocking pool (a read can wait
//! for the disk; the runtime never does) and reserves them in the groups' state
//! (`embedded/groups.rs`); a settle is a change in memory, under the same short lock.
//!
//! A consumer keeps up to a window's worth of claimed messages ready beside the window handed
//! out, and claims more in the background once half of them are gone: a place freed in the
//! window is filled at once, not after a claim's round trip. With a window of 1 (in order) it
//! claims only when the window is free.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::commit::{Claimed, ms, now_ms};
use super::groups::{self, lock};
use super::{Shared, Wake, internal};
use crate::broker::{ConsumeOptions, Consumer, Delivery, Nack};
use crate::error::PubSubError;

/// One consumer of a group: claims batches, hands them out one by one.
///
/// At most `max_in_flight` deliveries are out at once (the window), and at most as many more
/// are claimed and ready, so a stalled app holds two windows' worth of messages in herd at
/// most, and a consumer has one claim running at most. `next` is cancel-safe: a claim started
/// is kept (with the publish count seen before it) until its answer is read, and a window
/// place taken is kept until it is used.
pub(super) struct EmbeddedConsumer {
    shared: Arc<Shared>,
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
    /// A consumer of `group` on `topic`, woken when the topic gets a message.
    pub(super) fn new(
        shared: Arc<Shared>,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Self {
        Self {
            wake: shared.wakers.of(topic),
            shared,
            topic: topic.into(),
            group: group.into(),
            options,
            permits: Arc::new(Semaphore::new(window(options))),
            held: None,
            ready: VecDeque::new(),
            claim: None,
        }
    }

    /// Starts a claim for up to `max` messages. The publish count is read before the claim's
    /// read transaction begins: a publish that snapshot misses raises it.
    fn start_claim(&mut self, max: usize) {
        let published = self.wake.published();
        let shared = self.shared.clone();
        let (topic, group) = (self.topic.clone(), self.group.clone());
        let ack_timeout = ms(self.options.ack_timeout);
        let task = tokio::task::spawn_blocking(move || {
            groups::claim(&shared.db, &shared.groups, &topic, &group, max, ack_timeout)
        });
        self.claim = Some(PendingClaim { task, published });
    }

    /// The delivery of `claimed`, in the window place `permit`.
    fn delivery(&self, claimed: Claimed, permit: OwnedSemaphorePermit) -> Box<dyn Delivery> {
        let (seq, attempt, data) = claimed;
        Box::new(EmbeddedDelivery {
            shared: self.shared.clone(),
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

/// A claim started and not yet answered.
struct PendingClaim {
    task: JoinHandle<Result<Vec<Claimed>, PubSubError>>,
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
            if let Some(pending) = self.claim.as_mut()
                && pending.task.is_finished()
            {
                let answer = (&mut pending.task).await;
                self.claim = None;
                match answer.map_err(internal) {
                    Ok(Ok(batch)) => self.ready.extend(batch),
                    Ok(Err(e)) | Err(e) => return Some(Err(e)),
                }
            }
            if !self.ready.is_empty() {
                if self.claim.is_none() && self.ready.len() <= prefetch / 2 {
                    self.start_claim(prefetch - self.ready.len());
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
                self.start_claim(prefetch.max(1 + self.permits.available_permits()));
            }
            let pending = self.claim.as_mut().expect("a claim was just started");
            let answer = (&mut pending.task).await;
            let PendingClaim { published, .. } = self.claim.take().expect("still pending");
            match answer.map_err(internal) {
                Ok(Err(e)) | Err(e) => return Some(Err(e)),
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
    shared: Arc<Shared>,
    topic: Arc<str>,
    group: Arc<str>,
    seq: u64,
    attempt: u32,
    data: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl EmbeddedDelivery {
    /// Applies the ack or nack to the group's state, then frees the delivery's place in the
    /// window (on drop): the claim the freed place leads to sees this settle. It reaches the
    /// disk with the writer's next commit.
    async fn settle(self: Box<Self>, retry: Option<Duration>) -> Result<(), PubSubError> {
        let at = retry.map(|d| now_ms() + ms(d));
        lock(&self.shared.groups).settle(&self.topic, &self.group, self.seq, at);
        Ok(())
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
