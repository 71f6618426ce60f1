//! What only the embedded log promises (the shared contract is in `tests/conformance.rs`):
//! redelivery after the ack timeout, idempotency keys, TTLs, and reopening the file.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::broker::Nack;
use crate::testing::{embedded_log, message, next, next_within, options};

/// Opens the log at `path` again once the previous handle's writer let go of the file (5 s at most).
async fn reopen(path: &std::path::Path) -> EmbeddedLog {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match EmbeddedLog::open(path, EmbeddedSettings::default()) {
            Ok(l) => return l,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let log = reopen(&dir.path().join("log.redb")).await;
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

#[tokio::test]
async fn a_file_with_the_older_layouts_is_moved_to_the_new_one() {
    use redb::{ReadableDatabase, TableDefinition, TableHandle};
    const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
    const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
    const CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");
    const PENDING: TableDefinition<(&str, &str, u64), (u32, u64)> = TableDefinition::new("pending");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        // Messages 1–5 of "t"; group "g" was handed 1–4, acknowledged 1 and 3, and 2 twice.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut messages = txn.open_table(MESSAGES).unwrap();
            // Published now (a record published at 0 is past the retention time: the first
            // sweep would remove it), never expiring.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            for seq in 1..=5u64 {
                let mut record = now.to_le_bytes().to_vec();
                record.extend_from_slice(&[0u8; 8]);
                record.extend_from_slice(format!("m{seq}").as_bytes());
                messages.insert(("t", seq), record.as_slice()).unwrap();
            }
            txn.open_table(HEADS).unwrap().insert("t", 5).unwrap();
            txn.open_table(CURSORS)
                .unwrap()
                .insert(("t", "g"), 5)
                .unwrap();
            let mut pending = txn.open_table(PENDING).unwrap();
            pending.insert(("t", "g", 2), (2, u64::MAX)).unwrap();
            pending.insert(("t", "g", 4), (1, u64::MAX)).unwrap();
        }
        txn.commit().unwrap();
    }
    {
        let log = EmbeddedLog::open(&path, EmbeddedSettings::default()).unwrap();
        // A new group starts at the oldest message kept: "m1", unless the first sweep (at
        // open) removed it before, as every group ("g") had acknowledged it.
        let mut fresh = log
            .consume("t", "fresh", ConsumeOptions::default())
            .await
            .unwrap();
        let first = next(&mut fresh).await.data().clone();
        assert!(first == "m1" || first == "m2", "{first:?}");
        let mut c = log
            .consume("t", "g", options(8, Duration::from_secs(3600)))
            .await
            .unwrap();
        // The unacknowledged ones first (due at once, attempts kept), then the rest; 1 and 3
        // were acknowledged and stay so.
        let mut got = Vec::new();
        for _ in 0..3 {
            let d = next(&mut c).await;
            got.push((String::from_utf8(d.data().to_vec()).unwrap(), d.attempt()));
            d.ack().await.unwrap();
        }
        assert_eq!(
            got,
            [("m2".into(), 3), ("m4".into(), 2), ("m5".into(), 1)],
            "{got:?}"
        );
        crate::testing::quiet(&mut c, "acknowledged before the move").await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let db = loop {
        match redb::Database::open(&path) {
            Ok(db) => break db,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let names: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert!(names.contains(&"groups".to_string()), "{names:?}");
    assert!(names.contains(&"batches".to_string()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n == "cursors" || n == "pending" || n == "messages"),
        "{names:?}"
    );
}

#[tokio::test]
async fn acknowledgements_are_kept_across_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = embedded_log(dir.path());
        for body in ["a", "b", "c"] {
            log.publish("t", message(body)).await.unwrap();
        }
        let mut c = log
            .consume("t", "g", options(8, Duration::from_secs(3600)))
            .await
            .unwrap();
        for _ in 0..2 {
            next(&mut c).await.ack().await.unwrap();
        }
        // "c" is handed out (it is in the window's prefetch) or not; it is not acknowledged.
    }
    let log = reopen(&dir.path().join("log.redb")).await;
    let mut c = log
        .consume("t", "g", options(8, Duration::from_secs(3600)))
        .await
        .unwrap();
    // The writer wrote the acks when it stopped: only "c" comes again.
    assert_eq!(next(&mut c).await.data(), &Bytes::from("c"));
    crate::testing::quiet(&mut c, "acknowledged before the stop").await;
}

