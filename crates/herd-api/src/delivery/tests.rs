//! Unit tests of delivery: reading answers, choosing paths, the request, the inbound
//! policy's outcomes and the backoff.

use super::post::delivery_request;
use super::settle::backoff;
use super::*;

#[test]
fn answers_are_read_as_dapr_reads_them() {
    use http::StatusCode as S;
    assert_eq!(verdict(S::OK, b""), Verdict::Ack);
    assert_eq!(verdict(S::NO_CONTENT, b""), Verdict::Ack);
    assert_eq!(verdict(S::OK, br#"{"status":"SUCCESS"}"#), Verdict::Ack);
    assert_eq!(verdict(S::OK, br#"{"status":"RETRY"}"#), Verdict::Retry);
    assert_eq!(verdict(S::OK, br#"{"status":"DROP"}"#), Verdict::Drop);
    assert_eq!(verdict(S::NOT_FOUND, b""), Verdict::Drop);
    assert_eq!(verdict(S::INTERNAL_SERVER_ERROR, b""), Verdict::Retry);
    assert_eq!(verdict(S::OK, b"not json"), Verdict::Ack);
}

#[test]
fn rules_pick_the_path_by_event_type() {
    let sub = SubscriptionSpec {
        service: "s".into(),
        pubsub: "p".into(),
        topic: "t".into(),
        route: "/default".into(),
        rules: vec![("order.created".into(), "/created".into())],
        dead_letter_topic: None,
        max_in_flight: 1,
        in_order: true,
        max_deliveries: 3,
        bulk: None,
    };
    assert_eq!(path_for(&sub, Some("order.created")), Some("/created"));
    assert_eq!(path_for(&sub, Some("order.paid")), Some("/default"));
    assert_eq!(path_for(&sub, None), Some("/default"));
    let rules_only = SubscriptionSpec {
        route: String::new(),
        ..sub
    };
    assert_eq!(
        path_for(&rules_only, Some("order.created")),
        Some("/created")
    );
    assert_eq!(path_for(&rules_only, Some("order.paid")), None);
    assert_eq!(path_for(&rules_only, None), None);
    // A gRPC app's subscription without any route: everything on the empty path, as daprd.
    let no_routes = SubscriptionSpec {
        rules: vec![],
        ..rules_only
    };
    assert_eq!(path_for(&no_routes, Some("order.paid")), Some(""));
}

#[test]
fn deliveries_carry_dapr_headers() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let addr: SocketAddr = ([127, 0, 0, 1], 8080).into();
    let ce = "application/cloudevents+json";
    let body = Bytes::from_static(b"{}");
    let r = delivery_request(addr, "/orders", "pubsub", ce, Some(tp), body).unwrap();
    assert_eq!(r.method(), http::Method::POST);
    assert_eq!(r.uri(), "http://127.0.0.1:8080/orders");
    let h = r.headers();
    assert_eq!(h["content-type"], "application/cloudevents+json");
    assert_eq!(h["pubsubname"], "pubsub");
    assert_eq!(
        h["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    let r = delivery_request(addr, "/", "other", ce, None, Bytes::new()).unwrap();
    assert!(r.headers().get("traceparent").is_none());
    assert_eq!(r.headers()["pubsubname"], "other");
}

#[test]
fn answers_count_for_the_inbound_policy() {
    assert_eq!(delivery_outcome(&Ok(Verdict::Ack)), Outcome::Success);
    assert_eq!(delivery_outcome(&Ok(Verdict::Retry)), Outcome::Failure);
    assert_eq!(delivery_outcome(&Ok(Verdict::Drop)), Outcome::Permanent);
    assert_eq!(delivery_outcome(&Err(Stopping)), Outcome::Permanent);
}

#[test]
fn backoff_grows_and_is_capped() {
    for attempt in 1..20 {
        let cap =
            Duration::from_millis(100 * (1 << (attempt - 1).min(7))).min(Duration::from_secs(10));
        assert!(backoff(attempt) <= cap);
    }
}
