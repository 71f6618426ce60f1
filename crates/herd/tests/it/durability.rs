//! State under stress: kill -9 herd while clients write to the embedded store (every acknowledged
//! write must be there after a restart), and concurrent first-write increments on one key on each
//! backend (R5: no lost update, and the recorded history is linearizable).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use herd_testkit::{History, Register, RegisterInput, RegisterOutput};
use serde_json::json;

use crate::state::{Api, component, run_id, skipped};
use crate::util::{Client, wait_for};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut api = Api::start(&format!("d{}", run_id()), "");
    let acked: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (acked, stop, count, addr) = (&acked, &stop, &count, api.addr);
            s.spawn(move || {
                let mut client = Client::new(addr);
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = format!("k-{t}-{i}");
                    let body = json!([{"key": key, "value": i}]).to_string();
                    match client.request("POST", "/v1.0/state/statestore", &[], body.as_bytes()) {
                        Ok(r) if r.status == 204 => {
                            acked.lock().unwrap().push((key, i));
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        // herd is gone: the outcome of this write is unknown, stop here.
                        _ => return,
                    }
                }
            });
        }
        wait_for("writes to be acknowledged", Duration::from_secs(30), || {
            (count.load(Ordering::Relaxed) >= 400).then_some(())
        });
        api.herd.signal(nix::sys::signal::Signal::SIGKILL);
        api.herd.wait_exit(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
    });
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() >= 400);

    api.herd.spawn();
    wait_for("components connected", Duration::from_secs(20), || {
        (api.call("GET", "/v1.0/healthz/outbound", "").status == 204).then_some(())
    });
    let mut missing = Vec::new();
    for chunk in acked.chunks(200) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let r = api.call(
            "POST",
            "/v1.0/state/statestore/bulk",
            &json!({"keys": keys}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        for ((key, value), item) in chunk.iter().zip(r.json().as_array().unwrap()) {
            if item["data"] != json!(value) {
                missing.push(key.clone());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}

/// R5 on one backend: `clients` threads each make `rounds` read-modify-write increments.
fn increments(kind: &str) {
    let run = run_id();
    let Some(component) = component("store", kind) else {
        return skipped(if kind == "redis" {
            "HERD_TEST_REDIS_URL"
        } else {
            "HERD_TEST_POSTGRES_URL"
        });
    };
    let api = Api::start(&format!("r{run}"), &component);
    let path = "/v1.0/state/store";
    let r = api.call(
        "POST",
        path,
        &json!([{"key": "counter", "value": 0}]).to_string(),
    );
    assert_eq!(r.status, 204, "{}", r.body);

    let history: History<RegisterInput<u64>, RegisterOutput<u64>> = History::new();
    let successes = AtomicUsize::new(0);
    let (clients, rounds) = (8, 25);
    std::thread::scope(|s| {
        for c in 0..clients {
            let (history, successes, addr) = (&history, &successes, api.addr);
            s.spawn(move || {
                let mut client = Client::new(addr);
                for _ in 0..rounds {
                    let read = history.call(c, RegisterInput::Read);
                    let Ok(r) = client.get("/v1.0/state/store/counter", &[]) else {
                        continue;
                    };
                    assert_eq!(r.status, 200, "{}", r.body);
                    let value = r.json().as_u64().expect("a number");
                    let etag = r.header("etag").expect("etag").to_string();
                    read.ret(RegisterOutput::Value(value));
                    let save = history.call(c, RegisterInput::CompareAndSet {
                        expected: value,
                        new: value + 1,
                    });
                    let body = json!([{"key": "counter", "value": value + 1, "etag": etag, "options": {"concurrency": "first-write"}}]);
                    match client.request("POST", path, &[], body.to_string().as_bytes()) {
                        Ok(r) if r.status == 204 => {
                            successes.fetch_add(1, Ordering::Relaxed);
                            save.ret(RegisterOutput::Ok);
                        }
                        Ok(r) if r.status == 409 => save.ret(RegisterOutput::Fail),
                        _ => save.unknown(),
                    }
                }
            });
        }
    });
    let final_value = api
        .call("GET", "/v1.0/state/store/counter", "")
        .json()
        .as_u64()
        .unwrap();
    let won = successes.load(Ordering::Relaxed) as u64;
    assert!(won > 0, "no increment succeeded");
    assert_eq!(
        final_value, won,
        "lost update: {won} increments acknowledged, counter is {final_value}"
    );
    history.check(&Register::new(0u64)).assert_linearizable();
}

#[test]
fn r5_increments_embedded() {
    increments("embedded");
}

#[test]
fn r5_increments_redis() {
    increments("redis");
}

#[test]
fn r5_increments_postgres() {
    increments("postgres");
}