/// Makes the writer open a commit and hold it (as an fsync does while the disk is busy) until
/// the returned sender sends.
async fn hold_the_writer(log: &EmbeddedLog) -> std::sync::mpsc::Sender<()> {
    let (entered, in_commit) = tokio::sync::oneshot::channel();
    let (release, held) = std::sync::mpsc::channel();
    log.shared
        .jobs
        .send(commit::Job::Hold {
            entered,
            release: held,
        })
        .await
        .unwrap();
    in_commit.await.unwrap();
    release
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_acks_are_answered_while_a_commit_is_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(embedded_log(dir.path()));
    for body in ["a", "b"] {
        log.publish("t", message(body)).await.unwrap();
    }
    // The writer opens a commit and holds it (as an fsync does while the disk is busy).
    let release = hold_the_writer(&log).await;
    // A publish queued behind it waits for it...
    let publish = tokio::spawn({
        let log = log.clone();
        async move { log.publish("t", message("c")).await }
    });
    // ...while a consumer claims, acks and nacks.
    let within = Duration::from_secs(5);
    let mut c = log
        .consume("t", "g", options(1, Duration::from_secs(3600)))
        .await
        .unwrap();
    let a = next_within(&mut c, within).await;
    assert_eq!(a.data(), &Bytes::from("a"));
    tokio::time::timeout(within, a.ack())
        .await
        .expect("an ack answered during the commit")
        .unwrap();
    let b = next_within(&mut c, within).await;
    assert_eq!(b.data(), &Bytes::from("b"));
    tokio::time::timeout(within, b.nack(Nack::Retry(Duration::ZERO)))
        .await
        .expect("a nack answered during the commit")
        .unwrap();
    let again = next_within(&mut c, within).await;
    assert_eq!((again.data(), again.attempt()), (&Bytes::from("b"), 2));
    assert!(
        !publish.is_finished(),
        "the publish waits for the held commit"
    );
    release.send(()).unwrap();
    publish.await.unwrap().unwrap();
    again.ack().await.unwrap();
    // The publish committed after the claims: delivered once committed.
    assert_eq!(next(&mut c).await.data(), &Bytes::from("c"));
}

#[tokio::test]
async fn an_ack_made_after_a_commit_encoded_its_group_is_written_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let log = embedded_log(dir.path());
    for body in ["a", "b", "c"] {
        log.publish("t", message(body)).await.unwrap();
    }
    let mut c = log
        .consume("t", "g", options(1, Duration::from_secs(3600)))
        .await
        .unwrap();
    next(&mut c).await.ack().await.unwrap();
    // The held commit encoded the groups (with "a" acknowledged) before it was entered.
    let release = hold_the_writer(&log).await;
    let b = next(&mut c).await;
    assert_eq!(b.data(), &Bytes::from("b"));
    b.ack().await.unwrap();
    release.send(()).unwrap();
    // This publish's commit (fsynced) must carry the ack of "b" the held one missed.
    log.publish("u", message("flush")).await.unwrap();
    // A copy taken while the log is open is the file as a crash leaves it.
    let crashed = dir.path().join("crashed.redb");
    std::fs::copy(&path, &crashed).unwrap();
    let copy = EmbeddedLog::open(&crashed, EmbeddedSettings::default()).unwrap();
    let mut c = copy
        .consume("t", "g", options(8, Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(next(&mut c).await.data(), &Bytes::from("c"));
    crate::testing::quiet(&mut c, "acknowledged before the crash").await;
}
