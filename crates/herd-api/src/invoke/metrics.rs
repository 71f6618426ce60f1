//! Invocation metrics, `herd_invoke_requests_total{app, target, class}` and
//! `herd_invoke_request_duration_seconds{app, target}`. For the apps this herd runs the handles
//! are kept (one [`AppMetrics`] per service, registered on first use), so a call neither builds
//! labels nor looks the series up; calls to other app ids (peers', unknown ones) look them up
//! each time.

use std::sync::OnceLock;
use std::time::Instant;

use axum::http::StatusCode;
use metrics::{Counter, Histogram};

/// Where a call went: `local` or `peer`.
const TARGETS: [&str; 2] = ["local", "peer"];
/// Status classes.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One app's metric handles, by target and status class.
#[derive(Default)]
pub(super) struct AppMetrics {
    requests: [[OnceLock<Counter>; CLASSES.len()]; TARGETS.len()],
    seconds: [OnceLock<Histogram>; TARGETS.len()],
}

/// Records one call to `app` that went to `target` and ended with `status`, through `cached`
/// when the app is one of this herd's.
pub(super) fn record(
    cached: Option<&AppMetrics>,
    app: &str,
    target: &'static str,
    started: Instant,
    status: StatusCode,
) {
    let class = usize::from((status.as_u16() / 100).clamp(1, 5) - 1);
    let seconds = started.elapsed().as_secs_f64();
    match (cached, TARGETS.iter().position(|t| *t == target)) {
        (Some(m), Some(t)) => {
            m.requests[t][class]
                .get_or_init(|| counter(app, target, class))
                .increment(1);
            m.seconds[t]
                .get_or_init(|| histogram(app, target))
                .record(seconds);
        }
        _ => {
            counter(app, target, class).increment(1);
            histogram(app, target).record(seconds);
        }
    }
}

fn counter(app: &str, target: &'static str, class: usize) -> Counter {
    metrics::counter!("herd_invoke_requests_total", "app" => app.to_string(), "target" => target, "class" => CLASSES[class])
}

fn histogram(app: &str, target: &'static str) -> Histogram {
    metrics::histogram!("herd_invoke_request_duration_seconds", "app" => app.to_string(), "target" => target)
}
