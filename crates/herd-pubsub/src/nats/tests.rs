//! JetStream backend tests: metadata, names, topics and message TTLs (the contract against a
//! server is in `tests/conformance.rs`).

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use herd_config::metadata::FieldError;

use super::consume::deliver_policy;
use super::settings::valid_name;
use super::streams::{check_topic, consumer_name, stream_name};
use super::*;
use crate::testing::meta;

fn parse(pairs: &[(&str, &str)]) -> Result<NatsSettings, FieldError> {
    NatsSettings::from_metadata(&meta(pairs))
}

fn field(pairs: &[(&str, &str)]) -> String {
    parse(pairs).unwrap_err().field.unwrap()
}

const URL: (&str, &str) = ("natsURL", "nats://n:4222");

#[test]
fn url_is_required_and_the_rest_defaults() {
    assert_eq!(field(&[]), "natsURL");
    assert_eq!(field(&[("natsURL", " ")]), "natsURL");
    let s = parse(&[URL]).unwrap();
    assert_eq!(s, NatsSettings::new("nats://n:4222"));
    assert_eq!(s.start_at, StartAt::All);
    assert_eq!(s.replicas, 1);
    assert_eq!(s.timeout, Duration::from_secs(5));
    assert!(s.stream_name.is_none() && s.ack_wait.is_none() && s.max_ack_pending.is_none());
}

#[test]
fn dapr_keys_map_to_settings() {
    let s = parse(&[
        URL,
        ("name", "orders-app"),
        ("streamName", "ORDERS"),
        ("deliverPolicy", "sequence"),
        ("startSequence", "42"),
        ("ackPolicy", "explicit"),
        ("ackWait", "30s"),
        ("maxDeliver", "5"),
        ("backOff", "[1s, 2s, 4s]"),
        ("maxAckPending", "100"),
        ("replicas", "3"),
        ("memoryStorage", "true"),
        ("domain", "hub"),
        // Push-consumer and runtime keys are accepted and have no effect.
        ("durableName", "d"),
        ("queueGroupName", "q"),
        ("flowControl", "true"),
        ("heartbeat", "5s"),
        ("rateLimit", "1000"),
        ("concurrency", "parallel"),
    ])
    .unwrap();
    assert_eq!(s.name, "orders-app");
    assert_eq!(s.stream_name.as_deref(), Some("ORDERS"));
    assert_eq!(s.start_at, StartAt::Sequence(42));
    assert_eq!(s.ack_wait, Some(Duration::from_secs(30)));
    assert_eq!(s.max_deliver, Some(5));
    assert_eq!(
        s.backoff,
        [1, 2, 4].map(Duration::from_secs).to_vec(),
        "Dapr's list form"
    );
    assert_eq!(s.max_ack_pending, Some(100));
    assert_eq!(s.replicas, 3);
    assert!(s.memory_storage);
    assert_eq!(s.domain.as_deref(), Some("hub"));
    assert_eq!(
        parse(&[URL, ("backOff", "1s,500ms")]).unwrap().backoff,
        [Duration::from_secs(1), Duration::from_millis(500)]
    );
}

#[test]
fn herd_keys() {
    let s = parse(&[
        URL,
        ("retention", "1h"),
        ("dedupeWindow", "2m"),
        ("timeout", "10s"),
    ])
    .unwrap();
    assert_eq!(s.retention, Duration::from_secs(3600));
    assert_eq!(s.dedupe_window, Duration::from_secs(120));
    assert_eq!(s.timeout, Duration::from_secs(10));
    assert_eq!(field(&[URL, ("timeout", "0s")]), "timeout");
    assert_eq!(field(&[URL, ("retention", "forever")]), "retention");
}

#[test]
fn deliver_policies() {
    let at = |pairs: &[(&str, &str)]| parse(pairs).unwrap().start_at;
    assert_eq!(at(&[URL, ("deliverPolicy", "all")]), StartAt::All);
    assert_eq!(at(&[URL, ("deliverPolicy", "last")]), StartAt::Last);
    assert_eq!(at(&[URL, ("deliverPolicy", "new")]), StartAt::New);
    assert_eq!(
        at(&[URL, ("deliverPolicy", "time"), ("startTime", "1640995200")]),
        StartAt::Time(1640995200)
    );
    assert_eq!(
        field(&[URL, ("deliverPolicy", "sequence")]),
        "startSequence"
    );
    assert_eq!(
        field(&[URL, ("deliverPolicy", "sequence"), ("startSequence", "0")]),
        "startSequence"
    );
    assert_eq!(field(&[URL, ("deliverPolicy", "time")]), "startTime");
    assert_eq!(field(&[URL, ("deliverPolicy", "first")]), "deliverPolicy");
    assert_eq!(
        field(&[URL, ("deliverPolicy", "time"), ("startTime", "yesterday")]),
        "startTime"
    );
    let start = deliver_policy(StartAt::Time(1640995200)).unwrap();
    let DeliverPolicy::ByStartTime { start_time } = start else {
        panic!("{start:?}");
    };
    assert_eq!(start_time.unix_timestamp(), 1640995200);
}

