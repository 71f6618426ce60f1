//! The overview built from two metrics samples: rates, errors and quantiles from their deltas,
//! endpoints filtered by the services' current instances.

use super::*;
use crate::promtext::parse;

fn snap(text: &str) -> Snapshot {
    Snapshot::new(parse(text).unwrap())
}

#[test]
fn quantiles_interpolate_within_the_bucket() {
    let b = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
    assert_eq!(quantile(0.5, &b), Some(0.1));
    assert!((quantile(0.75, &b).unwrap() - 0.15).abs() < 1e-9);
    assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
    // Beyond the last finite bound: that bound.
    assert_eq!(
        quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]),
        Some(0.1)
    );
}

#[test]
fn rates_and_latencies_come_from_deltas_between_samples() {
    let before = snap(concat!(
        "herd_gateway_requests_total{route=\"route[0]\",upstream=\"web\",class=\"2xx\"} 100\n",
        "herd_gateway_requests_total{route=\"route[0]\",upstream=\"web\",class=\"5xx\"} 10\n",
        "herd_gateway_request_duration_seconds_bucket{route=\"route[0]\",upstream=\"web\",le=\"0.01\"} 110\n",
        "herd_gateway_request_duration_seconds_bucket{route=\"route[0]\",upstream=\"web\",le=\"0.1\"} 110\n",
        "herd_gateway_request_duration_seconds_bucket{route=\"route[0]\",upstream=\"web\",le=\"+Inf\"} 110\n",
        "herd_gateway_requests_total{route=\"none\",upstream=\"none\",class=\"4xx\"} 0\n",
    ));
    let now = snap(concat!(
        "herd_gateway_requests_total{route=\"route[0]\",upstream=\"web\",class=\"2xx\"} 140\n",
        "herd_gateway_requests_total{route=\"route[0]\",upstream=\"web\",class=\"5xx\"} 20\n",
        "herd_gateway_request_duration_seconds_bucket{route=\"route[0]\",upstream=\"web\",le=\"0.01\"} 110\n",
        "herd_gateway_request_duration_seconds_bucket{route=\"route[0]\",upstream=\"web\",le=\"0.1\"} 160\n",
        "herd_gateway_request_duration_seconds_bucket{route=\"route[0]\",upstream=\"web\",le=\"+Inf\"} 160\n",
        "herd_gateway_requests_total{route=\"none\",upstream=\"none\",class=\"4xx\"} 0\n",
        "herd_gateway_breaker_state{upstream=\"service web\",endpoint=\"127.0.0.1:1\"} 1\n",
        "herd_pubsub_deliveries_total{pubsub=\"p\",topic=\"t\",app=\"a\",outcome=\"success\"} 7\n",
        "herd_pubsub_deliveries_total{pubsub=\"p\",topic=\"t\",app=\"a\",outcome=\"dead_lettered\"} 2\n",
        "herd_pubsub_in_flight{pubsub=\"p\",topic=\"t\",app=\"a\"} 3\n",
    ));
    let w = Window {
        now: &now,
        before: Some(&before),
        secs: 2.0,
    };
    let at = (std::time::SystemTime::now(), std::time::Instant::now());
    let o = build(&w, Vec::new(), &[], at);
    assert_eq!(o.routes.len(), 1, "the unused `none` route is left out");
    let r = &o.routes[0];
    assert_eq!((r.route.as_str(), r.upstream.as_str()), ("route[0]", "web"));
    assert_eq!(r.requests, 160);
    assert_eq!(r.rps, 25.0);
    assert_eq!(r.errors, 20);
    assert_eq!(r.error_rps, 5.0);
    // 50 new requests, all between 10 and 100 ms.
    assert!((r.p50_ms.unwrap() - 55.0).abs() < 1e-6);
    assert!((r.p99_ms.unwrap() - 99.1).abs() < 1e-6);
    assert_eq!(o.endpoints[0].breaker, "open");
    // A service's endpoints are its instances' ports of now.
    let web = |port| ServiceView {
        name: "web".into(),
        instances: vec![InstanceView {
            port: Some(port),
            ..Default::default()
        }],
        ..Default::default()
    };
    let stale = build(&w, vec![web(2)], &[], at);
    assert!(stale.endpoints.is_empty(), "{:?}", stale.endpoints);
    let live = build(&w, vec![web(1)], &[], at);
    assert_eq!(live.endpoints.len(), 1);
    let s = &o.subscriptions[0];
    assert_eq!((s.delivered, s.dead_letters, s.in_flight), (7, 2, 3));
    assert_eq!(s.rps, 4.5, "new series count from zero");

    let first = build(
        &Window {
            now: &now,
            before: None,
            secs: 0.0,
        },
        Vec::new(),
        &[],
        at,
    );
    assert_eq!(first.routes[0].rps, 0.0);
    assert_eq!(first.routes[0].p50_ms, None);
    assert_eq!(first.interval_secs, 0.0);
}
