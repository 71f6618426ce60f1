//! Redis Streams backend tests: metadata and the parsing of Redis's answers (the contract
//! against a server is in `tests/conformance.rs`).

use std::time::Duration;

use redis::Value;

use super::fetch::{entries, read_reply};
use super::*;
use crate::testing::meta;

#[test]
fn defaults_with_only_a_host() {
    let s = RedisStreamsSettings::from_metadata(&meta(&[("redisHost", "cache:6379")])).unwrap();
    assert_eq!(
        s,
        RedisStreamsSettings {
            host: "cache:6379".into(),
            username: None,
            password: None,
            db: 0,
            consumer_id: None,
            processing_timeout: None,
            redeliver_interval: None,
            queue_depth: None,
            concurrency: None,
            max_len_approx: None,
            timeout: Duration::from_secs(5),
        }
    );
    assert_eq!(s.url(), "redis://cache:6379/0");
    assert_eq!(s.group("orders-app"), "orders-app");
}

#[test]
fn dapr_metadata() {
    let s = RedisStreamsSettings::from_metadata(&meta(&[
        ("redisHost", "10.0.0.7:6380"),
        ("redisUsername", "app"),
        ("redisPassword", "p@ss:w/rd"),
        ("redisDB", "3"),
        ("consumerID", "{appID}-workers"),
        ("processingTimeout", "30000"),
        ("redeliverInterval", "2s"),
        ("queueDepth", "10"),
        ("concurrency", "4"),
        ("maxLenApprox", "10000"),
        ("readTimeout", "1500ms"),
        ("enableTLS", "false"),
        ("redisType", "node"),
        ("idleTimeout", "5m"),
    ]))
    .unwrap();
    assert_eq!(s.url(), "redis://app:p%40ss%3Aw%2Frd@10.0.0.7:6380/3");
    assert_eq!(s.group("checkout"), "checkout-workers");
    assert_eq!(s.processing_timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.redeliver_interval, Some(Duration::from_secs(2)));
    assert_eq!(s.queue_depth, Some(10));
    assert_eq!(s.concurrency, Some(4));
    assert_eq!(s.max_len_approx, Some(10000));
    assert_eq!(s.timeout, Duration::from_millis(1500));
    let debug = format!("{s:?}");
    assert!(!debug.contains("p@ss"), "{debug}");
}

#[test]
fn zero_turns_reclaiming_off_and_trimming_off() {
    let s = RedisStreamsSettings::from_metadata(&meta(&[
        ("redisHost", "h:1"),
        ("processingTimeout", "0"),
        ("redeliverInterval", "0s"),
        ("maxLenApprox", "0"),
    ]))
    .unwrap();
    assert_eq!(s.processing_timeout, Some(Duration::ZERO));
    assert_eq!(s.redeliver_interval, Some(Duration::ZERO));
    assert_eq!(s.max_len_approx, None);
}

#[test]
fn bad_metadata_names_its_key() {
    let field = |pairs: &[(&str, &str)]| {
        RedisStreamsSettings::from_metadata(&meta(pairs))
            .unwrap_err()
            .field
    };
    assert_eq!(field(&[]).as_deref(), Some("redisHost"));
    for host in ["cache", "cache:port", ":6379", "cache:70000"] {
        assert_eq!(
            field(&[("redisHost", host)]).as_deref(),
            Some("redisHost"),
            "{host}"
        );
    }
    let with_host = |k: &'static str, v: &'static str| field(&[("redisHost", "h:1"), (k, v)]);
    for (key, bad) in [
        ("redisDB", "one"),
        ("processingTimeout", "soon"),
        ("redeliverInterval", "-5"),
        ("queueDepth", "0"),
        ("concurrency", "many"),
        ("maxLenApprox", "-1"),
        ("readTimeout", "0"),
        ("enableTLS", "true"),
        ("enableTLS", "yes please"),
        ("failover", "true"),
        ("redisType", "cluster"),
    ] {
        assert_eq!(with_host(key, bad).as_deref(), Some(key), "{key}={bad}");
    }
}

#[test]
fn replies_are_parsed() {
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let entry = |id: &str, fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
    let reply = Value::Array(vec![Value::Array(vec![
        bulk("orders"),
        Value::Array(vec![
            entry("1-0", vec![bulk("data"), bulk("a")]),
            entry(
                "2-0",
                vec![bulk("data"), bulk("b"), bulk(EXPIRES_AT), bulk("42")],
            ),
        ]),
    ])]);
    let got = read_reply(reply).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].id.as_str(), &got[0].data[..], got[0].attempt),
        ("1-0", &b"a"[..], 1)
    );
    assert_eq!(got[0].expires_at, None);
    assert_eq!(got[1].expires_at, Some(42));
    assert!(read_reply(Value::Nil).unwrap().is_empty());
    // A claim of an entry trimmed from the stream: skipped.
    let claimed = Value::Array(vec![Value::Array(vec![bulk("3-0"), Value::Nil])]);
    assert!(entries(&claimed, 2).unwrap().is_empty());
    assert!(read_reply(bulk("nonsense")).is_err());
}
