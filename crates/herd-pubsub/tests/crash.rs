//! Crash tests of the embedded pub/sub log: the file as a crash during the last publish's commit
//! can leave it (torn, truncated, a byte flipped; see `herd_testkit::crash`), opened through
//! `EmbeddedLog::open` as herd opens it at start-up.
//!
//! For every image: nothing panics; the log opens (or refuses with an error naming the file);
//! every message it delivers is one that was published. For a crash image (torn, or the file's
//! growth lost): a new group gets every earlier message, in order, then the last one whole
//! or not at all (those every group acknowledged may be gone already); a group that had acknowledged some messages resumes no later than where it was
//! (at-least-once); the repair is reported exactly once; the log takes new publishes.
//!
//! Images between two changed bytes are the same, so the test takes the edges of every changed
//! run and an even sample of the rest (`BUDGET` offsets, three images each).

use std::path::Path;
use std::time::Duration;

use herd_pubsub::testing::{message, next, options, text};
use herd_pubsub::{EmbeddedLog, EmbeddedSettings, PubSub};
use herd_testkit::crash::{self, Image, Log};
use tracing::instrument::WithSubscriber;

/// Messages published before the one under test.
const EARLIER: usize = 10;
/// Of those, acknowledged by group `seen`.
const ACKED: usize = 3;
/// Offsets sampled in the last commit's region.
const BUDGET: usize = 80;
const REPAIRED: &str = "not closed cleanly; repaired";

fn body(i: usize) -> String {
    // The last one is large enough to grow the file.
    let pad = if i == EARLIER { 100_000 } else { i * 131 };
    format!("message {i} {}", "m".repeat(pad))
}

fn number(text: &str) -> usize {
    text.split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap()
}

fn open(path: &Path) -> Result<EmbeddedLog, herd_pubsub::PubSubError> {
    EmbeddedLog::open(path, EmbeddedSettings::default())
}

async fn check(dir: &Path, n: usize, image: &Image) -> bool {
    let path = dir.join(format!("image-{n}.redb"));
    std::fs::write(&path, &image.bytes).unwrap();
    let log = Log::default();
    let opened = async { open(&path) }
        .with_subscriber(log.subscriber())
        .await;
    let damage = image.damage;
    let broker = match opened {
        Ok(b) => b,
        Err(e) => {
            assert!(!damage.is_crash(), "{damage:?}: must open: {e}");
            assert!(e.to_string().contains("image-"), "{damage:?}: {e}");
            return false;
        }
    };
    let ack_timeout = Duration::from_secs(30);
    if damage.is_crash() {
        assert_eq!(log.count(REPAIRED), 1, "{damage:?}: one repair report");
        // A sentinel marks the end, so no test has to wait for silence.
        broker.publish("orders", message("end 0")).await.unwrap();
        let mut all = broker
            .consume("orders", &format!("fresh-{n}"), options(64, ack_timeout))
            .await
            .unwrap();
        // Messages every group acknowledged may be gone already; the rest come in order.
        let mut got = Vec::new();
        loop {
            let d = next(&mut all).await;
            let t = text(d.as_ref());
            if t == "end 0" {
                break;
            }
            assert_eq!(t, body(number(&t)), "{damage:?}: corrupt message");
            got.push(number(&t));
        }
        let first = got.first().copied().unwrap_or(usize::MAX);
        assert!(first <= ACKED, "{damage:?}: starts at {first}");
        let last = *got.last().unwrap();
        assert!(last >= EARLIER - 1, "{damage:?}: ends at {last}");
        assert_eq!(got, (first..=last).collect::<Vec<_>>(), "{damage:?}");
        let mut seen = broker
            .consume("orders", "seen", options(1, ack_timeout))
            .await
            .unwrap();
        let d = next(&mut seen).await;
        assert!(number(&text(d.as_ref())) <= ACKED, "{damage:?}: skipped");
    } else {
        // Whatever opens serves only what was published.
        let mut all = broker
            .consume("orders", &format!("fresh-{n}"), options(64, ack_timeout))
            .await
            .unwrap();
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_millis(20), all.next()).await
        {
            let got = text(d.as_ref());
            assert_eq!(got, body(number(&got)), "{damage:?}: corrupt message");
        }
    }
    drop(broker);
    let _ = std::fs::remove_file(&path);
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_the_last_publish_loses_nothing_acknowledged() {
    crash::record_panics();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let broker = open(&path).unwrap();
    for i in 0..EARLIER {
        broker.publish("orders", message(&body(i))).await.unwrap();
    }
    let mut seen = broker
        .consume("orders", "seen", options(1, Duration::from_secs(30)))
        .await
        .unwrap();
    for i in 0..ACKED {
        let d = next(&mut seen).await;
        assert_eq!(number(&text(d.as_ref())), i);
        d.ack().await.unwrap();
    }
    drop(seen);
    // Acks are committed without fsync; this publish makes them durable.
    broker.publish("other", message("flush 0")).await.unwrap();
    // Snapshots taken while the log is open carry redb's recovery flag, as after a crash.
    let before = std::fs::read(&path).unwrap();
    broker
        .publish("orders", message(&body(EARLIER)))
        .await
        .unwrap();
    let after = std::fs::read(&path).unwrap();
    drop(broker);

    let images = crash::images(&before, &after, BUDGET);
    for (n, image) in images.iter().enumerate() {
        check(dir.path(), n, image).await;
        let panics = crash::take_panics();
        assert!(
            panics.is_empty(),
            "{:?}: panicked: {panics:?}",
            image.damage
        );
    }
}
