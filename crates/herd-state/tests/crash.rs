//! Crash tests of the embedded state store: the file as a crash during the last commit can leave
//! it (torn, truncated, a byte flipped; see `herd_testkit::crash`), opened through
//! `Embedded::open` as herd opens it at start-up.
//!
//! What must hold for every image: nothing panics; the store opens (or refuses with an error
//! that names the file); every value it serves is one that was written for that key. For a
//! torn commit, the realistic crash, more: every record committed before the last one is there,
//! the last one is there whole or not at all, and the repair is reported exactly once.
//!
//! The last commit changes thousands of bytes; images between two changed bytes are the same,
//! so the test takes the edges of every changed run and an even sample of the rest (`BUDGET`
//! offsets, three images each) to keep the run short.

use std::path::Path;

use herd_state::{Embedded, Guard, SetOp, StateStore, WriteOp};
use herd_testkit::crash::{self, Image, Log};
use tracing::instrument::WithSubscriber;

/// Records committed before the one under test.
const EARLIER: usize = 12;
/// Offsets sampled in the last commit's region.
const BUDGET: usize = 100;
/// What the repair warning says.
const REPAIRED: &str = "not closed cleanly; repaired";

fn value(i: usize) -> Vec<u8> {
    // Values of different sizes, so records span more than one leaf.
    // The last one is large enough to grow the file.
    let pad = if i == EARLIER { 100_000 } else { i * 97 };
    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(pad)).into_bytes()
}

async fn save(store: &Embedded, i: usize) {
    let op = SetOp {
        key: format!("key-{i}"),
        value: value(i).into(),
        ttl: None,
        guard: Guard::default(),
    };
    store.transact(vec![WriteOp::Set(op)]).await.unwrap();
}

/// Opens `image` and checks what the store serves; returns whether the store opened.
async fn check(dir: &Path, n: usize, image: &Image) -> bool {
    let path = dir.join(format!("image-{n}.redb"));
    std::fs::write(&path, &image.bytes).unwrap();
    let log = Log::default();
    let opened = async { Embedded::open(&path) }
        .with_subscriber(log.subscriber())
        .await;
    let damage = image.damage;
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            assert!(!damage.is_crash(), "{damage:?}: must open: {e}");
            assert!(e.to_string().contains("image-"), "{damage:?}: {e}");
            return false;
        }
    };
    let keys: Vec<String> = (0..=EARLIER).map(|i| format!("key-{i}")).collect();
    let got = store.bulk_get(&keys).await;
    if damage.is_crash() {
        let got = got.unwrap_or_else(|e| panic!("{damage:?}: {e}"));
        for (i, v) in got.iter().enumerate() {
            match v {
                Some(v) => assert_eq!(v.value, value(i), "{damage:?}: key-{i}"),
                None => assert_eq!(i, EARLIER, "{damage:?}: key-{i} lost"),
            }
        }
        assert_eq!(log.count(REPAIRED), 1, "{damage:?}: one repair report");
        // The store still takes writes.
        save(&store, EARLIER + 1).await;
    } else if let Ok(got) = got {
        for (i, v) in got.iter().enumerate() {
            if let Some(v) = v {
                assert_eq!(v.value, value(i), "{damage:?}: key-{i} corrupt");
            }
        }
    }
    drop(store);
    let _ = std::fs::remove_file(&path);
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_the_last_commit_loses_nothing_acknowledged() {
    crash::record_panics();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = Embedded::open(&path).unwrap();
    for i in 0..EARLIER {
        save(&store, i).await;
    }
    // Snapshots taken while the store is open carry redb's recovery flag, as after a crash.
    let before = std::fs::read(&path).unwrap();
    save(&store, EARLIER).await;
    let after = std::fs::read(&path).unwrap();
    drop(store);

    let images = crash::images(&before, &after, BUDGET);
    let mut opened = 0;
    for (n, image) in images.iter().enumerate() {
        if check(dir.path(), n, image).await {
            opened += 1;
        }
        let panics = crash::take_panics();
        assert!(
            panics.is_empty(),
            "{:?}: panicked: {panics:?}",
            image.damage
        );
    }
    eprintln!("{} images, {opened} opened", images.len());
}
