//! The sampler: once a second it reads herd's metrics (the same text `/metrics` serves), asks
//! the provider for the services, takes the recent requests, and keeps the overview built from
//! this sample and the one before. The dashboard's JSON endpoint and `herd monit` hand out the
//! last overview, so every reader sees the same numbers and none of them costs a render.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::overview::{self, Overview, ServiceView, Snapshot, Window};
use crate::{promtext, recent};

/// The services and their instances now, as the supervisor sees them; handed in by the binary
/// so this crate depends on no building block.
pub type Services = Arc<dyn Fn() -> Vec<ServiceView> + Send + Sync>;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(1);

/// Recent requests included in an overview.
pub const TRACES: usize = 50;

/// Takes samples and keeps the last overview.
pub struct Sampler {
    metrics: PrometheusHandle,
    services: Services,
    /// The previous sample, for deltas.
    previous: Mutex<Option<(Instant, Snapshot)>>,
    latest: Mutex<Arc<Overview>>,
}

impl Sampler {
    /// A sampler over `metrics` and `services`; the first sample is taken at once.
    pub fn new(metrics: PrometheusHandle, services: Services) -> Arc<Self> {
        let s = Arc::new(Self {
            metrics,
            services,
            previous: Mutex::new(None),
            latest: Mutex::new(Arc::new(Overview::default())),
        });
        s.sample();
        s
    }

    /// Takes a sample now and returns the overview it completes.
    pub fn sample(&self) -> Arc<Overview> {
        let text = self.metrics.render();
        let samples = promtext::parse(&text).unwrap_or_else(|why| {
            tracing::warn!("metrics text unreadable for the overview: {why}");
            Vec::new()
        });
        let now = Snapshot::new(samples);
        let at = Instant::now();
        let wall = SystemTime::now();
        let services = (self.services)();
        let traces = recent::latest(TRACES);
        let mut previous = self.previous.lock().expect("sampler poisoned");
        let built = {
            let before = previous.as_ref();
            let window = Window {
                now: &now,
                before: before.map(|(_, s)| s),
                secs: before.map_or(0.0, |(t, _)| at.duration_since(*t).as_secs_f64()),
            };
            Arc::new(overview::build(&window, services, &traces, (wall, at)))
        };
        *previous = Some((at, now));
        drop(previous);
        *self.latest.lock().expect("sampler poisoned") = built.clone();
        built
    }

    /// The overview of the last sample.
    pub fn latest(&self) -> Arc<Overview> {
        self.latest.lock().expect("sampler poisoned").clone()
    }

    /// Samples every [`EVERY`] until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    self.sample();
                }
            }
        }
    }
}
