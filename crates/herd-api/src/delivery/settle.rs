//! Settling a message that leaves a subscription without an acknowledgement of the app: the
//! dead-letter topic (or a logged drop), and the delivery metrics
//! (`herd_pubsub_deliveries_total`, `herd_pubsub_in_flight`).

use std::sync::Arc;

use herd_config::SubscriptionSpec;
use herd_pubsub::{Delivery, Message, PubSub};

use super::{App, Verdict};

/// Why a message the app did not take leaves the subscription.
pub(super) fn why(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Drop => "dropped by the app",
        _ => "failed too often",
    }
}

/// Counts a settled message in `herd_pubsub_deliveries_total` by its outcome.
pub(super) fn count(
    app: &App,
    sub: &SubscriptionSpec,
    outcome: Result<&'static str, herd_pubsub::PubSubError>,
) {
    let outcome = outcome.unwrap_or_else(|e| {
        tracing::warn!("{}: settling a message of {}: {e}", app.service, sub.topic);
        "error"
    });
    metrics::counter!(
        "herd_pubsub_deliveries_total",
        "pubsub" => sub.pubsub.clone(),
        "topic" => sub.topic.clone(),
        "app" => app.service.clone(),
        "outcome" => outcome
    )
    .increment(1);
}

/// A delivery counted in `herd_pubsub_in_flight` from its start until it is dropped, however
/// it ends.
pub(super) struct InFlight(metrics::Gauge);

impl InFlight {
    pub(super) fn gauge(sub: &SubscriptionSpec, app: &str) -> metrics::Gauge {
        metrics::gauge!(
            "herd_pubsub_in_flight",
            "pubsub" => sub.pubsub.clone(),
            "topic" => sub.topic.clone(),
            "app" => app.to_string()
        )
    }

    pub(super) fn start(sub: &SubscriptionSpec, app: &str) -> Self {
        let gauge = Self::gauge(sub, app);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Moves a message the app dropped or kept failing (or that matched no route) to the
/// dead-letter topic, or drops it without one.
pub(super) async fn dead_letter(
    app: &App,
    sub: &SubscriptionSpec,
    broker: &Arc<dyn PubSub>,
    delivery: Box<dyn Delivery>,
    why: &str,
) -> Result<&'static str, herd_pubsub::PubSubError> {
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
