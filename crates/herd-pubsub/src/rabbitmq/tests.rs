//! RabbitMQ backend tests: metadata parsing and message properties as unit tests, and the
//! broker-specific behaviour (reconnects, retry delays, ack timeouts) against a real server.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use lapin::types::{AMQPValue, FieldTable};

use super::consume::attempt;
use super::*;
use crate::broker::Nack;
use crate::testing::{message, meta, next, run_id};

const URL: &str = "amqp://guest:secret@rabbit:5672/%2f";

#[test]
fn defaults_follow_dapr_with_herds_durability() {
    let s = RabbitMqSettings::from_metadata(&meta(&[("connectionString", URL)])).unwrap();
    assert_eq!(s.uri.authority.host, "rabbit");
    assert_eq!(s.uri.vhost, "/");
    assert_eq!(s.uri.query.heartbeat, Some(10));
    assert!(s.durable);
    assert!(!s.deleted_when_unused);
    assert_eq!(s.queue_type, QueueType::Quorum);
    assert!(s.persistent);
    assert_eq!(s.exchange_kind, TopicExchange::Fanout);
    assert_eq!(s.prefetch_count, 0);
    assert!(!s.dead_letter);
    assert_eq!(
        (s.max_len, s.max_len_bytes, s.default_ttl),
        (None, None, None)
    );
    assert_eq!(s.timeout, Duration::from_secs(10));
    // The password stays out of logs.
    let debug = format!("{s:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("rabbit"), "{debug}");
}

#[test]
fn every_key_is_read() {
    let s = RabbitMqSettings::from_metadata(&meta(&[
        ("host", "amqp://localhost?heartbeat=30"),
        ("durable", "False"),
        ("deletedWhenUnused", "1"),
        ("prefetchCount", "8"),
        ("deliveryMode", "1"),
        ("exchangeKind", "topic"),
        ("enableDeadLetter", "true"),
        ("maxLen", "1000"),
        ("maxLenBytes", "1048576"),
        ("ttlInSeconds", "60"),
        ("clientName", "herd"),
        ("timeout", "3s"),
        ("heartBeat", "5s"),
        // Dapr keys herd accepts and does not need.
        ("publisherConfirm", "false"),
        ("requeueInFailure", "true"),
        ("autoAck", "true"),
    ]))
    .unwrap();
    // The URL's own heartbeat wins over heartBeat.
    assert_eq!(s.uri.query.heartbeat, Some(30));
    assert!(!s.durable);
    assert!(s.deleted_when_unused);
    assert_eq!(s.queue_type, QueueType::Classic);
    assert_eq!(s.prefetch_count, 8);
    assert!(!s.persistent);
    assert_eq!(s.exchange_kind, TopicExchange::Topic);
    assert!(s.dead_letter);
    assert_eq!(s.max_len, Some(1000));
    assert_eq!(s.max_len_bytes, Some(1_048_576));
    assert_eq!(s.default_ttl, Some(Duration::from_secs(60)));
    assert_eq!(s.client_name.as_deref(), Some("herd"));
    assert_eq!(s.timeout, Duration::from_secs(3));
    let s = RabbitMqSettings::from_metadata(&meta(&[
        ("connectionString", URL),
        ("heartBeat", "5s"),
        ("queueType", "classic"),
    ]))
    .unwrap();
    assert_eq!(s.uri.query.heartbeat, Some(5));
    assert_eq!(s.queue_type, QueueType::Classic);
}

#[test]
fn bad_metadata_names_its_key() {
    let field = |pairs: &[(&str, &str)]| {
        RabbitMqSettings::from_metadata(&meta(pairs))
            .unwrap_err()
            .field
            .unwrap()
    };
    assert_eq!(field(&[]), "connectionString");
    assert_eq!(
        field(&[("connectionString", "http://x")]),
        "connectionString"
    );
    assert_eq!(field(&[("host", "nope://x")]), "host");
    let with = |k: &'static str, v: &'static str| vec![("connectionString", URL), (k, v)];
    assert_eq!(field(&with("durable", "yes")), "durable");
    assert_eq!(field(&with("deliveryMode", "3")), "deliveryMode");
    assert_eq!(field(&with("prefetchCount", "70000")), "prefetchCount");
    assert_eq!(field(&with("exchangeKind", "headers")), "exchangeKind");
    assert_eq!(field(&with("queueType", "stream")), "queueType");
    assert_eq!(field(&with("maxLen", "-1")), "maxLen");
    assert_eq!(field(&with("ttlInSeconds", "0")), "ttlInSeconds");
    assert_eq!(field(&with("timeout", "0s")), "timeout");
    assert_eq!(field(&with("heartBeat", "soon")), "heartBeat");
    // Quorum queues cannot be transient or auto-deleted.
    assert_eq!(
        field(&[
            ("connectionString", URL),
            ("queueType", "quorum"),
            ("deletedWhenUnused", "true"),
        ]),
        "queueType"
    );
    assert_eq!(
        field(&[
            ("connectionString", URL),
            ("queueType", "quorum"),
            ("durable", "false"),
        ]),
        "queueType"
    );
}

#[test]
fn attempts_come_from_the_delivery_count() {
    let mut headers = FieldTable::default();
    assert_eq!(attempt(false, None), 1);
    assert_eq!(attempt(true, None), 2);
    assert_eq!(attempt(false, Some(&headers)), 1);
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(1));
    assert_eq!(attempt(true, Some(&headers)), 2);
    headers.insert("x-delivery-count".into(), AMQPValue::LongInt(4));
    assert_eq!(attempt(true, Some(&headers)), 5);
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(-3));
    assert_eq!(attempt(true, Some(&headers)), 2);
}

