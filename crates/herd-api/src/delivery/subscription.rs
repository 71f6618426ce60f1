//! A subscription as its delivery tasks share it: the spec and its metric handles
//! (`herd_pubsub_in_flight`, `herd_pubsub_deliveries_total` per outcome), looked up once rather
//! than once per message with the labels copied each time.

use std::ops::Deref;
use std::sync::OnceLock;

use herd_config::SubscriptionSpec;

/// Outcomes a settled message is counted under.
const OUTCOMES: [&str; 6] = [
    "success",
    "retry",
    "dead_lettered",
    "dropped",
    "unrouted",
    "error",
];

/// A subscription of `app` and its metric handles; reads as its [`SubscriptionSpec`].
pub(super) struct Subscription {
    spec: SubscriptionSpec,
    app: String,
    in_flight: metrics::Gauge,
    /// By the index of the outcome in [`OUTCOMES`], registered on first use (a series appears
    /// once something was counted in it).
    outcomes: [OnceLock<metrics::Counter>; OUTCOMES.len()],
}

impl Subscription {
    /// `spec` of `app`; its in-flight gauge is listed (at 0) from here on.
    pub(super) fn new(spec: SubscriptionSpec, app: &str) -> Self {
        let in_flight = metrics::gauge!(
            "herd_pubsub_in_flight",
            "pubsub" => spec.pubsub.clone(),
            "topic" => spec.topic.clone(),
            "app" => app.to_string()
        );
        in_flight.set(0.0);
        Self {
            spec,
            app: app.to_string(),
            in_flight,
            outcomes: Default::default(),
        }
    }

    /// Counts `n` deliveries in flight until the answer is dropped, however they end.
    pub(super) fn in_flight(&self, n: usize) -> InFlight {
        self.in_flight.increment(n as f64);
        InFlight(self.in_flight.clone(), n as f64)
    }

    /// Counts a settled message under `outcome` (one of [`OUTCOMES`]).
    pub(super) fn count(&self, outcome: &'static str) {
        let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) else {
            debug_assert!(false, "outcome {outcome} is not listed");
            return;
        };
        self.outcomes[i]
            .get_or_init(|| {
                metrics::counter!(
                    "herd_pubsub_deliveries_total",
                    "pubsub" => self.spec.pubsub.clone(),
                    "topic" => self.spec.topic.clone(),
                    "app" => self.app.clone(),
                    "outcome" => outcome
                )
            })
            .increment(1);
    }
}

impl Deref for Subscription {
    type Target = SubscriptionSpec;

    fn deref(&self) -> &SubscriptionSpec {
        &self.spec
    }
}

/// Deliveries counted in `herd_pubsub_in_flight` from their start until dropped.
pub(super) struct InFlight(metrics::Gauge, f64);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(self.1);
    }
}
