//! The aggregation behind the overview: two samples of herd's own metrics a moment apart,
//! read into the view types of `overview.rs`.
//!
//! Rates are counter deltas over the time between the samples, p50/p99 come from the deltas of
//! histogram buckets (interpolated within a bucket, as Prometheus' `histogram_quantile` does),
//! so they describe the last interval, not the whole run.

use std::collections::{BTreeMap, HashMap};

use super::{
    EndpointView, Overview, PublishView, RouteView, ServiceView, StoreView, SubscriptionView,
    TraceView,
};
use crate::promtext::Sample;
use crate::recent::Finished;

/// A series: metric name and labels as rendered.
type Key = (String, Vec<(String, String)>);

/// One sample of every metric, indexed by series.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_name: BTreeMap<String, Vec<Sample>>,
    values: HashMap<Key, f64>,
}

impl Snapshot {
    /// Indexes `samples`.
    pub fn new(samples: Vec<Sample>) -> Self {
        let mut s = Snapshot::default();
        for sample in samples {
            s.values
                .insert((sample.name.clone(), sample.labels.clone()), sample.value);
            s.by_name
                .entry(sample.name.clone())
                .or_default()
                .push(sample);
        }
        s
    }

    fn series(&self, name: &str) -> &[Sample] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Counter totals and deltas per group of label values.
#[derive(Debug, Default, Clone, Copy)]
struct Agg {
    total: f64,
    delta: f64,
}

/// Two snapshots and the seconds between them.
pub struct Window<'a> {
    /// The newer one.
    pub now: &'a Snapshot,
    /// The older one, absent on the first sample.
    pub before: Option<&'a Snapshot>,
    /// Seconds between them.
    pub secs: f64,
}

impl Window<'_> {
    /// How much a counter series grew over the window (its value, if it appeared in it; a
    /// reset counts from zero).
    fn delta(&self, s: &Sample) -> f64 {
        let Some(before) = self.before else {
            return 0.0;
        };
        match before.values.get(&(s.name.clone(), s.labels.clone())) {
            Some(&old) if s.value >= old => s.value - old,
            _ => s.value,
        }
    }

    fn rate(&self, delta: f64) -> f64 {
        if self.secs > 0.0 {
            delta / self.secs
        } else {
            0.0
        }
    }

    /// Totals and deltas of `name` summed per values of `keys`, over series `keep` accepts.
    fn sum_by(
        &self,
        name: &str,
        keys: &[&str],
        keep: impl Fn(&Sample) -> bool,
    ) -> BTreeMap<Vec<String>, Agg> {
        let mut out: BTreeMap<Vec<String>, Agg> = BTreeMap::new();
        for s in self.now.series(name).iter().filter(|s| keep(s)) {
            let group = keys
                .iter()
                .map(|k| s.label(k).unwrap_or_default().to_string())
                .collect();
            let a = out.entry(group).or_default();
            a.total += s.value;
            a.delta += self.delta(s);
        }
        out
    }

    /// The last value of gauge `name` per values of `keys` (summed within a group).
    fn gauge_by(&self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
        self.sum_by(name, keys, |_| true)
            .into_iter()
            .map(|(k, a)| (k, a.total))
            .collect()
    }

    /// p50 and p99 in milliseconds of histogram `name` (seconds) over the window, per values
    /// of `keys`.
    fn quantiles_by(
        &self,
        name: &str,
        keys: &[&str],
    ) -> BTreeMap<Vec<String>, (Option<f64>, Option<f64>)> {
        let mut buckets: BTreeMap<Vec<String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in self.now.series(&format!("{name}_bucket")) {
            let Some(le) = s.label("le").and_then(|l| {
                if l == "+Inf" {
                    Some(f64::INFINITY)
                } else {
                    l.parse().ok()
                }
            }) else {
                continue;
            };
            let group = keys
                .iter()
                .map(|k| s.label(k).unwrap_or_default().to_string())
                .collect();
            buckets.entry(group).or_default().push((le, self.delta(s)));
        }
        buckets
            .into_iter()
            .map(|(k, mut b)| {
                b.sort_by(|x, y| x.0.total_cmp(&y.0));
                let ms = |q| quantile(q, &b).map(|s| s * 1000.0);
                (k, (ms(0.5), ms(0.99)))
            })
            .collect()
    }
}

