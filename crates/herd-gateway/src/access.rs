//! What a proxied request leaves behind once answered: its access-log line, its route's
//! metrics, and its entry in the dashboard's recent requests.
//!
//! The access line (target `herd::access`, one JSON object) is built only when that target is
//! enabled, since formatting it costs as much as proxying the request. Its fields are
//! serialized straight from borrowed values; the rare lines where the pool left endpoints out
//! or the attempts changed a breaker or an ejection go through a map, to which those are added
//! (`skipped`, `skippedUnlisted`, `changes`). Metric handles are registered once per route, so
//! the request path only increments them, and the recent ring gets a small struct, nothing
//! formatted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_telemetry::recent::{self, Finished, Source};
use herd_upstream::{Change, Decisions};
use http::{Method, StatusCode, Uri};

use crate::trace::TraceContext;

/// What the access log records about one request, filled in as it is forwarded.
#[derive(Default)]
pub struct Outcome<'a> {
    /// The route's index, when one matched.
    pub route: Option<usize>,
    /// The upstream the route leads to.
    pub upstream: Option<&'a str>,
    /// The endpoint of the last attempt.
    pub endpoint: Option<SocketAddr>,
    /// Attempts made.
    pub tries: usize,
    /// Endpoints left out (ejected, breaker open) and state changes the attempts caused.
    pub decisions: Decisions,
}

/// Whether access lines are written (someone reads target `herd::access` at info).
pub fn enabled() -> bool {
    tracing::enabled!(target: "herd::access", tracing::Level::INFO)
}

/// One access-log line, serialized straight from borrowed fields (building a
/// `serde_json::Value` first costs a map node and a key string per field). The fields are in
/// the order `serde_json` prints a map's keys, sorted, as earlier lines were.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessLine<'a> {
    /// `ip:port`, or null when no endpoint was tried.
    endpoint: Option<SocketAddr>,
    latency_ms: f64,
    listener: &'a str,
    method: &'a str,
    path: &'a str,
    request_id: &'a str,
    route: Option<usize>,
    status: u16,
    trace_id: &'a str,
    tries: usize,
    upstream: Option<&'a str>,
}

/// Writes the access line of a request (`method`, `uri`) that arrived on `listener`, was
/// answered with `status` and began at `started`.
pub fn log(
    (method, uri): &(Method, Uri),
    listener: &str,
    trace: &TraceContext,
    outcome: &Outcome<'_>,
    status: StatusCode,
    started: Instant,
) {
    let line = AccessLine {
        endpoint: outcome.endpoint,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        listener,
        method: method.as_str(),
        path: uri.path(),
        request_id: trace.request_id_str(),
        route: outcome.route,
        status: status.as_u16(),
        trace_id: trace.trace_id(),
        tries: outcome.tries,
        upstream: outcome.upstream,
    };
    let line = if outcome.decisions.is_empty() {
        serde_json::to_string(&line)
    } else {
        // Skipped endpoints and state changes are rare: added to a map, as a map sorts.
        serde_json::to_value(&line).map(|mut v| {
            annotate(&outcome.decisions, &mut v);
            v.to_string()
        })
    }
    .expect("an access line serializes");
    tracing::info!(target: "herd::access", "{line}");
}

/// Adds to an access-log line what the pool noted, and nothing when nothing was: `skipped`
/// (see [`skipped_json`]), `skippedUnlisted` (a count, when more were skipped than listed) and
/// `changes` (see [`changes_json`]).
fn annotate(decisions: &Decisions, line: &mut serde_json::Value) {
    if let Some(skipped) = skipped_json(decisions) {
        line["skipped"] = skipped;
    }
    if decisions.unlisted() > 0 {
        line["skippedUnlisted"] = decisions.unlisted().into();
    }
    if let Some(changes) = changes_json(decisions) {
        line["changes"] = changes;
    }
}

/// `[{"endpoint": "…", "reason": "ejected"}, …]`, or `None` when nothing was skipped.
fn skipped_json(decisions: &Decisions) -> Option<serde_json::Value> {
    decisions.skipped().next()?;
    Some(
        decisions
            .skipped()
            .map(
                |(a, why)| serde_json::json!({ "endpoint": a.to_string(), "reason": why.as_str() }),
            )
            .collect(),
    )
}

/// `[{"endpoint": "…", "event": "breaker_opened"}, {"endpoint": "…", "event": "ejected",
/// "ejectedMs": 30000}, …]`, or `None` when the request changed nothing.
fn changes_json(decisions: &Decisions) -> Option<serde_json::Value> {
    decisions.changes().next()?;
    Some(
        decisions
            .changes()
            .map(|(a, change)| {
                let endpoint = a.to_string();
                match change {
                    Change::BreakerOpened => {
                        serde_json::json!({ "endpoint": endpoint, "event": "breaker_opened" })
                    }
                    Change::BreakerClosed => {
                        serde_json::json!({ "endpoint": endpoint, "event": "breaker_closed" })
                    }
                    Change::Ejected(ms) => serde_json::json!({
                        "endpoint": endpoint, "event": "ejected", "ejectedMs": ms
                    }),
                }
            })
            .collect(),
    )
}

/// A route's metric handles.
pub struct RouteMetrics {
    /// Requests by status class: 1xx to 5xx.
    by_class: [metrics::Counter; 5],
    duration: metrics::Histogram,
    retries: metrics::Counter,
    /// `route → upstream`, shared by the entries this route adds to the recent requests.
    target: Arc<str>,
}

