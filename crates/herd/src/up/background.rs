//! The tasks `herd up` runs beside the building blocks until shutdown: the ready report, the
//! overview sampler behind the dashboard and `herd monit`, the control server, metrics upkeep
//! and the admin listener.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herd_supervisor::{InstanceState, Supervisor};
use herd_telemetry::PrometheusHandle;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::server;
use crate::render;

/// The tasks that run beside the building blocks until shutdown: the ready report, the
/// overview sampler, the control server, metrics upkeep and the admin listener.
pub(super) struct Background {
    /// herd is stopping: cancelled by `herd down`, SIGTERM or SIGINT, and with `stop`.
    pub(super) shutdown: CancellationToken,
    /// Ends every task below: the ready report (through `shutdown`), the control server, the
    /// sampler, upkeep and the admin listener.
    pub(super) stop: CancellationToken,
    /// Every task above, and the control server's connections.
    pub(super) tracker: TaskTracker,
    /// The overview sampler; it holds the supervisor.
    pub(super) sampler: Arc<herd_telemetry::Sampler>,
}

impl Background {
    /// Spawns the tasks, in this order: the ready report, the sampler, the control server,
    /// metrics upkeep, the admin listener.
    pub(super) fn start(
        config_path: &Path,
        started: std::time::Instant,
        supervisor: &Arc<Supervisor>,
        gateway: &Arc<herd_gateway::Gateway>,
        metrics: PrometheusHandle,
        listener: UnixListener,
        admin: Option<std::net::TcpListener>,
    ) -> Self {
        let control_stop = CancellationToken::new();
        // A child of `stop`, so every task here ends on `stop` whatever made herd stop: an
        // instance that never gets ready must not keep the ready report, and herd, waiting.
        let shutdown = control_stop.child_token();
        let tracker = TaskTracker::new();
        tracker.spawn(report_ready(supervisor.clone(), started, shutdown.clone()));
        // The overview behind the dashboard and `herd monit`: a sample every second.
        let sampler = herd_telemetry::Sampler::new(metrics.clone(), services_view(supervisor));
        tracker.spawn(sampler.clone().run(control_stop.clone()));
        let ctx = Arc::new(server::Context {
            supervisor: supervisor.clone(),
            gateway: gateway.clone(),
            config_path: config_path.to_path_buf(),
            shutdown: shutdown.clone(),
            sampler: sampler.clone(),
        });
        tracker.spawn(server::serve(
            listener,
            ctx,
            control_stop.clone(),
            tracker.clone(),
        ));
        tracker.spawn(herd_telemetry::upkeep(
            metrics.clone(),
            control_stop.clone(),
        ));
        if let Some(admin) = admin {
            let serve = herd_telemetry::serve_admin(
                admin,
                metrics,
                sampler.clone(),
                control_stop.clone(),
                tracker.clone(),
            );
            tracker.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!("admin listener failed: {e}");
                }
            });
        }
        Background {
            shutdown,
            stop: control_stop,
            tracker,
            sampler,
        }
    }
}

/// The services as the overview shows them, read from the supervisor at every sample.
fn services_view(supervisor: &Arc<Supervisor>) -> herd_telemetry::sampler::Services {
    use herd_telemetry::overview::{InstanceView, ServiceView};
    let supervisor = supervisor.clone();
    Arc::new(move || {
        supervisor
            .status()
            .into_iter()
            .map(|s| ServiceView {
                ready: s
                    .instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Ready)
                    .count(),
                instances: s
                    .instances
                    .iter()
                    .map(|i| InstanceView {
                        id: i.id,
                        pid: i.pid,
                        port: i.port,
                        state: render::state_name(i.state).into(),
                        uptime_ms: i.uptime_ms,
                        restarts: i.restarts,
                        cpu_percent: i.cpu_percent,
                        memory_bytes: i.memory_bytes,
                    })
                    .collect(),
                name: s.name,
                listen: s.listen,
            })
            .collect()
    })
}

/// Logs once when every instance is first ready, with the time since `herd up` began: the
/// start-up figure (P7) that `bench/` reads. Then releases the pages only start-up used
/// (`trim.rs`).
async fn report_ready(
    supervisor: Arc<Supervisor>,
    started: std::time::Instant,
    stop: CancellationToken,
) {
    // Fine-grained at first (start-up takes milliseconds), coarser if instances take long.
    let mut delay = Duration::from_millis(1);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_millis(100));
        let status = supervisor.status();
        let instances = status.iter().flat_map(|s| &s.instances);
        let total = instances.clone().count();
        if instances.clone().all(|i| i.state == InstanceState::Ready) {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::info!("ready: {total} instance(s) in {ms:.1} ms");
            // Start-up is over: the code only it ran need not stay resident.
            let kb = crate::trim::release();
            tracing::debug!("released {kb} kB of start-up code and read-only data");
            return;
        }
    }
}
