//! The sampler: once a second it reads herd's metrics (the same text `/metrics` serves), asks
//! the provider for the services, takes the recent requests, and keeps the overview built from
//! this sample and the one before. The dashboard's JSON endpoint and `herd monit` hand out the
//! last overview, so every reader sees the same numbers and none of them costs a render.
//!
//! It samples only while someone watches: it starts with the first reader and stops after
//! [`WATCHED`] without one; a reader that finds it stopped gets a sample taken at once (its
//! rates cover the time since the sample before) and starts it again. A herd nobody looks at
//! spends no CPU on rendering and parsing metrics text, and keeps none of that code resident.

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

/// How long the sampler keeps sampling after the last reader.
pub const WATCHED: Duration = Duration::from_secs(60);

/// Recent requests included in an overview.
pub const TRACES: usize = 50;

/// Takes samples and keeps the last overview.
pub struct Sampler {
    metrics: PrometheusHandle,
    services: Services,
    /// The previous sample, for deltas.
    previous: Mutex<Option<(Instant, Snapshot)>>,
    latest: Mutex<Arc<Overview>>,
    /// When the overview was last read, if ever (tokio's clock, so tests can run on paused
    /// time).
    read: Mutex<Option<tokio::time::Instant>>,
}

impl Sampler {
    /// A sampler over `metrics` and `services`; the first sample is taken at once.
    pub fn new(metrics: PrometheusHandle, services: Services) -> Arc<Self> {
        let s = Arc::new(Self {
            metrics,
            services,
            previous: Mutex::new(None),
            latest: Mutex::new(Arc::new(Overview::default())),
            read: Mutex::new(None),
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

    /// The overview of the last sample; one taken now when the sampler had stopped for want of
    /// readers.
    pub fn latest(&self) -> Arc<Overview> {
        let now = tokio::time::Instant::now();
        let last_read = self.read.lock().expect("sampler poisoned").replace(now);
        if last_read.is_none_or(|t| now.duration_since(t) >= WATCHED) {
            return self.sample();
        }
        self.latest.lock().expect("sampler poisoned").clone()
    }

    /// Whether a reader asked within [`WATCHED`].
    fn watched(&self) -> bool {
        self.read
            .lock()
            .expect("sampler poisoned")
            .is_some_and(|t| t.elapsed() < WATCHED)
    }

    /// Samples every [`EVERY`] while watched, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if self.watched() {
                        self.sample();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A sampler whose services count the samples taken.
    fn counting() -> (Arc<Sampler>, Arc<AtomicUsize>) {
        let taken = Arc::new(AtomicUsize::new(0));
        let count = taken.clone();
        let services: Services = Arc::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
            Vec::new()
        });
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        (Sampler::new(metrics, services), taken)
    }

    /// Lets the sampler's task run through `secs` seconds of paused time.
    async fn pass(secs: u64) {
        for _ in 0..secs * 10 {
            tokio::time::advance(Duration::from_millis(100)).await;
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sampling_runs_only_while_someone_reads() {
        let (sampler, taken) = counting();
        assert_eq!(taken.load(Ordering::SeqCst), 1, "the first sample at once");
        let stop = CancellationToken::new();
        let task = tokio::spawn(sampler.clone().run(stop.clone()));
        pass(10).await;
        assert_eq!(
            taken.load(Ordering::SeqCst),
            1,
            "no samples before a reader"
        );
        sampler.latest();
        assert_eq!(
            taken.load(Ordering::SeqCst),
            2,
            "the first reader gets a fresh sample"
        );
        pass(5).await;
        let watched = taken.load(Ordering::SeqCst);
        assert!(watched >= 6, "sampling every second once read: {watched}");
        // A reader within the window reads the kept overview.
        sampler.latest();
        assert_eq!(taken.load(Ordering::SeqCst), watched);
        pass(WATCHED.as_secs() + 5).await;
        let idle = taken.load(Ordering::SeqCst);
        pass(20).await;
        assert_eq!(
            taken.load(Ordering::SeqCst),
            idle,
            "no samples without readers"
        );
        sampler.latest();
        assert_eq!(
            taken.load(Ordering::SeqCst),
            idle + 1,
            "a late reader gets a fresh sample"
        );
        pass(5).await;
        assert!(
            taken.load(Ordering::SeqCst) >= idle + 5,
            "sampling again once read"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