#[test]
fn publish_properties() {
    let s = RabbitMqSettings::from_metadata(&meta(&[
        ("connectionString", URL),
        ("ttlInSeconds", "60"),
    ]))
    .unwrap();
    let mut m = Message {
        data: Bytes::from_static(b"x"),
        id: Some("k1".into()),
        ttl: Some(Duration::from_millis(1500)),
        metadata: BTreeMap::from([
            ("contentType".to_string(), "application/json".to_string()),
            ("priority".to_string(), "3".to_string()),
        ]),
    };
    let p = properties(&s, &m).unwrap();
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(p.message_id().as_ref().map(|v| v.as_str()), Some("k1"));
    assert_eq!(p.expiration().as_ref().map(|v| v.as_str()), Some("1500"));
    assert_eq!(
        p.content_type().as_ref().map(|v| v.as_str()),
        Some("application/json")
    );
    assert_eq!(*p.priority(), Some(3));
    // Without a TTL of its own, a message gets ttlInSeconds.
    m.ttl = None;
    m.id = None;
    let p = properties(&s, &m).unwrap();
    assert_eq!(p.expiration().as_ref().map(|v| v.as_str()), Some("60000"));
    assert_eq!(*p.message_id(), None);
    m.id = Some("k".repeat(300));
    assert!(matches!(properties(&s, &m), Err(PubSubError::Invalid(_))));
}

#[test]
fn names_are_checked() {
    assert_eq!(queue_name("orders", "checkout"), "checkout-orders");
    assert!(check_names("orders", Some("checkout")).is_ok());
    assert!(check_names("", Some("g")).is_err());
    assert!(check_names("t", Some("")).is_err());
    assert!(check_names("amq.direct", None).is_err());
    assert!(check_names(&"t".repeat(200), Some(&"g".repeat(60))).is_err());
}

// Against a broker, when HERD_TEST_AMQP_URL names one; the suite in tests/conformance.rs
// covers the contract, these the RabbitMQ-specific behaviour.

fn server() -> Option<String> {
    let url = std::env::var("HERD_TEST_AMQP_URL").ok();
    if url.is_none() {
        println!("skipped: HERD_TEST_AMQP_URL is not set");
    }
    url
}

async fn broker(url: &str) -> RabbitMq {
    let settings = RabbitMqSettings::from_metadata(&meta(&[
        ("connectionString", url),
        ("clientName", "herd-pubsub unit tests"),
    ]))
    .unwrap();
    RabbitMq::open(settings).await.unwrap()
}

