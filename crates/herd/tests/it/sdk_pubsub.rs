//! Pub/sub with the official Dapr JavaScript SDK (`@dapr/dapr`, HTTP protocol), unchanged:
//! `crates/herd/tests/node/dapr-sdk-pubsub.js` runs as a `port = "auto"` herd service holding a
//! `DaprServer` (subscriptions registered before `start()`, found by herd through the SDK's own
//! `GET /dapr/subscribe`) and publishing through the embedded `DaprClient` (`publish` with JSON,
//! text, explicit content type and metadata, its own CloudEvents, and `publishBulk`). The
//! program records every handler call and every request as it arrived; this test checks that
//! each published message reached the right handler exactly once with its data and the
//! CloudEvent attributes and headers the SDK exposes, that a handler answering RETRY gets the
//! message again, and that one answering DROP sends it to the dead-letter topic, whose
//! subscriber gets it once. The same program runs once more in gRPC mode (its `DaprServer` an
//! `AppCallback` server under `app_protocol = "grpc"`). Without `node` and `npm` on `PATH` the
//! tests report themselves skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sdk::{app_dir, npm_install, on_path, pinned_version, record};
use crate::util::{Herd, free_port, wait_for};

const SERVICE: &str = "sdk-pubsub";

/// The program's `{kind: "delivery"}` and `{kind: "wire"}` lines so far.
fn lines(file: &Path) -> (Vec<Value>, Vec<Value>) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let all: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of = |kind: &str| {
        all.iter()
            .filter(|l| l["kind"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    (of("delivery"), of("wire"))
}

/// How many handler calls each `(topic, route, data, answer)` got.
fn tally(deliveries: &[Value]) -> BTreeMap<(String, String, String, String), usize> {
    let mut out = BTreeMap::new();
    for d in deliveries {
        let key = (
            d["topic"].as_str().unwrap().to_string(),
            d["route"].as_str().unwrap().to_string(),
            d["data"].to_string(),
            d["answer"].as_str().unwrap_or("-").to_string(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

fn key(topic: &str, route: &str, data: Value, answer: &str) -> (String, String, String, String) {
    (
        topic.to_string(),
        route.to_string(),
        data.to_string(),
        answer.to_string(),
    )
}

/// The trace id of a W3C `traceparent`, checked for shape.
fn trace_id(traceparent: &Value) -> &str {
    let tp = traceparent
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent: {traceparent}"));
    let parts: Vec<&str> = tp.split('-').collect();
    assert!(
        parts.len() == 4 && parts[0] == "00" && parts[1].len() == 32 && parts[2].len() == 16,
        "{tp}"
    );
    parts[1]
}

#[test]
fn dapr_js_sdk_pubsub_works_against_herd_unchanged() {
    if !on_path("node") || !on_path("npm") {
        eprintln!("skipped: node or npm is not on PATH");
        return;
    }
    let dir = app_dir();
    npm_install(&dir).unwrap_or_else(|e| panic!("{e}"));

    let port = free_port();
    let mut herd = Herd::prepare(&format!(
        r#"[api]
listen = "127.0.0.1:{port}"

[[service]]
name = "{SERVICE}"
command = ["node", "{}"]
port = "auto"
env = {{ SDK_RESULT_FILE = "sdk-pubsub-result.json", SDK_EVENTS_FILE = "sdk-pubsub-events.jsonl" }}
"#,
        dir.join("dapr-sdk-pubsub.js").display()
    ));
    herd.spawn();
    let result = herd.dir.path().join("sdk-pubsub-result.json");
    let events = herd.dir.path().join("sdk-pubsub-events.jsonl");
    let r = record(&mut herd, SERVICE, &result, Duration::from_secs(45));

    // The SDK's subscriptions reached herd through GET /dapr/subscribe, with its route paths.
    assert_eq!(r["sdkVersion"], json!(pinned_version(&dir)), "{r}");
    assert_eq!(r["appId"], SERVICE);
    let subs = r["subscriptions"].as_array().unwrap();
    let routed = subs
        .iter()
        .find(|s| s["topic"] == "sdk-routed")
        .unwrap_or_else(|| panic!("{subs:?}"));
    assert_eq!(
        routed["rules"],
        json!([
            {"match": "event.type == \"order.created\"", "path": "/pubsub--sdk-routed--created"},
            {"match": "", "path": "/pubsub--sdk-routed--other"}
        ])
    );
    let drop = subs.iter().find(|s| s["topic"] == "sdk-drop").unwrap();
    assert_eq!(drop["deadLetterTopic"], "sdk-dead");

    // Every publish was accepted, the bulk one entry by entry.
    for (name, outcome) in r["publish"].as_object().unwrap() {
        assert!(outcome.is_null(), "publish {name}: {outcome}");
    }
    assert_eq!(r["bulk"]["failed"], json!([]), "{}", r["bulk"]);

    // Wait until the dead-letter subscriber and the retried handler's second call are in, and
    // every other message arrived; then count.
    let expected = [
        key("sdk-plain", "default", json!({"kind": "json", "n": 1}), "-"),
        key("sdk-plain", "default", json!("hello from the sdk"), "-"),
        key(
            "sdk-plain",
            "default",
            json!({"kind": "typed", "n": 2}),
            "-",
        ),
        key("sdk-routed", "created", json!({"order": 7}), "-"),
        key("sdk-routed", "other", json!({"order": 7}), "-"),
        key("sdk-routed", "other", json!({"kind": "json-routed"}), "-"),
        key("sdk-bulk", "default", json!({"bulk": 1}), "-"),
        key("sdk-bulk", "default", json!({"bulk": 2}), "-"),
        key("sdk-bulk", "default", json!("bulk text"), "-"),
        key("sdk-bulk", "default", json!({"bulk": 3}), "-"),
        key("sdk-retry", "default", json!({"key": "again"}), "RETRY"),
        key("sdk-retry", "default", json!({"key": "again"}), "SUCCESS"),
        key("sdk-drop", "default", json!({"key": "dropped"}), "DROP"),
        key("sdk-dead", "default", json!({"key": "dropped"}), "-"),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let arrived = wait_for("every delivery", Duration::from_secs(25), || {
        let (deliveries, wire) = lines(&events);
        let seen = tally(&deliveries);
        // A wire line is written when the answer has gone out, after the handler's line.
        if expected.iter().all(|k| seen.contains_key(k)) && wire.len() >= deliveries.len() {
            Some(Some((deliveries, wire)))
        } else if Instant::now() > deadline {
            Some(None)
        } else {
            None
        }
    });
    let Some((deliveries, wire)) = arrived else {
        panic!(
            "not every message arrived; recorded:\n{}\nlogs:\n{}",
            std::fs::read_to_string(&events).unwrap_or_default(),
            herd.logs(SERVICE)
        );
    };

    // Exactly once each (RETRY then SUCCESS once each), and nothing else.
    let seen = tally(&deliveries);
    for k in &expected {
        assert_eq!(seen[k], 1, "{k:?} in {seen:#?}");
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "unexpected deliveries: {seen:#?}"
    );

    // What the SDK hands a handler besides the data: the delivery's headers.
    for d in &deliveries {
        let h = &d["headers"];
        assert_eq!(h["contentType"], "application/cloudevents+json", "{d}");
        assert_eq!(h["pubsubname"], "pubsub", "{d}");
        trace_id(&h["traceparent"]);
    }

    // The CloudEvents as they arrived at the SDK's routes, each answered 200 with its status.
    let at = |path: &str| -> Vec<&Value> {
        wire.iter()
            .filter(|w| w["path"] == path)
            .map(|w| &w["event"])
            .collect()
    };
    for w in &wire {
        assert_eq!(w["status"], 200, "{w}");
        let e = &w["event"];
        assert_eq!(e["specversion"], "1.0", "{w}");
        assert_eq!(e["pubsubname"], "pubsub", "{w}");
        assert!(e["id"].as_str().is_some_and(|id| !id.is_empty()), "{w}");
        trace_id(&e["traceparent"]);
    }
    let plain = at("/pubsub--sdk-plain--default");
    assert_eq!(plain.len(), 3, "{plain:?}");
    for e in &plain {
        assert_eq!(e["source"], SERVICE, "{e}");
        assert_eq!(e["type"], "com.dapr.event.sent", "{e}");
        assert_eq!(e["topic"], "sdk-plain", "{e}");
    }
    let text = plain
        .iter()
        .find(|e| e["data"] == "hello from the sdk")
        .unwrap();
    assert_eq!(text["datacontenttype"], "text/plain");
    let typed = plain.iter().find(|e| e["data"]["kind"] == "typed").unwrap();
    assert_eq!(typed["datacontenttype"], "application/json");

    // The SDK's own CloudEvents keep their id, source and type; the rule routed by type.
    let created = at("/pubsub--sdk-routed--created");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["id"], "ce-created");
    assert_eq!(created[0]["source"], "sdk-test");
    assert_eq!(created[0]["type"], "order.created");
    assert_eq!(created[0]["topic"], "sdk-routed");
    let other = at("/pubsub--sdk-routed--other");
    let ids: Vec<&Value> = other.iter().map(|e| &e["type"]).collect();
    assert_eq!(other.len(), 2, "{other:?}");
    assert!(ids.contains(&&json!("order.paid")), "{ids:?}");
    assert!(ids.contains(&&json!("com.dapr.event.sent")), "{ids:?}");
    assert!(other.iter().any(|e| e["id"] == "ce-paid"));

    // Bulk entries become one CloudEvent each; the CloudEvent entry keeps its attributes.
    let bulk = at("/pubsub--sdk-bulk--default");
    assert_eq!(bulk.len(), 4, "{bulk:?}");
    let ce = bulk.iter().find(|e| e["id"] == "ce-bulk").unwrap();
    assert_eq!(ce["type"], "bulk.event");
    assert_eq!(ce["source"], "sdk-test");
    assert_eq!(ce["data"], json!({"bulk": 3}));

    // RETRY: the same event (same id) came again.
    let retried = at("/pubsub--sdk-retry--default");
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert_eq!(retried[0]["id"], retried[1]["id"]);

    // DROP: not retried, and the dead-letter subscriber got that very event.
    let dropped = at("/pubsub--sdk-drop--default");
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    let dead = at("/pubsub--sdk-dead--default");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["id"], dropped[0]["id"]);
    assert_eq!(dead[0]["data"], json!({"key": "dropped"}));
}

/// The same program with `CommunicationProtocolEnum.GRPC`: its `DaprServer` is the SDK's
/// `AppCallback` server (`app_protocol = "grpc"`; herd asks `ListTopicSubscriptions` and calls
/// `OnTopicEvent`), its client publishes over Dapr's gRPC API. Every message reaches the right
/// handler once, RETRY redelivers, DROP goes to the dead-letter subscriber.
#[test]
fn dapr_js_sdk_pubsub_works_over_grpc() {
    if !on_path("node") || !on_path("npm") {
        eprintln!("skipped: node or npm is not on PATH");
        return;
    }
    let dir = app_dir();
    npm_install(&dir).unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let mut herd = Herd::prepare(&format!(
        r#"[api]
listen = "127.0.0.1:{port}"
grpc_listen = "127.0.0.1:{grpc}"

[[service]]
name = "{SERVICE}"
command = ["node", "{}"]
port = "auto"
app_protocol = "grpc"
ready = {{ timeout = "60s" }}
env = {{ SDK_RESULT_FILE = "result.json", SDK_EVENTS_FILE = "events.jsonl", SDK_PROTOCOL = "grpc", SDK_GO_FILE = "go" }}
"#,
        dir.join("dapr-sdk-pubsub.js").display(),
        grpc = free_port(),
    ));
    herd.spawn();
    let api = ([127, 0, 0, 1], port).into();
    wait_for("the subscriptions", Duration::from_secs(60), || {
        let meta = crate::state::call_at(api, "GET", "/v1.0/metadata", &[], "").json();
        let active = meta["subscriptions"].as_array()?.len();
        (active == 6).then_some(())
    });
    std::fs::write(herd.dir.path().join("go"), "").unwrap();
    let result = herd.dir.path().join("result.json");
    let events = herd.dir.path().join("events.jsonl");
    let r = record(&mut herd, SERVICE, &result, Duration::from_secs(45));
    assert_eq!(r["protocol"], "grpc");
    assert_eq!(r["appId"], SERVICE);
    for (name, outcome) in r["publish"].as_object().unwrap() {
        assert!(outcome.is_null(), "publish {name}: {outcome}");
    }
    assert_eq!(r["bulk"]["failed"], json!([]), "{}", r["bulk"]);
    let expected = [
        key("sdk-plain", "default", json!({"kind": "json", "n": 1}), "-"),
        key("sdk-plain", "default", json!("hello from the sdk"), "-"),
        key(
            "sdk-plain",
            "default",
            json!({"kind": "typed", "n": 2}),
            "-",
        ),
        key("sdk-routed", "created", json!({"order": 7}), "-"),
        key("sdk-routed", "other", json!({"order": 7}), "-"),
        key("sdk-routed", "other", json!({"kind": "json-routed"}), "-"),
        key("sdk-bulk", "default", json!({"bulk": 1}), "-"),
        key("sdk-bulk", "default", json!({"bulk": 2}), "-"),
        key("sdk-bulk", "default", json!("bulk text"), "-"),
        key("sdk-bulk", "default", json!({"bulk": 3}), "-"),
        key("sdk-retry", "default", json!({"key": "again"}), "RETRY"),
        key("sdk-retry", "default", json!({"key": "again"}), "SUCCESS"),
        key("sdk-drop", "default", json!({"key": "dropped"}), "DROP"),
        key("sdk-dead", "default", json!({"key": "dropped"}), "-"),
    ];
    let deliveries = wait_for("every delivery", Duration::from_secs(30), || {
        let (deliveries, _) = lines(&events);
        let seen = tally(&deliveries);
        expected
            .iter()
            .all(|k| seen.contains_key(k))
            .then_some(deliveries)
    });
    let seen = tally(&deliveries);
    for k in &expected {
        assert_eq!(seen[k], 1, "{k:?} in {seen:#?}");
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "unexpected deliveries: {seen:#?}"
    );
}