/// The `q` quantile of cumulative `buckets` (upper bound, count), sorted by bound: linear
/// within the bucket the rank falls in; the highest finite bound if it falls in `+Inf`.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let frac = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * frac);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

fn count(x: f64) -> u64 {
    x.max(0.0).round() as u64
}

fn routes(w: &Window) -> Vec<RouteView> {
    let keys = ["route", "upstream"];
    let all = w.sum_by("herd_gateway_requests_total", &keys, |_| true);
    let errors = w.sum_by("herd_gateway_requests_total", &keys, |s| {
        s.label("class") == Some("5xx")
    });
    let retries = w.sum_by("herd_gateway_retries_total", &keys, |_| true);
    let q = w.quantiles_by("herd_gateway_request_duration_seconds", &keys);
    all.into_iter()
        // Requests no route matched are shown only once there were some.
        .filter(|(k, a)| k[0] != "none" || a.total > 0.0)
        .map(|(k, a)| {
            let e = errors.get(&k).copied().unwrap_or_default();
            let (p50_ms, p99_ms) = q.get(&k).copied().unwrap_or_default();
            RouteView {
                requests: count(a.total),
                rps: w.rate(a.delta),
                errors: count(e.total),
                error_rps: w.rate(e.delta),
                retries: count(retries.get(&k).map_or(0.0, |r| r.total)),
                p50_ms,
                p99_ms,
                route: k[0].clone(),
                upstream: k[1].clone(),
            }
        })
        .collect()
}

/// Whether `e` is an endpoint of now: the gateway's series of a replaced instance's port stay
/// in the registry, so a service's endpoints are kept only while an instance (or the shared
/// socket) has that address. Upstreams that are not services are kept whole.
fn current(e: &EndpointView, services: &[ServiceView]) -> bool {
    let Some(name) = e.upstream.strip_prefix("service ") else {
        return true;
    };
    let Some(service) = services.iter().find(|s| s.name == name) else {
        return true;
    };
    service.listen.as_deref() == Some(e.endpoint.as_str())
        || service.instances.iter().any(|i| {
            i.port
                .is_some_and(|p| e.endpoint == format!("127.0.0.1:{p}"))
        })
}

fn endpoints(w: &Window) -> Vec<EndpointView> {
    let keys = ["upstream", "endpoint"];
    let attempts = w.sum_by("herd_gateway_endpoint_attempts_total", &keys, |_| true);
    let failures = w.sum_by("herd_gateway_endpoint_attempts_total", &keys, |s| {
        s.label("outcome") == Some("failure")
    });
    let ejections = w.sum_by("herd_gateway_ejections_total", &keys, |_| true);
    let healthy = w.gauge_by("herd_gateway_endpoint_healthy", &keys);
    let breakers = w.gauge_by("herd_gateway_breaker_state", &keys);
    let mut all: Vec<Vec<String>> = breakers
        .keys()
        .chain(attempts.keys())
        .chain(healthy.keys())
        .cloned()
        .collect();
    all.sort();
    all.dedup();
    all.into_iter()
        .map(|k| EndpointView {
            breaker: match breakers.get(&k).copied().unwrap_or(0.0) as u8 {
                1 => "open",
                2 => "half-open",
                _ => "closed",
            }
            .into(),
            attempts_rps: w.rate(attempts.get(&k).map_or(0.0, |a| a.delta)),
            failures: count(failures.get(&k).map_or(0.0, |a| a.total)),
            ejections: count(ejections.get(&k).map_or(0.0, |a| a.total)),
            healthy: healthy.get(&k).map(|h| *h > 0.0),
            upstream: k[0].clone(),
            endpoint: k[1].clone(),
        })
        .collect()
}

