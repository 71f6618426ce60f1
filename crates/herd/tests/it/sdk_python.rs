//! The official Dapr Python SDK (`dapr`, gRPC) against herd's gRPC API, unchanged: the program
//! in `crates/herd/tests/python/sdk_client.py` runs as a herd service and finds the API through
//! the `DAPR_GRPC_PORT` herd gives it; a Python gRPC app (`dapr-ext-grpc`, `app_protocol =
//! "grpc"`) receives a subscription and an invocation through `AppCallback`, and a plain HTTP
//! app the same over HTTP. The SDK versions are pinned in `tests/python/requirements.txt`,
//! which `.ci/run` installs; without python3 or the SDK importable the test reports itself
//! skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::sdk::record;
use crate::state::{call_at, run_id};
use crate::util::{Herd, free_port, wait_for};

/// Where the Python programs live.
pub(crate) fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// Whether python3 with the pinned SDK and its gRPC extension can be imported here.
pub(crate) fn python_sdk() -> bool {
    Command::new("python3")
        .args(["-c", "import dapr.clients, dapr.ext.grpc"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The JSON lines an app appended to `file`.
fn lines(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dapr_python_sdk_works_over_grpc_and_app_callback() {
    if !python_sdk() {
        eprintln!(
            "skipped: python3 with dapr and dapr-ext-grpc is not available (pip install -r crates/herd/tests/python/requirements.txt)"
        );
        return;
    }
    let dir = python_dir();
    let run = run_id();
    let shared_app = format!("outside{run}");
    let token = format!("token-{run}");
    let (port, grpc_port) = (free_port(), free_port());
    let (http_topic, grpc_topic) = (format!("http-{run}"), format!("grpc-{run}"));
    let mut herd = Herd::prepare(&format!(
        r#"[api]
listen = "127.0.0.1:{port}"
grpc_listen = "127.0.0.1:{grpc_port}"
app_id = "{shared_app}"

[[service]]
name = "pygrpc"
command = ["python3", "{dir}/grpc_app.py"]
port = "auto"
app_protocol = "grpc"
ready = {{ timeout = "60s" }}
env = {{ TOPIC = "{grpc_topic}", RECEIVED_FILE = "grpc-received.jsonl" }}

[[service]]
name = "pyhttp"
command = ["python3", "{dir}/http_app.py"]
port = "auto"
env = {{ TOPIC = "{http_topic}", RECEIVED_FILE = "http-received.jsonl" }}

[[service]]
name = "pyclient"
command = ["python3", "{dir}/sdk_client.py"]
ready = {{ mode = "notify", timeout = "60s" }}
env = {{ SDK_RESULT_FILE = "sdk-result.json", GO_FILE = "go", HTTP_TOPIC = "{http_topic}", GRPC_TOPIC = "{grpc_topic}", DAPR_API_METHOD_INVOCATION_PROTOCOL = "grpc" }}
"#,
        dir = dir.display()
    ));
    herd.env.push(("HERD_API_TOKEN".into(), token.clone()));
    herd.spawn();
    let shared = ([127, 0, 0, 1], port).into();
    let auth = [("dapr-api-token", token.as_str())];

    // Both apps' subscriptions are active (the gRPC one found by ListTopicSubscriptions).
    wait_for("both subscriptions", Duration::from_secs(60), || {
        let r = call_at(shared, "GET", "/v1.0/metadata", &auth, "");
        let subs = r.json()["subscriptions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let has =
            |app: &str, topic: &str| subs.iter().any(|s| s["app"] == app && s["topic"] == topic);
        (has("pygrpc", &grpc_topic) && has("pyhttp", &http_topic)).then_some(())
    });
    std::fs::write(herd.dir.path().join("go"), "").unwrap();
    let file = herd.dir.path().join("sdk-result.json");
    let r = record(&mut herd, "pyclient", &file, Duration::from_secs(60));

    // The SDK reached the service's own gRPC port.
    assert!(
        r["grpcPort"]
            .as_str()
            .is_some_and(|p| p.parse::<u16>().is_ok()),
        "{r}"
    );
    assert_ne!(r["grpcPort"], json!(grpc_port.to_string()));

    // State: values as sent, ETags, the SDK's error for a stale one, nothing written then.
    assert_eq!(r["get"]["data"], "hello");
    assert!(r["get"]["etag"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(r["missing"]["data"], "");
    assert_eq!(r["stale"]["code"], "ABORTED", "{r}");
    assert_eq!(r["stale"]["reason"], "DAPR_STATE_ETAG_MISMATCH", "{r}");
    assert_eq!(r["afterStale"], "hello again");
    assert_eq!(r["staleDelete"]["code"], "ABORTED", "{r}");
    let bulk = r["bulk"].as_array().unwrap();
    assert_eq!(bulk[0]["data"], "1");
    assert_eq!(bulk[1]["data"], r#"{"n": 2}"#);
    assert_eq!(bulk[2], json!({"key": "absent", "data": "", "etag": ""}));
    assert_eq!(r["afterDelete"], "");
    assert_eq!(r["staleTransaction"]["code"], "ABORTED", "{r}");
    assert_eq!(r["afterStaleTransaction"], "", "all or nothing");
    assert_eq!(r["afterTransaction"], json!(["one", ""]));

    // Bad requests get Dapr's codes.
    assert_eq!(r["unknownStore"]["code"], "INVALID_ARGUMENT", "{r}");
    assert_eq!(r["badKey"]["code"], "INVALID_ARGUMENT", "{r}");
    assert_eq!(r["badKey"]["reason"], "DAPR_STATE_ILLEGAL_KEY", "{r}");
    assert_eq!(r["query"]["code"], "UNIMPLEMENTED", "{r}");
    assert_eq!(r["unknownPubsub"]["code"], "NOT_FOUND", "{r}");

    // Invocation: the HTTP app got the verb, path and body; the gRPC app got OnInvoke.
    let http = &r["invokeHttp"];
    assert_eq!(http["method"], "PUT");
    assert_eq!(http["path"], "/items/7");
    assert_eq!(http["body"], "hi");
    assert_eq!(http["caller"], "pyclient");
    let grpc = &r["invokeGrpc"];
    assert_eq!(grpc["body"]["data"], "ping", "{r}");
    assert_eq!(grpc["body"]["caller"], "pyclient");
    assert_eq!(grpc["body"]["traceparent"], true);
    assert_eq!(grpc["contentType"], "application/json");
    assert_eq!(r["invokeMissing"]["code"], "UNIMPLEMENTED", "{r}");

    // Locks: Dapr's unlock statuses.
    assert_eq!(
        r["lock"],
        json!({"granted": true, "held": false, "unlockOthers": 2, "unlock": 0, "unlockAgain": 1})
    );

    // Metadata: the service's app id, its components, what it set.
    assert_eq!(r["metadata"]["id"], "pyclient");
    assert_eq!(r["metadata"]["components"], json!(["pubsub", "statestore"]));
    assert_eq!(r["metadata"]["extended"]["stage"], "test");

    // Deliveries: the HTTP app got its event; the gRPC app got both of its own, the one it
    // answered RETRY once again.
    let received = |name: &str, n: usize| {
        let path = herd.dir.path().join(name);
        wait_for(name, Duration::from_secs(30), || {
            let l = lines(&path);
            (l.len() >= n).then_some(l)
        })
    };
    let got = received("http-received.jsonl", 1);
    assert_eq!(got[0]["data"], json!({"to": "http"}));
    assert_eq!(got[0]["source"], "pyclient");
    let got = received("grpc-received.jsonl", 3);
    let plain: Vec<_> = got
        .iter()
        .filter(|e| e["data"] == json!({"to": "grpc"}))
        .collect();
    assert_eq!(plain.len(), 1, "{got:?}");
    assert_eq!(plain[0]["content_type"], "application/json");
    let retried: Vec<_> = got.iter().filter(|e| e["data"]["fail"] == 1).collect();
    assert_eq!(retried.len(), 2, "RETRY redelivers: {got:?}");
    assert_eq!(retried[1]["attempt"], 2);
}
