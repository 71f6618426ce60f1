//! The SERVER span a sidecar API request runs in, a child of the request's `traceparent` (a new
//! trace without one): handlers log with its trace id, and hops they start (a publish, a call to
//! another app through [`herd_telemetry::current_traceparent`]) are its children. Health checks
//! are left out, as they would only add noise.
//!
//! The span is named `<method> <route template>`. The API's listeners start it before routing
//! (`listener.rs`), where the route is not known yet: when the span is exported or a debug line
//! is due, the request carries [`WantRoute`], the layer on every matched route ([`crate::matched`])
//! copies the [`MatchedPath`] into the response, and the span gets its name and `http.route`
//! when it ends. Without an exporter and below debug level nothing of this is built.

use std::borrow::Cow;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::Response;
use herd_telemetry::traceparent::{TRACEPARENT, TRACESTATE};
use herd_telemetry::{Traced, context};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, TraceContextExt};

use crate::AppId;

/// On a request whose route template the span needs: the matched route's layer puts the
/// [`MatchedPath`] into the response's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WantRoute;

/// `from_fn` middleware for routers that add it with `Router::layer` (the mesh listener), where
/// the route is known when the request arrives.
pub(crate) async fn traced(request: Request, next: Next) -> Response {
    serve(request, |request| next.run(request)).await
}

/// Runs `run(request)` inside the request's SERVER span (health checks outside any).
pub(crate) async fn serve<F>(mut request: Request, run: impl FnOnce(Request) -> F) -> Response
where
    F: Future<Output = Response>,
{
    let path = request.uri().path();
    if path.starts_with("/v1.0/healthz") {
        return run(request).await;
    }
    let headers = request.headers();
    let header = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let parent = header(TRACEPARENT).and_then(|tp| context::parse(tp, header(TRACESTATE)));
    let exporting = herd_telemetry::tracer().is_some();
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let method = request.method().clone();
    // Known here when routing came first (a `Router::layer`); else from the response.
    let routed = request.extensions().get::<MatchedPath>().cloned();
    let name = |route: Option<&MatchedPath>| match route {
        Some(r) => format!("{method} {}", r.as_str()),
        None => method.to_string(),
    };
    let hop = Traced::start(
        SpanKind::Server,
        if exporting {
            Cow::Owned(name(routed.as_ref()))
        } else {
            Cow::Borrowed("")
        },
        &context::remote(parent),
        || {
            let mut a = vec![
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", path.to_string()),
                KeyValue::new("url.scheme", "http"),
            ];
            if let Some(r) = &routed {
                a.push(KeyValue::new("http.route", r.as_str().to_string()));
            }
            if let Some(app) = request.extensions().get::<AppId>() {
                a.push(KeyValue::new("herd.app_id", app.0.to_string()));
            }
            a
        },
    );
    let recording = hop.is_recording();
    if routed.is_none() && (recording || debug) {
        request.extensions_mut().insert(WantRoute);
    }
    let mut response = hop
        .wrap(async move {
            let mut response = run(request).await;
            if debug {
                // One debug line per request, written inside the span (so with its trace id).
                let route = response.extensions().get::<MatchedPath>();
                let line = name(route.or(routed.as_ref()));
                tracing::debug!(status = response.status().as_u16(), "{line}");
            }
            if routed.is_none() && !recording {
                response.extensions_mut().remove::<MatchedPath>();
            }
            response
        })
        .await;
    if recording {
        if let Some(route) = response.extensions_mut().remove::<MatchedPath>() {
            let span = hop.context().span();
            span.update_name(name(Some(&route)));
            span.set_attribute(KeyValue::new("http.route", route.as_str().to_string()));
        }
        let status = response.status();
        hop.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            hop.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
            hop.set_error("");
        }
    }
    hop.end();
    response
}