impl RouteMetrics {
    /// The handles of `route` (`route[0]`, or `none` for requests no route matched), leading
    /// to `upstream`.
    pub fn new(route: String, upstream: String) -> Self {
        let target = Arc::from(format!("{route} → {upstream}"));
        let class = |c: &'static str| {
            metrics::counter!(
                "herd_gateway_requests_total",
                "route" => route.clone(),
                "upstream" => upstream.clone(),
                "class" => c
            )
        };
        Self {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics::histogram!(
                "herd_gateway_request_duration_seconds",
                "route" => route.clone(),
                "upstream" => upstream.clone()
            ),
            retries: metrics::counter!(
                "herd_gateway_retries_total",
                "route" => route,
                "upstream" => upstream
            ),
            target,
        }
    }

    /// Counts a request answered with `status` after `tries` attempts, which began at
    /// `started`, and adds it to the dashboard's recent requests.
    pub fn finished(
        &self,
        status: StatusCode,
        started: Instant,
        tries: usize,
        trace: &TraceContext,
    ) {
        let elapsed = started.elapsed();
        self.record(status, elapsed, tries);
        recent::push(Finished::new(
            Source::Gateway,
            self.target.clone(),
            trace.trace_id().as_bytes().try_into().ok(),
            status.as_u16(),
            started,
            elapsed,
        ));
    }

    fn record(&self, status: StatusCode, elapsed: Duration, tries: usize) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].increment(1);
        self.duration.record(elapsed.as_secs_f64());
        if tries > 1 {
            self.retries.increment(tries as u64 - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use herd_config::{Balance, BreakerConfig, OutlierSpec, Trip};
    use herd_upstream::{Attempt, Places, Pool};
    use serde_json::json;

    use super::*;

    #[test]
    fn access_lines_read_as_before() {
        let line = AccessLine {
            endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            latency_ms: 1.25,
            listener: "main",
            method: "GET",
            path: "/a\"b",
            request_id: "abc",
            route: Some(0),
            status: 200,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            tries: 1,
            upstream: None,
        };
        // The line as a `serde_json::Value` map prints it (sorted keys).
        let map = json!({
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
            "requestId": "abc",
            "listener": "main",
            "method": "GET",
            "path": "/a\"b",
            "route": 0,
            "upstream": null,
            "endpoint": "127.0.0.1:8080",
            "status": 200,
            "latencyMs": 1.25,
            "tries": 1,
        });
        assert_eq!(serde_json::to_string(&line).unwrap(), map.to_string());
    }

    /// A round-robin pool over ports 9000.. whose breakers open after `trip` consecutive
    /// failures, ejecting outliers as `outlier` says.
    fn pool(n: u16, trip: u32, outlier: Option<OutlierSpec>) -> Pool {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect();
        // The receiver keeps the last list after the sender is gone.
        let (_, rx) = tokio::sync::watch::channel(Arc::new(addrs));
        let breaker = BreakerConfig {
            trip: Trip::consecutive_failures(trip),
            ..BreakerConfig::default()
        };
        Pool::new(
            "test".into(),
            rx,
            Balance::RoundRobin,
            Some(breaker),
            Places::default(),
        )
        .with_outlier(outlier)
    }

    /// Reports `attempt` for `target` (chosen by excluding every other endpoint).
    fn report_for(p: &Pool, target: SocketAddr, attempt: Attempt, d: &mut Decisions) {
        let others: Vec<SocketAddr> = p
            .addresses()
            .iter()
            .copied()
            .filter(|a| *a != target)
            .collect();
        let chosen = p.pick(&others, d).unwrap();
        assert_eq!(chosen.addr, target);
        chosen.report(attempt, d);
    }

    #[tokio::test(start_paused = true)]
    async fn decisions_annotate_a_line_only_when_something_was_noted() {
        let d = Decisions::default();
        assert!(skipped_json(&d).is_none() && changes_json(&d).is_none());
        let mut line = json!({ "status": 200 });
        annotate(&d, &mut line);
        assert_eq!(line, json!({ "status": 200 }));

        // Six endpoints' breakers open; the next choice leaves them out, listing four.
        let p = pool(7, 1, None);
        let mut opened = Decisions::default();
        for port in 9000..9006 {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            report_for(&p, addr, Attempt::NoAnswer, &mut opened);
        }
        assert_eq!(
            changes_json(&opened).unwrap()[0],
            json!({ "endpoint": "127.0.0.1:9000", "event": "breaker_opened" })
        );
        let mut d = Decisions::default();
        assert_eq!(p.pick(&[], &mut d).unwrap().addr.port(), 9006);
        let mut line = json!({});
        annotate(&d, &mut line);
        assert_eq!(line["skipped"].as_array().unwrap().len(), 4);
        assert_eq!(
            line["skipped"][0],
            json!({ "endpoint": "127.0.0.1:9000", "reason": "breaker_open" })
        );
        assert_eq!(line["skippedUnlisted"], 2);
        assert!(line["changes"].is_null());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_and_the_endpoint_it_left_out_read_as_before() {
        let spec = OutlierSpec {
            consecutive_5xx: 3,
            base_ejection_time: Duration::from_secs(10),
            ..OutlierSpec::default()
        };
        let p = pool(3, 1000, Some(spec));
        let bad = SocketAddr::from(([127, 0, 0, 1], 9000));
        let mut d = Decisions::default();
        for _ in 0..3 {
            report_for(&p, bad, Attempt::Answered(500), &mut d);
        }
        assert_eq!(
            changes_json(&d).unwrap(),
            json!([{ "endpoint": "127.0.0.1:9000", "event": "ejected", "ejectedMs": 10_000 }])
        );
        let mut d = Decisions::default();
        for _ in 0..12 {
            assert_ne!(p.pick(&[], &mut d).unwrap().addr, bad);
        }
        assert_eq!(
            skipped_json(&d).unwrap(),
            json!([{ "endpoint": "127.0.0.1:9000", "reason": "ejected" }])
        );
    }
}
