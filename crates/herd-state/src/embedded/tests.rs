//! Embedded store tests: durability across reopening, one winner among concurrent
//! compare-and-sets, and expiry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::store::{Concurrency, Guard, SetOp, StateStore};

/// The ETag `key` holds now.
async fn etag_of(store: &Embedded, key: &str) -> String {
    store
        .get(key, Consistency::Strong)
        .await
        .unwrap()
        .unwrap()
        .etag
}

fn set(key: &str, value: &str, etag: Option<String>) -> SetOp {
    SetOp {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        ttl: None,
        guard: Guard {
            etag,
            concurrency: Concurrency::FirstWrite,
            ..Guard::default()
        },
    }
}

#[tokio::test]
async fn writes_survive_reopening_and_etags_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Embedded::open(&path).unwrap();
    store.set(set("a", "1", None)).await.unwrap();
    let first = store.get("a", Consistency::Strong).await.unwrap().unwrap();
    drop(store);
    // The writer thread closes the file once its queue is closed, a moment after the drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let store = loop {
        match Embedded::open(&path) {
            Ok(s) => break s,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let again = store.get("a", Consistency::Strong).await.unwrap().unwrap();
    assert_eq!(again, first);
    store.set(set("b", "2", None)).await.unwrap();
    let b = store.get("b", Consistency::Strong).await.unwrap().unwrap();
    assert!(b.etag.parse::<u64>().unwrap() > first.etag.parse::<u64>().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_set_has_one_winner_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Embedded::open(&dir.path().join("s.redb")).unwrap());
    store.set(set("k", "0", None)).await.unwrap();
    let etag = etag_of(&store, "k").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (store, etag) = (store.clone(), etag.clone());
        tasks.spawn(async move { store.set(set("k", &i.to_string(), Some(etag))).await });
    }
    let results = tasks.join_all().await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StateError::EtagMismatch { .. }))
    );
}

#[tokio::test]
async fn expired_keys_are_invisible_then_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(&dir.path().join("s.redb")).unwrap();
    let mut op = set("t", "1", None);
    op.ttl = Some(Duration::from_millis(1));
    store.set(op).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.get("t", Consistency::Strong).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::task::yield_now().await;
    }
    // The sweep removes the record itself, not only hides it.
    let db = store.db.clone();
    let gone = || {
        let txn = db.begin_read().unwrap();
        txn.open_table(STATE).unwrap().get("t").unwrap().is_none()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gone() {
        assert!(std::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Group commit: jobs of one batch that touch the same key are checked in order against the
/// batch's own writes. A compare-and-set behind a committed one with the same (now stale) ETag
/// is refused and writes nothing; the committed one is answered `Ok`, and only its value is
/// stored. A client answered 409 can therefore re-read and find its write absent.
#[tokio::test]
async fn a_batch_answers_each_job_by_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(&dir.path().join("s.redb")).unwrap();
    store.set(set("k", "0", None)).await.unwrap();
    let etag = etag_of(&store, "k").await;
    let write = |op: SetOp| {
        let (reply, answer) = tokio::sync::oneshot::channel();
        (
            Job::Write(vec![WriteOp::Set(op)], Vec::new(), reply),
            answer,
        )
    };
    let (first, first_answer) = write(set("k", "1", Some(etag.clone())));
    let (stale, stale_answer) = write(set("k", "2", Some(etag.clone())));
    let (create, create_answer) = write(set("n", "a", None));
    let (again, again_answer) = write(set("n", "b", None));
    let mut batch = vec![first, stale, create, again];
    run_batch(&store.db, &mut batch);

    assert_eq!(first_answer.await.unwrap(), Ok(()));
    assert!(matches!(
        stale_answer.await.unwrap(),
        Err(StateError::EtagMismatch { .. })
    ));
    assert_eq!(create_answer.await.unwrap(), Ok(()));
    assert!(matches!(
        again_answer.await.unwrap(),
        Err(StateError::EtagMismatch { .. })
    ));
    let k = store.get("k", Consistency::Strong).await.unwrap().unwrap();
    assert_eq!(k.value, Bytes::from_static(b"1"));
    assert!(k.etag.parse::<u64>().unwrap() > etag.parse::<u64>().unwrap());
    let n = store.get("n", Consistency::Strong).await.unwrap().unwrap();
    assert_eq!(n.value, Bytes::from_static(b"a"));
}
