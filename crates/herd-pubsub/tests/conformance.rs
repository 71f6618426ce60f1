//! One conformance suite for every [`PubSub`] backend: fan-out across groups, competing
//! consumers within a group, redelivery after a nack with growing attempt counts, order with
//! one delivery in flight, redelivery to a new consumer after one went away unanswered, and
//! concurrent publishes.
//!
//! Each backend gets one test that runs the whole suite; backends on a server run when their
//! `HERD_TEST_*_URL` variable names one and report themselves skipped otherwise. Topic and group
//! names carry a per-run suffix, so runs never see each other's messages.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use herd_pubsub::testing::{embedded_log, message, meta, next, options, quiet, run_id, text};
use herd_pubsub::{ConsumeOptions, Consumer, Message, Nack, PubSub};

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

/// Publishes issued together (one connection to the broker, as herd's API tasks share it) all
/// return once held, and each message is delivered once.
async fn concurrent_publishes_are_each_held_once(broker: &Arc<dyn PubSub>, run: &str) {
    const N: usize = 64;
    let topic = format!("burst-{run}");
    let mut c = broker
        .consume(
            &topic,
            &format!("g-{run}"),
            options(16, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..N {
        let (broker, topic) = (broker.clone(), topic.clone());
        publishes.spawn(async move { broker.publish(&topic, message(&i.to_string())).await });
    }
    while let Some(published) = publishes.join_next().await {
        published.unwrap().unwrap();
    }
    let mut seen = BTreeSet::new();
    for _ in 0..N {
        let d = next(&mut c).await;
        assert!(seen.insert(text(d.as_ref())), "delivered twice");
        d.ack().await.unwrap();
    }
    assert_eq!(seen.len(), N);
    quiet(&mut c, "after every message of the burst").await;
}

/// Runs every case against `broker`.
async fn suite(broker: Arc<dyn PubSub>) {
    suite_named(broker, run_id()).await;
}

/// Runs every case against `broker` with `run` in every topic and group name, so a backend's
/// test can find what the run created on its server and remove it.
async fn suite_named(broker: Arc<dyn PubSub>, run: String) {
    fan_out_and_competing_consumers(broker.as_ref(), &run).await;
    nack_redelivers_with_a_higher_attempt(broker.as_ref(), &run).await;
    one_in_flight_keeps_order(broker.as_ref(), &run).await;
    unanswered_deliveries_reach_another_consumer(broker.as_ref(), &run).await;
    concurrent_publishes_are_each_held_once(&broker, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let dir = tempfile::tempdir().unwrap();
    suite(Arc::new(embedded_log(dir.path()))).await;
}

/// NATS JetStream: the suite with a stream per topic, again with one stream for every topic
/// (`streamName`), and publisher deduplication. Every stream the run created is deleted at the
/// end, whatever the outcome (deleting a stream deletes its consumers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream() {
    use futures_core::Stream as _;

    let Ok(url) = std::env::var("HERD_TEST_NATS_URL") else {
        println!("skipped: HERD_TEST_NATS_URL is not set");
        return;
    };
    let run = run_id();
    let outcome = tokio::spawn(jetstream_cases(url.clone(), run.clone())).await;
    // Per-topic streams are named after their topics and the shared one after the run, so every
    // stream of this run has the run id in its name.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let mut names = js.stream_names();
    let mut ours = Vec::new();
    while let Some(name) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut names).poll_next(cx)).await
    {
        let name = name.unwrap();
        if name.contains(&run) {
            ours.push(name);
        }
    }
    for name in &ours {
        js.delete_stream(name).await.unwrap();
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    // Five topics of the suite with a stream each, the shared stream, the deduplication topic.
    assert_eq!(ours.len(), 7, "{ours:?}");
}

async fn jetstream_cases(url: String, run: String) {
    use herd_pubsub::{JetStream, NatsSettings, PubSubError};

    let per_topic = Arc::new(JetStream::connect(NatsSettings::new(&url)).await.unwrap());
    suite_named(per_topic.clone(), run.clone()).await;

    let mut shared = NatsSettings::new(&url);
    shared.stream_name = Some(format!("herd-{run}"));
    let shared = Arc::new(JetStream::connect(shared).await.unwrap());
    suite_named(shared, format!("{run}s")).await;

    // A repeated idempotency key is accepted and not stored again.
    let topic = format!("dedupe-{run}");
    let keyed = |body: &str, id: &str| Message {
        id: Some(id.to_string()),
        ..message(body)
    };
    per_topic
        .publish(&topic, keyed("first", "k1"))
        .await
        .unwrap();
    per_topic
        .publish(&topic, keyed("again", "k1"))
        .await
        .unwrap();
    per_topic
        .publish(&topic, keyed("second", "k2"))
        .await
        .unwrap();
    let mut c = per_topic
        .consume(
            &topic,
            &format!("g-{run}"),
            options(16, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    for want in ["first", "second"] {
        let d = next(&mut c).await;
        assert_eq!(text(d.as_ref()), want);
        assert_eq!(d.attempt(), 1);
        d.ack().await.unwrap();
    }
    quiet(&mut c, "a deduplicated publish").await;

    // A topic must be a subject messages can be published to.
    let err = per_topic.publish("a b", message("x")).await.unwrap_err();
    assert!(matches!(err, PubSubError::Invalid(_)), "{err:?}");
}

/// RabbitMQ: the suite on quorum queues (the default) and again on classic queues. The queue of
/// every group the run joined (named `<group>-<topic>`, as Dapr names it) must exist afterwards;
/// it is deleted with the topic's exchange at the end, whatever the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq() {
    let Ok(url) = std::env::var("HERD_TEST_AMQP_URL") else {
        println!("skipped: HERD_TEST_AMQP_URL is not set");
        return;
    };
    let run = run_id();
    let joined = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let outcome = tokio::spawn(rabbitmq_cases(url.clone(), run, joined.clone())).await;

    let connection = lapin::Connection::connect(&url, Default::default())
        .await
        .unwrap();
    let joined = std::mem::take(&mut *joined.lock().unwrap());
    let mut missing = Vec::new();
    let mut topics = BTreeSet::new();
    for (topic, group) in &joined {
        let queue = herd_pubsub::queue_name(topic, group);
        // A channel each: a failed passive declare closes its channel.
        let channel = connection.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if channel
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await
            .is_err()
        {
            missing.push(queue.clone());
        }
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
        topics.insert(topic.clone());
    }
    let channel = connection.create_channel().await.unwrap();
    for topic in &topics {
        channel
            .exchange_delete(topic.as_str().into(), Default::default())
            .await
            .unwrap();
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    assert!(missing.is_empty(), "queues not found: {missing:?}");
    // Two runs of the suite: groups a and b on one topic, one group on each of four others.
    assert_eq!(joined.len(), 12, "{joined:?}");
}

/// `(topic, group)` of every `consume` call.
type Joined = Arc<std::sync::Mutex<BTreeSet<(String, String)>>>;

async fn rabbitmq_cases(url: String, run: String, joined: Joined) {
    use herd_pubsub::{RabbitMq, RabbitMqSettings};

    for (queue_type, suffix) in [("quorum", "q"), ("classic", "c")] {
        let metadata = meta(&[
            ("connectionString", url.as_str()),
            ("queueType", queue_type),
        ]);
        let settings = RabbitMqSettings::from_metadata(&metadata).unwrap();
        let broker = RabbitMq::open(settings).await.unwrap();
        let recorded = Arc::new(Recorded {
            inner: broker,
            joined: joined.clone(),
        });
        suite_named(recorded, format!("{run}{suffix}")).await;
    }
}

/// A backend that remembers which groups joined which topics.
struct Recorded<B> {
    inner: B,
    joined: Joined,
}

#[async_trait::async_trait]
impl<B: PubSub> PubSub for Recorded<B> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), herd_pubsub::PubSubError> {
        self.inner.publish(topic, message).await
    }

    async fn consume(
        &self,
        topic: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Result<Box<dyn Consumer>, herd_pubsub::PubSubError> {
        self.joined
            .lock()
            .unwrap()
            .insert((topic.to_string(), group.to_string()));
        self.inner.consume(topic, group, options).await
    }
}

/// Redis Streams, set up from Dapr metadata as a component would be: the suite, then checks of
/// the Dapr layout and of messages past their TTL. Every stream the run created (named
/// `<case>-<run>`; deleting a stream deletes its groups) is deleted at the end, whatever the
/// outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams() {
    let Ok(url) = std::env::var("HERD_TEST_REDIS_URL") else {
        println!("skipped: HERD_TEST_REDIS_URL is not set");
        return;
    };
    let run = run_id();
    let outcome = tokio::spawn(redis_streams_cases(url.clone(), run.clone())).await;

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut ours: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*-{run}"))
            .arg("TYPE")
            .arg("stream")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        ours.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if !ours.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&ours)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    // Five topics of the suite, the layout, TTL and two nack topics.
    ours.sort();
    assert_eq!(ours.len(), 9, "{ours:?}");
}

