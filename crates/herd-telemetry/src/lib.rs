//! Metrics: one process-wide registry (the `metrics` facade with a Prometheus recorder) and the
//! admin listener that serves it.
//!
//! Building blocks record with `metrics::counter!` / `histogram!` / `gauge!` under names that
//! start with `herd_`; this crate only installs the recorder and renders it. The admin listener
//! answers `GET /metrics` (Prometheus text format) and `GET /healthz`; it listens where
//! `[admin] listen` says, loopback unless configured otherwise. It also serves the dashboard
//! (`GET /`, see [`dashboard`]) and its data (`GET /api/overview`, see [`overview`]).

#![forbid(unsafe_code)]

pub mod dashboard;
pub mod overview;
pub mod promtext;
pub mod recent;
pub mod sampler;

pub use overview::Overview;
pub use sampler::Sampler;

/// The recorder's handle: what [`install`] returns and the sampler and admin listener read.
pub use metrics_exporter_prometheus::PrometheusHandle;

pub mod context;
#[doc(hidden)]
pub mod fuzzing;
pub mod logs;
pub mod otlp;
pub mod traceparent;

pub use context::{Traced, current_traceparent};
pub use otlp::tracer;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder can only be installed already in tests that share a process;
            // the handle stays valid either way.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds until `stop`. The
/// recorder keeps raw samples until then, so without this task memory grows with traffic
/// between scrapes.
pub async fn upkeep(metrics: PrometheusHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => metrics.run_upkeep(),
        }
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn handle(
    metrics: PrometheusHandle,
    sampler: Arc<Sampler>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/metrics" => {
            metrics.run_upkeep();
            text(
                StatusCode::OK,
                metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        path => dashboard::answer(path, &sampler)
            .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain")),
    })
}

/// Serves the admin endpoints on `listener` until `stop`; connections run on `tasks`. The
/// dashboard shows what `sampler` last sampled.
pub async fn serve_admin(
    listener: std::net::TcpListener,
    metrics: PrometheusHandle,
    sampler: Arc<Sampler>,
    stop: CancellationToken,
    tasks: TaskTracker,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!("admin listener on {addr} (dashboard at http://{addr}/, /metrics, /healthz)");
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let sampler = sampler.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                handle(metrics.clone(), sampler.clone(), req)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}