fn publishers(w: &Window) -> Vec<PublishView> {
    let keys = ["pubsub"];
    let all = w.sum_by("herd_pubsub_publish_total", &keys, |_| true);
    let ok = w.sum_by("herd_pubsub_publish_total", &keys, |s| {
        s.label("outcome") == Some("ok")
    });
    all.into_iter()
        .map(|(k, a)| {
            let good = ok.get(&k).map_or(0.0, |o| o.total);
            PublishView {
                published: count(good),
                rps: w.rate(a.delta),
                errors: count(a.total - good),
                pubsub: k[0].clone(),
            }
        })
        .collect()
}

fn subscriptions(w: &Window) -> Vec<SubscriptionView> {
    let keys = ["pubsub", "topic", "app"];
    let name = "herd_pubsub_deliveries_total";
    let by =
        |outcome: &'static str| w.sum_by(name, &keys, move |s| s.label("outcome") == Some(outcome));
    let all = w.sum_by(name, &keys, |_| true);
    let (ok, retry, dead, dropped) = (
        by("success"),
        by("retry"),
        by("dead_lettered"),
        by("dropped"),
    );
    let in_flight = w.gauge_by("herd_pubsub_in_flight", &keys);
    let mut groups: Vec<Vec<String>> = all.keys().chain(in_flight.keys()).cloned().collect();
    groups.sort();
    groups.dedup();
    let total =
        |m: &BTreeMap<Vec<String>, Agg>, k: &Vec<String>| count(m.get(k).map_or(0.0, |a| a.total));
    groups
        .into_iter()
        .map(|k| SubscriptionView {
            delivered: total(&ok, &k),
            rps: w.rate(all.get(&k).map_or(0.0, |a| a.delta)),
            retries: total(&retry, &k),
            dead_letters: total(&dead, &k),
            dropped: total(&dropped, &k),
            in_flight: count(in_flight.get(&k).copied().unwrap_or(0.0)),
            pubsub: k[0].clone(),
            topic: k[1].clone(),
            app: k[2].clone(),
        })
        .collect()
}

/// Where a row kind's figures come from: kind, requests counter, duration histogram, the label
/// naming the target, and which requests failed.
type Source<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a dyn Fn(&Sample) -> bool,
);

fn stores(w: &Window) -> Vec<StoreView> {
    let mut out = Vec::new();
    let backend_error = |s: &Sample| s.label("outcome") == Some("error");
    let server_error = |s: &Sample| s.label("class") == Some("5xx");
    let sources: [Source; 3] = [
        (
            "state",
            "herd_state_requests_total",
            "herd_state_request_seconds",
            "store",
            &backend_error,
        ),
        (
            "lock",
            "herd_lock_requests_total",
            "herd_lock_request_seconds",
            "store",
            &backend_error,
        ),
        (
            "invoke",
            "herd_invoke_requests_total",
            "herd_invoke_request_duration_seconds",
            "app",
            &server_error,
        ),
    ];
    for (kind, requests, seconds, label, failed) in sources {
        let keys = [label];
        let all = w.sum_by(requests, &keys, |_| true);
        let errors = w.sum_by(requests, &keys, failed);
        let q = w.quantiles_by(seconds, &keys);
        out.extend(all.into_iter().map(|(k, a)| {
            let (p50_ms, p99_ms) = q.get(&k).copied().unwrap_or_default();
            StoreView {
                kind: kind.into(),
                requests: count(a.total),
                rps: w.rate(a.delta),
                errors: count(errors.get(&k).map_or(0.0, |e| e.total)),
                p50_ms,
                p99_ms,
                store: k[0].clone(),
            }
        }));
    }
    out
}

/// The overview of `window`, with `services` and the `recent` requests, taken at `now`
/// (wall-clock time and `Instant` of one moment).
pub fn build(
    window: &Window,
    services: Vec<ServiceView>,
    recent: &[Finished],
    now: (std::time::SystemTime, std::time::Instant),
) -> Overview {
    let endpoints = endpoints(window)
        .into_iter()
        .filter(|e| current(e, &services))
        .collect();
    Overview {
        endpoints,
        time_ms: now
            .0
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        interval_secs: if window.before.is_some() {
            window.secs
        } else {
            0.0
        },
        services,
        routes: routes(window),
        publishers: publishers(window),
        subscriptions: subscriptions(window),
        stores: stores(window),
        traces: recent.iter().map(|f| TraceView::new(f, now)).collect(),
    }
}
