//! The save script's conditions against a real Redis (`HERD_TEST_REDIS_URL`; skipped when unset):
//! a condition reads only what it needs, yet a later operation of a transaction still sees what
//! an earlier one wrote, and a failed transaction changes nothing. Keys carry a per-run prefix.
//! What a server without the script does to a save is tried on a `redis-server` of the test's
//! own (skipped when none is installed), as it flushes the server's scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::*;
use crate::store::{DeleteOp, Guard, SetOp};

/// A store on the test server, and a key prefix of its own; `None` (test skipped) without one.
async fn store() -> Option<(RedisStore, String)> {
    let Ok(url) = std::env::var("HERD_TEST_REDIS_URL") else {
        eprintln!("skipped: HERD_TEST_REDIS_URL is not set");
        return None;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("herd-test-{}-{nanos}", std::process::id());
    let settings = RedisSettings {
        url,
        replicas: 0,
        strong_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        outbox_key: format!("herd-outbox||{prefix}"),
    };
    Some((RedisStore::connect(settings).await.unwrap(), prefix))
}

fn set(key: &str, value: &str, etag: Option<&str>, concurrency: Concurrency) -> WriteOp {
    WriteOp::Set(SetOp {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        ttl: None,
        guard: Guard {
            etag: etag.map(str::to_string),
            concurrency,
            ..Guard::default()
        },
    })
}

fn fenced(key: &str, value: &str, fence: u64) -> WriteOp {
    WriteOp::Set(SetOp {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        ttl: None,
        guard: Guard {
            fence: Some(fence),
            ..Guard::default()
        },
    })
}

fn delete(key: &str) -> WriteOp {
    WriteOp::Delete(DeleteOp {
        key: key.into(),
        guard: Guard::default(),
    })
}

async fn read(s: &RedisStore, key: &str) -> Option<(String, u64)> {
    s.get(key, Consistency::Eventual).await.unwrap().map(|v| {
        (
            String::from_utf8(v.value.to_vec()).unwrap(),
            v.etag.parse().unwrap(),
        )
    })
}

async fn clean(s: &RedisStore, keys: &[&str]) {
    for k in keys {
        let _: () = redis::cmd("DEL")
            .arg(k)
            .arg(fence_key(k))
            .query_async(&mut s.conn.clone())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_later_operation_sees_the_versions_and_fences_an_earlier_one_wrote() {
    let Some((s, p)) = store().await else { return };
    let (a, b) = (format!("{p}-a"), format!("{p}-b"));

    // A plain save, then saves conditioned on its ETag.
    s.transact(vec![set(&a, "1", None, Concurrency::Unspecified)])
        .await
        .unwrap();
    let (_, v1) = read(&s, &a).await.unwrap();
    let stale = (v1 - 1).to_string();
    let err = s
        .transact(vec![set(&a, "x", Some(&stale), Concurrency::Unspecified)])
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::EtagMismatch { .. }), "{err:?}");
    s.transact(vec![set(
        &a,
        "2",
        Some(&v1.to_string()),
        Concurrency::Unspecified,
    )])
    .await
    .unwrap();
    let (value, v2) = read(&s, &a).await.unwrap();
    assert_eq!(value, "2");
    assert!(v2 > v1);

    // Within one transaction: a first-write after a save of the same key fails, the whole
    // transaction with it (b stays unwritten); after a delete it succeeds.
    let err = s
        .transact(vec![
            set(&b, "b", None, Concurrency::Unspecified),
            set(&a, "3", None, Concurrency::Unspecified),
            set(&a, "4", None, Concurrency::FirstWrite),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::EtagMismatch { .. }), "{err:?}");
    assert_eq!(read(&s, &b).await, None);
    assert_eq!(read(&s, &a).await.unwrap(), ("2".into(), v2));
    s.transact(vec![
        delete(&a),
        set(&a, "5", None, Concurrency::FirstWrite),
    ])
    .await
    .unwrap();
    assert_eq!(read(&s, &a).await.unwrap().0, "5");

    // The ETag of a save earlier in the same transaction is compared as the version it gets:
    // one no client could have been given (an old one) does not match it.
    let (_, v5) = read(&s, &a).await.unwrap();
    let err = s
        .transact(vec![
            set(&a, "6", None, Concurrency::Unspecified),
            set(&a, "7", Some(&v5.to_string()), Concurrency::Unspecified),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::EtagMismatch { .. }), "{err:?}");
    assert_eq!(read(&s, &a).await.unwrap(), ("5".into(), v5));

    // Two saves in one transaction get two new, distinct versions.
    s.transact(vec![
        set(&a, "8", None, Concurrency::LastWrite),
        set(&b, "9", None, Concurrency::Unspecified),
    ])
    .await
    .unwrap();
    let ((_, va), (_, vb)) = (read(&s, &a).await.unwrap(), read(&s, &b).await.unwrap());
    assert!(va > v5 && vb > v5 && va != vb, "{v5} {va} {vb}");

    // Fencing tokens: a lower one than the key was written with is refused, even when an
    // earlier operation of the same transaction raised it; a save without one is not checked.
    s.transact(vec![fenced(&a, "f5", 5)]).await.unwrap();
    let err = s.transact(vec![fenced(&a, "f4", 4)]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StateError::Fenced {
                token: 4,
                seen: 5,
                ..
            }
        ),
        "{err:?}"
    );
    let err = s
        .transact(vec![fenced(&b, "f9", 9), fenced(&b, "f7", 7)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StateError::Fenced {
                token: 7,
                seen: 9,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(read(&s, &b).await.unwrap().0, "9");
    s.transact(vec![set(&a, "plain", None, Concurrency::Unspecified)])
        .await
        .unwrap();
    assert_eq!(read(&s, &a).await.unwrap().0, "plain");
    let err = s.transact(vec![fenced(&a, "f4", 4)]).await.unwrap_err();
    assert!(matches!(err, StateError::Fenced { seen: 5, .. }), "{err:?}");

    clean(&s, &[&a, &b]).await;
}

#[tokio::test]
async fn a_plain_save_clears_the_ttl_of_an_earlier_one() {
    let Some((s, p)) = store().await else { return };
    let k = format!("{p}-ttl");
    let mut op = set(&k, "t", None, Concurrency::Unspecified);
    if let WriteOp::Set(s) = &mut op {
        s.ttl = Some(Duration::from_secs(60));
    }
    s.transact(vec![op]).await.unwrap();
    let got = s.get(&k, Consistency::Eventual).await.unwrap().unwrap();
    assert!(got.expires_at.is_some());
    s.transact(vec![set(&k, "u", None, Concurrency::Unspecified)])
        .await
        .unwrap();
    let got = s.get(&k, Consistency::Eventual).await.unwrap().unwrap();
    assert_eq!(got.expires_at, None);
    clean(&s, &[&k]).await;
}

/// A redis-server of the test's own (no persistence) on a free port below the ephemeral range,
/// killed when dropped.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one and waits (up to 10 s) until it accepts connections; `None` (test skipped) when
/// `redis-server` is not installed.
fn private_redis() -> Option<PrivateRedis> {
    let start = std::process::id().wrapping_mul(1_009) % 12_000;
    let port = (0..12_000)
        .map(|n| (20_000 + (start + n) % 12_000) as u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below the ephemeral range");
    let spawned = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(child) = spawned else {
        eprintln!("skipped: redis-server is not installed");
        return None;
    };
    let server = PrivateRedis {
        child,
        url: format!("redis://127.0.0.1:{port}"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not listen on {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

#[tokio::test]
async fn a_save_loads_the_script_when_the_server_does_not_have_it() {
    let Some(server) = private_redis() else {
        return;
    };
    let s = RedisStore::connect(RedisSettings {
        url: server.url.clone(),
        replicas: 0,
        strong_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        outbox_key: "herd-outbox||t".into(),
    })
    .await
    .unwrap();

    // A new server has no scripts: the save is answered NOSCRIPT, loads it and goes again.
    s.transact(vec![set("k", "1", None, Concurrency::Unspecified)])
        .await
        .unwrap();
    let (value, v1) = read(&s, "k").await.unwrap();
    assert_eq!(value, "1");

    // Scripts the server forgot (a restart, SCRIPT FLUSH) are loaded again, and a conditional
    // save still checks its ETag.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut s.conn.clone())
        .await
        .unwrap();
    s.transact(vec![set(
        "k",
        "2",
        Some(&v1.to_string()),
        Concurrency::Unspecified,
    )])
    .await
    .unwrap();
    let (value, v2) = read(&s, "k").await.unwrap();
    assert_eq!((value.as_str(), v2 > v1), ("2", true));
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut s.conn.clone())
        .await
        .unwrap();
    let err = s
        .transact(vec![set(
            "k",
            "3",
            Some(&v1.to_string()),
            Concurrency::Unspecified,
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::EtagMismatch { .. }), "{err:?}");
}