/// Deletes what a test declared.
async fn remove(broker: &RabbitMq, topic: &str, groups: &[&str]) {
    let channel = broker.shared.channel().await.unwrap();
    for group in groups {
        channel
            .queue_delete(queue_name(topic, group).into(), Default::default())
            .await
            .unwrap();
    }
    channel
        .exchange_delete(topic.into(), Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn publishing_to_a_topic_without_groups_is_an_error() {
    let Some(url) = server() else { return };
    let b = broker(&url).await;
    let topic = format!("nobody-unit{}", run_id());
    let err = b.publish(&topic, message("lost")).await.unwrap_err();
    assert!(
        matches!(&err, PubSubError::Unavailable(m) if m.contains("no queue is bound")),
        "{err}"
    );
    // The channel stays usable after a returned message.
    let group = "g";
    let mut c = b
        .consume(&topic, group, ConsumeOptions::default())
        .await
        .unwrap();
    b.publish(&topic, message("kept")).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.data().as_ref(), b"kept");
    d.ack().await.unwrap();
    drop(c);
    remove(&b, &topic, &[group]).await;
}

#[tokio::test]
async fn reconnects_after_the_connection_closed() {
    let Some(url) = server() else { return };
    let b = broker(&url).await;
    let topic = format!("reconnect-unit{}", run_id());
    let group = "g";
    let mut c = b
        .consume(&topic, group, ConsumeOptions::default())
        .await
        .unwrap();
    b.publish(&topic, message("before")).await.unwrap();
    next(&mut c).await.ack().await.unwrap();

    b.close_connection().await;
    // The consumer reports the lost subscription once, then subscribes again.
    let first = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("an answer within 10 s")
        .expect("open");
    assert!(first.is_err(), "a delivery on a closed connection");
    // The publish opens a new connection.
    b.publish(&topic, message("after")).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.data().as_ref(), b"after");
    assert_eq!(d.attempt(), 1);
    d.ack().await.unwrap();
    drop(c);
    remove(&b, &topic, &[group]).await;
}

#[tokio::test]
async fn a_retry_delay_is_honoured_and_an_ack_timeout_requeues() {
    let Some(url) = server() else { return };
    let b = broker(&url).await;
    let topic = format!("delays-unit{}", run_id());
    let group = "g";
    let options = ConsumeOptions {
        max_in_flight: 4,
        ack_timeout: Duration::from_millis(300),
    };
    let mut c = b.consume(&topic, group, options).await.unwrap();
    b.publish(&topic, message("x")).await.unwrap();

    let d = next(&mut c).await;
    assert_eq!(d.attempt(), 1);
    let nacked = Instant::now();
    d.nack(Nack::Retry(Duration::from_millis(400)))
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert!(
        nacked.elapsed() >= Duration::from_millis(400),
        "back after {:?}",
        nacked.elapsed()
    );
    assert_eq!(d.attempt(), 2);

    // Left unanswered past the ack timeout: handed out again, and the late ack fails.
    let again = next(&mut c).await;
    assert_eq!(again.attempt(), 3);
    assert!(d.ack().await.is_err(), "an ack after the ack timeout");
    again.ack().await.unwrap();
    drop(c);
    remove(&b, &topic, &[group]).await;
}

#[tokio::test]
async fn a_dropped_delivery_is_requeued_while_its_consumer_lives() {
    let Some(url) = server() else { return };
    let b = broker(&url).await;
    let topic = format!("dropped-unit{}", run_id());
    let group = "g";
    let mut c = b
        .consume(&topic, group, ConsumeOptions::default())
        .await
        .unwrap();
    b.publish(&topic, message("x")).await.unwrap();
    drop(next(&mut c).await);
    let d = next(&mut c).await;
    assert_eq!(d.data().as_ref(), b"x");
    assert_eq!(d.attempt(), 2);
    d.ack().await.unwrap();
    drop(c);
    remove(&b, &topic, &[group]).await;
}