#[test]
fn bad_values_name_their_key() {
    assert_eq!(field(&[URL, ("ackPolicy", "none")]), "ackPolicy");
    assert_eq!(field(&[URL, ("ackPolicy", "all")]), "ackPolicy");
    assert_eq!(field(&[URL, ("ackWait", "soon")]), "ackWait");
    assert_eq!(field(&[URL, ("ackWait", "0s")]), "ackWait");
    assert_eq!(field(&[URL, ("maxDeliver", "many")]), "maxDeliver");
    assert_eq!(field(&[URL, ("maxDeliver", "-2")]), "maxDeliver");
    assert_eq!(
        field(&[URL, ("maxDeliver", "3"), ("backOff", "1s,2s,3s")]),
        "maxDeliver"
    );
    assert_eq!(field(&[URL, ("backOff", "1s,later")]), "backOff");
    assert_eq!(field(&[URL, ("maxAckPending", "-1")]), "maxAckPending");
    assert_eq!(field(&[URL, ("replicas", "0")]), "replicas");
    assert_eq!(field(&[URL, ("replicas", "7")]), "replicas");
    assert_eq!(field(&[URL, ("memoryStorage", "maybe")]), "memoryStorage");
    assert_eq!(field(&[URL, ("streamName", "a.b")]), "streamName");
    assert_eq!(
        field(&[URL, ("domain", "hub"), ("apiPrefix", "$JS.X.API")]),
        "apiPrefix"
    );
    // Unlimited deliveries (-1) and 0 (the server's default) are fine with a backOff.
    assert_eq!(
        parse(&[URL, ("maxDeliver", "-1"), ("backOff", "1s")])
            .unwrap()
            .max_deliver,
        Some(-1)
    );
    assert_eq!(
        parse(&[URL, ("maxDeliver", "0")]).unwrap().max_deliver,
        None
    );
}

#[test]
fn credentials_come_in_pairs() {
    assert_eq!(field(&[URL, ("jwt", "eyJ")]), "seedKey");
    assert_eq!(field(&[URL, ("seedKey", "SUA")]), "jwt");
    assert_eq!(
        field(&[URL, ("tls_client_cert", "/c.pem")]),
        "tls_client_key"
    );
    assert_eq!(
        field(&[URL, ("tls_client_key", "/k.pem")]),
        "tls_client_cert"
    );
    assert_eq!(
        parse(&[URL, ("token", "t0k")]).unwrap().auth,
        NatsAuth::Token("t0k".into())
    );
    let jwt = parse(&[URL, ("jwt", "eyJ"), ("seedKey", "SUA")]).unwrap();
    assert_eq!(
        jwt.auth,
        NatsAuth::Jwt {
            jwt: "eyJ".into(),
            seed: "SUA".into()
        }
    );
    assert!(
        !format!("{jwt:?}").contains("SUA"),
        "secrets stay out of logs"
    );
    assert_eq!(
        parse(&[
            URL,
            ("tls_client_cert", "/c.pem"),
            ("tls_client_key", "/k.pem")
        ])
        .unwrap()
        .auth,
        NatsAuth::TlsClient {
            cert: "/c.pem".into(),
            key: "/k.pem".into()
        }
    );
}

#[test]
fn names_are_valid_and_distinct() {
    assert_eq!(stream_name("orders"), "orders");
    assert_eq!(stream_name("orders.eu"), "orders_2eeu");
    assert_eq!(
        consumer_name("billing", "orders.eu"),
        "billing__orders_2eeu"
    );
    let topics = ["a.b", "a_b", "a_2eb", "a-b", "a b", "ä"];
    let streams: std::collections::BTreeSet<_> = topics.iter().map(|t| stream_name(t)).collect();
    assert_eq!(streams.len(), topics.len(), "{streams:?}");
    assert!(streams.iter().all(|s| valid_name(s)), "{streams:?}");
    // The separator cannot be confused with an escape: `_` in a part is always followed by
    // two hex digits.
    assert_ne!(consumer_name("a_", "b"), consumer_name("a", "_b"));
    assert_ne!(consumer_name("a", "b__c"), consumer_name("a__b", "c"));
}

#[test]
fn topics_must_be_publishable_subjects() {
    for ok in ["orders", "orders.eu", "a-b_c", "x*y"] {
        assert!(check_topic(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "a..b",
        ".a",
        "a.",
        "a.*",
        ">",
        "a b",
        "$JS.API.STREAM.LIST",
        "a\tb",
    ] {
        assert!(
            matches!(check_topic(bad), Err(PubSubError::Invalid(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn message_ttl_needs_a_recent_server_and_whole_seconds() {
    assert!(!supports_message_ttl("2.9.10"));
    assert!(!supports_message_ttl("2.10.22"));
    assert!(supports_message_ttl("2.11.0"));
    assert!(supports_message_ttl("2.12.1-beta.1"));
    assert!(supports_message_ttl("3.0.0"));
    assert!(!supports_message_ttl(""));
    assert_eq!(ttl_header(Duration::from_millis(200)), "1");
    assert_eq!(ttl_header(Duration::from_secs(60)), "60");
    assert_eq!(ttl_header(Duration::from_millis(60_001)), "61");
    assert_eq!(ttl_header(Duration::ZERO), "1");
}