async fn redis_streams_cases(url: String, run: String) {
    // `redis://[user:password@]host:port[/db]` → Dapr's metadata.
    let rest = url.strip_prefix("redis://").unwrap_or(&url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let (host, db) = rest.split_once('/').unwrap_or((rest, ""));
    let mut metadata =
        std::collections::BTreeMap::from([("redisHost".to_string(), host.to_string())]);
    if !db.is_empty() {
        metadata.insert("redisDB".to_string(), db.to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = herd_pubsub::configure("pubsub", "pubsub.redis", &metadata, dir.path()).unwrap();
    let broker = herd_pubsub::open(&backend).await.unwrap();
    assert_eq!(broker.kind(), "redis");
    suite_named(broker.clone(), run.clone()).await;

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    // Dapr's layout: the stream is the topic, the body is the `data` field, the group is the
    // app's, created when it subscribes.
    let topic = format!("layout-{run}");
    let group = format!("app-{run}");
    let mut c = broker
        .consume(&topic, &group, options(4, Duration::from_secs(30)))
        .await
        .unwrap();
    broker.publish(&topic, message("hello")).await.unwrap();
    type Fields = Vec<(String, Vec<u8>)>;
    let entries: Vec<(String, Fields)> = redis::cmd("XRANGE")
        .arg(&topic)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].1, vec![("data".to_string(), b"hello".to_vec())]);
    let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&topic)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert!(
        groups[0].contains(&redis::Value::BulkString(group.clone().into_bytes())),
        "{groups:?}"
    );
    let d = next(&mut c).await;
    assert_eq!(text(d.as_ref()), "hello");
    d.ack().await.unwrap();

    // A message past its TTL is acknowledged and skipped; one within it is delivered.
    let topic = format!("expired-{run}");
    let mut c = broker
        .consume(&topic, &group, options(4, Duration::from_secs(30)))
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&topic)
        .arg("*")
        .arg("data")
        .arg("stale")
        .arg("expiresAt")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let fresh = Message {
        ttl: Some(Duration::from_secs(600)),
        ..message("fresh")
    };
    broker.publish(&topic, fresh).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(text(d.as_ref()), "fresh");
    d.ack().await.unwrap();
    let pending: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&topic)
        .arg(&group)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending.0, 0, "nothing left pending: {pending:?}");

    // A nacked message comes back to its consumer once the delay is over, not at the next
    // reclaim (a quarter of the 30 s ack timeout).
    let topic = format!("delayed-{run}");
    let mut c = broker
        .consume(&topic, &group, options(1, Duration::from_secs(30)))
        .await
        .unwrap();
    broker.publish(&topic, message("later")).await.unwrap();
    let d = next(&mut c).await;
    let nacked = std::time::Instant::now();
    d.nack(Nack::Retry(Duration::from_millis(300)))
        .await
        .unwrap();
    let again = next(&mut c).await;
    let took = nacked.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        (text(again.as_ref()).as_str(), again.attempt()),
        ("later", 2)
    );
    again.ack().await.unwrap();

    // A nacked message whose consumer goes away during the delay reaches another consumer about
    // the delay later, not a whole ack timeout later.
    let topic = format!("nacked-{run}");
    let ten = options(1, Duration::from_secs(10));
    let mut gone = broker.consume(&topic, &group, ten).await.unwrap();
    broker.publish(&topic, message("retry me")).await.unwrap();
    let d = next(&mut gone).await;
    let nacked = std::time::Instant::now();
    d.nack(Nack::Retry(Duration::from_secs(1))).await.unwrap();
    drop(gone);
    let mut other = broker.consume(&topic, &group, ten).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(6), other.next())
        .await
        .expect("back well before the 10 s ack timeout")
        .unwrap()
        .unwrap();
    assert!(
        nacked.elapsed() >= Duration::from_secs(1),
        "{:?}",
        nacked.elapsed()
    );
    assert_eq!(text(again.as_ref()), "retry me");
    assert_eq!(again.attempt(), 2);
    again.ack().await.unwrap();
}
