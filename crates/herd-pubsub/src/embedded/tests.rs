//! What only the embedded log promises (the shared contract is in `tests/conformance.rs`):
//! redelivery after the ack timeout, idempotency keys, TTLs, and reopening the file.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::broker::{Delivery, Nack};
use crate::testing::{embedded_log, message, next_within, options};

/// The next delivery, within 5 s.
async fn next(consumer: &mut Box<dyn Consumer>) -> Box<dyn Delivery> {
    next_within(consumer, Duration::from_secs(5)).await
}

#[tokio::test]
async fn unacknowledged_messages_come_back_with_a_higher_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let log = embedded_log(dir.path());
    log.publish("t", message("x")).await.unwrap();
    let mut c = log
        .consume("t", "g", options(1, Duration::from_millis(50)))
        .await
        .unwrap();
    let first = next(&mut c).await;
    assert_eq!(first.attempt(), 1);
    // Dropped without an answer: redelivered after the ack timeout.
    drop(first);
    let second = next(&mut c).await;
    assert_eq!(second.attempt(), 2);
    second
        .nack(Nack::Retry(Duration::from_millis(10)))
        .await
        .unwrap();
    let third = next(&mut c).await;
    assert_eq!(third.attempt(), 3);
    third.ack().await.unwrap();
    log.publish("t", message("y")).await.unwrap();
    let after = next(&mut c).await;
    assert_eq!(
        after.data(),
        &Bytes::from("y"),
        "an acked message is not delivered again"
    );
}

#[tokio::test]
async fn an_idempotency_key_stores_a_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = embedded_log(dir.path());
    for _ in 0..3 {
        let mut m = message("once");
        m.id = Some("order-7".into());
        log.publish("t", m).await.unwrap();
    }
    log.publish("t", message("other")).await.unwrap();
    let mut c = log
        .consume("t", "g", ConsumeOptions::default())
        .await
        .unwrap();
    assert_eq!(next(&mut c).await.data(), &Bytes::from("once"));
    assert_eq!(next(&mut c).await.data(), &Bytes::from("other"));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn expired_messages_are_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let log = embedded_log(dir.path());
    let mut m = message("stale");
    m.ttl = Some(Duration::from_millis(1));
    log.publish("t", m).await.unwrap();
    // Expiry is by wall clock at claim time: wait until the TTL has certainly passed.
    let published = std::time::Instant::now();
    while published.elapsed() < Duration::from_millis(5) {
        tokio::task::yield_now().await;
    }
    log.publish("t", message("fresh")).await.unwrap();
    let mut c = log
        .consume("t", "g", ConsumeOptions::default())
        .await
        .unwrap();
    assert_eq!(next(&mut c).await.data(), &Bytes::from("fresh"));
}

#[tokio::test]
async fn messages_and_unacknowledged_deliveries_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = embedded_log(dir.path());
        log.publish("t", message("a")).await.unwrap();
        log.publish("t", message("b")).await.unwrap();
        // A long ack timeout: after a restart, deliveries of the old run are due at once anyway.
        let mut c = log
            .consume("t", "g", options(8, Duration::from_secs(3600)))
            .await
            .unwrap();
        let a = next(&mut c).await;
        a.ack().await.unwrap();
        let b = next(&mut c).await;
        assert_eq!(b.data(), &Bytes::from("b"));
        // b is handed out but never acknowledged when the log goes away.
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        match EmbeddedLog::open(&dir.path().join("log.redb"), EmbeddedSettings::default()) {
            Ok(l) => break l,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut c = log
        .consume("t", "g", options(8, Duration::from_secs(3600)))
        .await
        .unwrap();
    // The ack of `a` and the claim of `b` were not durable yet, so both may come back; `b` must.
    let mut seen = Vec::new();
    while !seen.contains(&Bytes::from("b")) {
        let d = next(&mut c).await;
        seen.push(d.data().clone());
        d.ack().await.unwrap();
    }
}
