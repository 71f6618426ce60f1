//! What follows an app's verdict on one message: acknowledge, hand it back to the broker with
//! a backoff, or move it to the dead-letter topic (or drop it without one), and count it in
//! `herd_pubsub_deliveries_total`. Single and bulk deliveries end here alike, and so does a
//! message no route takes (rules only, none matching), which is never sent to the app.

use std::sync::Arc;
use std::time::Duration;

use herd_pubsub::{Delivery, Message, Nack, PubSub, PubSubError};
use herd_resilience::Policy;

use super::subscription::Subscription;
use super::{App, Verdict};

/// Backoff before redelivery `attempt + 1`: exponential from 100 ms, capped at 10 s, full
/// jitter.
pub(super) fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(100)
        .saturating_mul(1 << attempt.saturating_sub(1).min(7))
        .min(Duration::from_secs(10));
    cap.mul_f64(fastrand::f64())
}

/// Settles `delivery` by `verdict`; `refused` is the delay the policy's breaker asked for when
/// it refused the POST.
pub(super) async fn settle(
    app: &App,
    sub: &Subscription,
    broker: &Arc<dyn PubSub>,
    policy: &Policy,
    delivery: Box<dyn Delivery>,
    verdict: Verdict,
    refused: Option<Duration>,
) {
    // The policy's retries were used up (not refused by its breaker): dead-letter now when the
    // subscription has a topic for it.
    let exhausted = refused.is_none() && policy.retry().is_some();
    let outcome = match verdict {
        Verdict::Ack => delivery.ack().await.map(|()| "success"),
        Verdict::Retry if exhausted && sub.dead_letter_topic.is_some() => {
            dead_letter(app, sub, broker, delivery, why(verdict)).await
        }
        Verdict::Retry if delivery.attempt() < sub.max_deliveries => {
            let delay = refused.unwrap_or_else(|| backoff(delivery.attempt()));
            delivery.nack(Nack::Retry(delay)).await.map(|()| "retry")
        }
        Verdict::Retry | Verdict::Drop => {
            dead_letter(app, sub, broker, delivery, why(verdict)).await
        }
    };
    count(app, sub, outcome);
}

/// Settles a message that matched no rule of a subscription without a default route: as daprd
/// does, it is not delivered but goes to the dead-letter topic when there is one, else it is
/// acknowledged (outcome `unrouted`).
pub(super) async fn unrouted(
    app: &App,
    sub: &Subscription,
    broker: &Arc<dyn PubSub>,
    delivery: Box<dyn Delivery>,
) {
    let outcome = match &sub.dead_letter_topic {
        Some(_) => dead_letter(app, sub, broker, delivery, "matched no route").await,
        None => {
            tracing::debug!(
                "{}: message on {}/{} matched no route; acknowledged without delivery",
                app.service,
                sub.pubsub,
                sub.topic
            );
            delivery.ack().await.map(|()| "unrouted")
        }
    };
    count(app, sub, outcome);
}

/// Why a message the app did not take leaves the subscription.
fn why(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Drop => "dropped by the app",
        _ => "failed too often",
    }
}

/// Counts a settled message in `herd_pubsub_deliveries_total` by its outcome.
fn count(app: &App, sub: &Subscription, outcome: Result<&'static str, PubSubError>) {
    let outcome = outcome.unwrap_or_else(|e| {
        tracing::warn!("{}: settling a message of {}: {e}", app.service, sub.topic);
        "error"
    });
    sub.count(outcome);
}

/// Moves a message the app dropped or kept failing (or that matched no route) to the
/// dead-letter topic, or drops it without one.
async fn dead_letter(
    app: &App,
    sub: &Subscription,
    broker: &Arc<dyn PubSub>,
    delivery: Box<dyn Delivery>,
    why: &str,
) -> Result<&'static str, PubSubError> {
    match &sub.dead_letter_topic {
        Some(topic) => {
            let message = Message {
                data: delivery.data().clone(),
                id: None,
                ttl: None,
                metadata: Default::default(),
            };
            // Publish first: if herd dies in between, the message is redelivered, not lost.
            broker.publish(topic, message).await?;
            delivery.ack().await?;
            Ok("dead_lettered")
        }
        None => {
            tracing::warn!(
                "{}: message on {}/{} {why} after {} attempt(s); no dead-letter topic, dropped",
                app.service,
                sub.pubsub,
                sub.topic,
                delivery.attempt()
            );
            delivery.ack().await?;
            Ok("dropped")
        }
    }
}
