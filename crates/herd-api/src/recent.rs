//! The sidecar API's entries in the dashboard's recent requests: method and route template
//! (never the concrete path, which carries keys), the trace id of a `traceparent` the app sent,
//! status and latency.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use herd_telemetry::recent::{self, Finished, Source};
use herd_telemetry::traceparent::TRACEPARENT;

/// On every matched route (`crate::matched`): runs the request, then records it.
pub async fn record<F>(request: Request, run: impl FnOnce(Request) -> F) -> Response
where
    F: Future<Output = Response>,
{
    let started = Instant::now();
    let target = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| Arc::<str>::from(format!("{} {}", request.method(), p.as_str())));
    let trace_id = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| recent::trace_id_of(v.as_bytes()));
    let response = run(request).await;
    if let Some(target) = target {
        recent::push(Finished::new(
            Source::Api,
            target,
            trace_id,
            response.status().as_u16(),
            started,
            started.elapsed(),
        ));
    }
    response
}
