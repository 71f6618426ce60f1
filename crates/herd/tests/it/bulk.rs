//! Dapr's bulk subscribe end to end on the embedded log: a programmatic `bulkSubscribe`
//! subscription gets its messages in batches of Dapr's envelope, routed per entry by the rules,
//! and the app's per-entry statuses settle each message: SUCCESS acknowledges, RETRY delivers
//! it again, DROP sends it to the dead-letter topic. With rules only, an entry no rule matches
//! is not sent but dead-lettered.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::pubsub::{events, publish, subscriber};
use crate::state::Api;
use crate::util::{node_available, wait_for};

#[test]
fn bulk_subscriptions_get_batches_and_per_entry_statuses_settle_them() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let events_dir = tempfile::tempdir().unwrap();
    let dir = events_dir.path();
    let programmatic = json!([{
        "pubsubname": "pubsub",
        "topic": "batch",
        "routes": {"default": "/batch", "rules": [{"match": "event.type == \"special\"", "path": "/special"}]},
        "deadLetterTopic": "dead",
        "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 300}
    }]);
    let api = start_with_morgue("bulk", dir, &programmatic);
    std::thread::scope(|s| {
        for lane in 0..6u64 {
            let api = &api;
            s.spawn(move || {
                for n in (lane..30).step_by(6) {
                    let action = match n {
                        5 => "drop",
                        7 => "retry-once",
                        _ => "",
                    };
                    if n == 9 {
                        let ce = json!({"specversion": "1.0", "id": "ce-9", "source": "test", "type": "special", "data": {"n": 9}});
                        publish(api, "batch", &ce, "application/cloudevents+json");
                    } else {
                        let body = json!({"n": n, "action": action});
                        publish(api, "batch", &body, "application/json");
                    }
                }
            });
        }
    });
    let all: BTreeSet<u64> = (0..30).collect();
    let numbers = |evs: &[Value]| -> Vec<u64> {
        evs.iter().filter_map(|e| e["data"]["n"].as_u64()).collect()
    };
    wait_for(
        "every message delivered, 7 twice, 5 dead-lettered",
        Duration::from_secs(60),
        || {
            let got = numbers(&events(dir, "bulky"));
            let unique: BTreeSet<u64> = got.iter().copied().collect();
            let sevens = got.iter().filter(|&&n| n == 7).count();
            let dead = numbers(&events(dir, "morgue"));
            (unique == all && sevens >= 2 && dead == [5]).then_some(())
        },
    );
    let got = events(dir, "bulky");
    let sizes: Vec<u64> = got.iter().filter_map(|e| e["bulk"].as_u64()).collect();
    assert_eq!(
        sizes.len(),
        got.len(),
        "every delivery was a bulk one: {got:?}"
    );
    assert!(sizes.iter().all(|&n| (1..=10).contains(&n)), "{sizes:?}");
    assert!(
        sizes.iter().any(|&n| n > 1),
        "messages published together share a batch: {sizes:?}"
    );
    for e in &got {
        assert_eq!(e["topic"], "batch");
        assert_eq!(e["pubsubname"], "pubsub");
        assert_eq!(e["contentType"], "application/cloudevents+json");
        let want = if e["data"]["n"] == 9 {
            "/special"
        } else {
            "/batch"
        };
        assert_eq!(e["path"], want, "{e}");
    }
    // Acknowledged entries are not delivered again: only 7 (RETRY once) comes twice.
    let twice: Vec<u64> = (0..30)
        .filter(|n| numbers(&got).iter().filter(|m| *m == n).count() > 1)
        .collect();
    assert_eq!(twice, [7], "{got:?}");
}

#[test]
fn bulk_entries_no_rule_matches_are_dead_lettered_not_sent() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let events_dir = tempfile::tempdir().unwrap();
    let dir = events_dir.path();
    // Rules only: no default route, so an entry of another type has nowhere to go.
    let programmatic = json!([{
        "pubsubname": "pubsub",
        "topic": "picky",
        "routes": {"rules": [{"match": "event.type == \"special\"", "path": "/special"}]},
        "deadLetterTopic": "dead",
        "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 300}
    }]);
    let api = start_with_morgue("bulk-rules", dir, &programmatic);
    for n in 0..10u64 {
        if n % 2 == 0 {
            let ce = json!({"specversion": "1.0", "id": format!("ce-{n}"), "source": "test", "type": "special", "data": {"n": n}});
            publish(&api, "picky", &ce, "application/cloudevents+json");
        } else {
            publish(&api, "picky", &json!({"n": n}), "application/json");
        }
    }
    let numbers = |evs: &[Value]| -> BTreeSet<u64> {
        evs.iter().filter_map(|e| e["data"]["n"].as_u64()).collect()
    };
    wait_for(
        "the matching entries delivered, the others dead-lettered",
        Duration::from_secs(60),
        || {
            let got = numbers(&events(dir, "bulky"));
            let dead = numbers(&events(dir, "morgue"));
            (got.len() == 5 && dead.len() == 5).then_some(())
        },
    );
    let got = events(dir, "bulky");
    assert_eq!(numbers(&got), BTreeSet::from([0, 2, 4, 6, 8]), "{got:?}");
    for e in &got {
        assert!(e["bulk"].as_u64().is_some(), "a bulk delivery: {e}");
        assert_eq!(e["path"], "/special", "{e}");
    }
    let dead = events(dir, "morgue");
    assert_eq!(numbers(&dead), BTreeSet::from([1, 3, 5, 7, 9]), "{dead:?}");
}

/// herd with the `bulky` subscriber (its programmatic subscriptions `programmatic`) and a
/// `morgue` service subscribed to `dead`, once both subscriptions run.
fn start_with_morgue(name: &str, dir: &std::path::Path, programmatic: &serde_json::Value) -> Api {
    let config = format!(
        "{}{}[[subscription]]\nservice = \"morgue\"\npubsub = \"pubsub\"\ntopic = \"dead\"\nroute = \"/dead\"\n",
        subscriber("bulky", 1, dir, programmatic),
        subscriber("morgue", 1, dir, &json!([])),
    );
    let api = Api::start(name, &config);
    wait_for(
        "the subscriptions to start",
        Duration::from_secs(60),
        || {
            let meta = api.call("GET", "/v1.0/metadata", "").json();
            (meta["subscriptions"].as_array()?.len() >= 2).then_some(())
        },
    );
    api
}
