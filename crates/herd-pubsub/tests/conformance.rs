//! One conformance suite for every [`PubSub`] backend: fan-out across groups, competing
//! consumers within a group, redelivery after a nack with growing attempt counts, order with
//! one delivery in flight, and redelivery to a new consumer after one went away unanswered.
//!
//! Each backend gets one test that runs the whole suite; backends on a server run when their
//! `HERD_TEST_*_URL` variable names one and report themselves skipped otherwise. Topic and group
//! names carry a per-run suffix, so runs never see each other's messages.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herd_pubsub::{
    ConsumeOptions, Consumer, Delivery, EmbeddedLog, EmbeddedSettings, Message, Nack, PubSub,
};

/// A suffix unique to this run.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}x{nanos:x}", std::process::id())
}

fn message(body: &str) -> Message {
    Message {
        data: Bytes::from(body.to_string()),
        id: None,
        ttl: None,
        metadata: Default::default(),
    }
}

fn options(max_in_flight: u32, ack_timeout: Duration) -> ConsumeOptions {
    ConsumeOptions {
        max_in_flight,
        ack_timeout,
    }
}

async fn next(consumer: &mut Box<dyn Consumer>) -> Box<dyn Delivery> {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the consumer is open")
        .expect("no error")
}

/// Asserts nothing is delivered for a while.
async fn quiet(consumer: &mut Box<dyn Consumer>, what: &str) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
        let body = d.map(|d| d.data().clone());
        panic!("{what}: got {body:?}");
    }
}

fn text(d: &dyn Delivery) -> String {
    String::from_utf8(d.data().to_vec()).unwrap()
}

async fn fan_out_and_competing_consumers(broker: &dyn PubSub, run: &str) {
    let topic = format!("orders-{run}");
    let one = options(1, Duration::from_secs(30));
    // Groups exist before the publishes, as on brokers where a queue only gets what follows it.
    let mut a1 = broker
        .consume(&topic, &format!("a-{run}"), one)
        .await
        .unwrap();
    let mut a2 = broker
        .consume(&topic, &format!("a-{run}"), one)
        .await
        .unwrap();
    let mut b = broker
        .consume(
            &topic,
            &format!("b-{run}"),
            options(16, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    for i in 0..10 {
        broker
            .publish(&topic, message(&i.to_string()))
            .await
            .unwrap();
    }
    let mut seen_a = Vec::new();
    let mut from = [0, 0];
    while seen_a.len() < 10 {
        // Take from whichever consumer has a delivery; both must get a share.
        let (which, d) = tokio::select! {
            d = next(&mut a1) => (0, d),
            d = next(&mut a2) => (1, d),
        };
        from[which] += 1;
        seen_a.push(text(d.as_ref()));
        d.ack().await.unwrap();
    }
    let mut seen_b = Vec::new();
    for _ in 0..10 {
        let d = next(&mut b).await;
        seen_b.push(text(d.as_ref()));
        d.ack().await.unwrap();
    }
    let all: BTreeSet<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(
        seen_a.iter().cloned().collect::<BTreeSet<_>>(),
        all,
        "{seen_a:?}"
    );
    assert!(
        from[0] > 0 && from[1] > 0,
        "one consumer got everything: {from:?}"
    );
    assert_eq!(
        seen_b,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>(),
        "one group, in order"
    );
    quiet(&mut a1, "group a after all acks").await;
    quiet(&mut b, "group b after all acks").await;
}

async fn nack_redelivers_with_a_higher_attempt(broker: &dyn PubSub, run: &str) {
    let topic = format!("retry-{run}");
    let mut c = broker
        .consume(
            &topic,
            &format!("g-{run}"),
            options(1, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    broker.publish(&topic, message("x")).await.unwrap();
    let first = next(&mut c).await;
    assert_eq!(first.attempt(), 1);
    first
        .nack(Nack::Retry(Duration::from_millis(10)))
        .await
        .unwrap();
    let second = next(&mut c).await;
    assert_eq!(text(second.as_ref()), "x");
    assert_eq!(second.attempt(), 2);
    second.ack().await.unwrap();
    quiet(&mut c, "an acked message").await;
}

async fn one_in_flight_keeps_order(broker: &dyn PubSub, run: &str) {
    let topic = format!("ordered-{run}");
    let mut c = broker
        .consume(
            &topic,
            &format!("g-{run}"),
            options(1, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    for i in 0..5 {
        broker
            .publish(&topic, message(&i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..5 {
        let d = next(&mut c).await;
        assert_eq!(text(d.as_ref()), i.to_string());
        if i == 2 {
            quiet(&mut c, "a second delivery while one is out").await;
        }
        d.ack().await.unwrap();
    }
}

async fn unanswered_deliveries_reach_another_consumer(broker: &dyn PubSub, run: &str) {
    let topic = format!("crash-{run}");
    let group = format!("g-{run}");
    let short = options(4, Duration::from_millis(500));
    let mut gone = broker.consume(&topic, &group, short).await.unwrap();
    broker.publish(&topic, message("survivor")).await.unwrap();
    let d = next(&mut gone).await;
    assert_eq!(text(d.as_ref()), "survivor");
    // The consumer goes away without answering (its app crashed mid-delivery).
    drop(d);
    drop(gone);
    let mut other = broker.consume(&topic, &group, short).await.unwrap();
    let again = next(&mut other).await;
    assert_eq!(text(again.as_ref()), "survivor");
    assert!(again.attempt() >= 2, "attempt {}", again.attempt());
    again.ack().await.unwrap();
}

/// Runs every case against `broker`.
async fn suite(broker: Arc<dyn PubSub>) {
    let run = run_id();
    fan_out_and_competing_consumers(broker.as_ref(), &run).await;
    nack_redelivers_with_a_higher_attempt(broker.as_ref(), &run).await;
    one_in_flight_keeps_order(broker.as_ref(), &run).await;
    unanswered_deliveries_reach_another_consumer(broker.as_ref(), &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.redb"), EmbeddedSettings::default()).unwrap();
    suite(Arc::new(log)).await;
}
