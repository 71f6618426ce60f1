//! The official Dapr JavaScript SDK (`@dapr/dapr`, HTTP protocol, and once more over gRPC)
//! against herd, unchanged: the program in `crates/herd/tests/node/` runs as a herd service,
//! finds the sidecar API through the `DAPR_HTTP_PORT` (or `DAPR_GRPC_PORT`) and
//! `DAPR_API_TOKEN` herd gives it, drives the state and lock clients and
//! records what the SDK returned; this test checks that record, then reads the SDK's writes back
//! through the HTTP API under the service's app id. Its npm dependencies are installed with
//! `npm ci` on first use; without `node` and `npm` on `PATH` the test reports itself skipped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::state::{Api, call_at, run_id};
use crate::util::{Herd, free_port};

/// Where the SDK program and its `package.json` live.
pub(crate) fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

pub(crate) fn on_path(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `npm ci` unless `node_modules` already holds what `package-lock.json` pins (a copy of
/// the lock file is kept there as a stamp). An exclusive `flock` on a file beside it keeps two
/// test runs from installing into the same tree at once.
pub(crate) fn npm_install(dir: &Path) -> Result<(), String> {
    let lock_file =
        std::fs::File::create(dir.join(".npm-install.lock")).map_err(|e| e.to_string())?;
    let _held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking the npm install: {e}"))?;
    let lock = std::fs::read(dir.join("package-lock.json")).map_err(|e| e.to_string())?;
    let stamp = dir.join("node_modules/.herd-installed-lock.json");
    if std::fs::read(&stamp).ok().as_deref() == Some(lock.as_slice()) {
        return Ok(());
    }
    let out = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running npm ci: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm ci failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(&stamp, &lock).map_err(|e| e.to_string())
}

/// The `@dapr/dapr` version `package.json` pins.
pub(crate) fn pinned_version(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("package.json")).unwrap();
    let package: Value = serde_json::from_str(&text).unwrap();
    package["dependencies"]["@dapr/dapr"]
        .as_str()
        .expect("@dapr/dapr pinned")
        .to_string()
}

/// Waits for the program's record, failing with herd's logs if it never comes.
pub(crate) fn record(herd: &mut Herd, service: &str, file: &Path, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            let r: Value =
                serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(
                r.get("error").is_none(),
                "the SDK program failed: {}\nlogs:\n{}",
                r["error"].as_str().unwrap_or_default(),
                herd.logs(service)
            );
            return r;
        }
        if let Some(status) = herd.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("herd exited ({status}):\n{}", herd.stderr());
        }
        assert!(
            Instant::now() < deadline,
            "no record from the SDK program within {limit:?}; logs:\n{}\nherd:\n{}",
            herd.logs(service),
            herd.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status and Dapr error code of a failure the SDK reported.
fn failed(r: &Value) -> (u64, &str) {
    (
        r["status"]
            .as_u64()
            .unwrap_or_else(|| panic!("no status in {r}")),
        r["errorCode"].as_str().unwrap_or_default(),
    )
}

/// Runs `dapr-sdk.js` as a herd service over `protocol` (`http` or `grpc`), with an API token
/// set; the record, the shared listener's port and the token. `None` without node and npm.
fn run_js_sdk(protocol: &str) -> Option<(Herd, Value, u16, String)> {
    if !on_path("node") || !on_path("npm") {
        eprintln!("skipped: node or npm is not on PATH");
        return None;
    }
    let dir = app_dir();
    npm_install(&dir).unwrap_or_else(|e| panic!("{e}"));

    let run = run_id();
    let shared_app = format!("outside{run}");
    let service = "sdk-app";
    let token = format!("token-{run}");
    let port = free_port();
    let mut herd = Herd::prepare(&format!(
        r#"[api]
listen = "127.0.0.1:{port}"
grpc_listen = "127.0.0.1:{grpc}"
app_id = "{shared_app}"

[[service]]
name = "{service}"
command = ["node", "{}"]
ready = {{ mode = "notify", timeout = "60s" }}
env = {{ SDK_RESULT_FILE = "sdk-result.json", SDK_PROTOCOL = "{protocol}" }}
"#,
        dir.join("dapr-sdk.js").display(),
        grpc = free_port(),
    ));
    herd.env.push(("HERD_API_TOKEN".into(), token.clone()));
    herd.spawn();
    let file = herd.dir.path().join("sdk-result.json");
    let r = record(&mut herd, service, &file, Duration::from_secs(45));
    assert_eq!(r["sdkVersion"], json!(pinned_version(&dir)), "{r}");
    assert_eq!(r["protocol"], protocol);
    Some((herd, r, port, token))
}

/// The same program with `CommunicationProtocolEnum.GRPC`: every call over Dapr's gRPC API on
/// the `DAPR_GRPC_PORT` herd set; conflicts are the SDK's ABORTED errors.
#[test]
fn dapr_js_sdk_works_over_grpc() {
    let Some((_herd, r, _, _)) = run_js_sdk("grpc") else {
        return;
    };
    let service = "sdk-app";
    assert_eq!(r["tokenGiven"], true);
    assert_eq!(r["metadata"]["id"], service, "{r}");
    assert_eq!(
        r["bareMetadataId"], service,
        "DAPR_GRPC_ENDPOINT alone finds the API"
    );
    assert!(r["save"].is_null(), "{}", r["save"]);
    assert_eq!(r["get"]["order"], json!({"item": "book", "qty": 1}));
    assert_eq!(r["get"]["greeting"], "hello");
    assert_eq!(r["get"]["count"], 42);
    assert_eq!(r["get"]["missing"], "");
    let bulk = r["bulk"].as_array().expect("a bulk answer");
    assert_eq!(bulk[0]["data"], json!({"item": "book", "qty": 1}));
    assert!(bulk[0]["etag"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(bulk[2]["data"], "", "a missing key has no data");
    assert_eq!(r["etagChanged"], true);
    let aborted = |k: &str| r[k]["grpcStatus"] == "ABORTED";
    assert!(aborted("staleSave"), "{}", r["staleSave"]);
    assert_eq!(r["afterStaleSave"], json!({"item": "book", "qty": 2}));
    assert_eq!(r["afterLastWrite"], json!({"item": "book", "qty": 3}));
    assert!(aborted("staleDelete"), "{}", r["staleDelete"]);
    assert_eq!(r["afterDelete"], "");
    assert!(aborted("staleTransaction"), "{}", r["staleTransaction"]);
    assert_eq!(r["afterStaleTransaction"], "");
    assert!(r["transaction"].is_null(), "{}", r["transaction"]);
    let after = r["afterTransaction"].as_array().unwrap();
    assert_eq!(after[0]["data"], "one");
    assert_eq!(after[1]["data"], json!({"n": 2}));
    assert_eq!(after[2]["data"], "", "deleted in the transaction");
    assert!(r["fence"]["five"].is_null(), "{}", r["fence"]["five"]);
    assert_eq!(r["fence"]["four"]["grpcStatus"], "ABORTED");
    assert_eq!(r["afterFence"], 5);
    assert_eq!(r["lock"]["granted"], json!({"success": true}));
    assert_eq!(r["lock"]["held"], json!({"success": false}));
    assert_eq!(r["lock"]["unlockOthers"], json!({"status": 2}));
    assert_eq!(r["lock"]["unlockAgain"], json!({"status": 1}));
    assert!(r["final"].is_null(), "{}", r["final"]);
}

#[test]
fn dapr_js_sdk_works_against_herd_unchanged() {
    let Some((_herd, r, port, token)) = run_js_sdk("http") else {
        return;
    };
    let service = "sdk-app";
    // The SDK found herd through the variables herd set, and saw the service's app id.
    assert_eq!(r["tokenGiven"], true);
    assert_eq!(r["metadata"]["id"], service, "{r}");
    assert_eq!(
        r["bareMetadataId"], service,
        "DAPR_HTTP_ENDPOINT alone finds the API"
    );
    assert!(
        r["metadata"]["components"]
            .as_array()
            .unwrap()
            .contains(&json!("statestore")),
        "{r}"
    );

    // Save and get; a missing key is the SDK's empty string (herd's 204).
    assert!(r["save"].is_null(), "{}", r["save"]);
    assert_eq!(r["get"]["order"], json!({"item": "book", "qty": 1}));
    assert_eq!(r["get"]["greeting"], "hello");
    assert_eq!(r["get"]["count"], 42);
    assert_eq!(r["get"]["missing"], "");

    // getBulk: values with ETags, a missing key alone.
    let bulk = r["bulk"].as_array().expect("a bulk answer");
    assert_eq!(bulk.len(), 3, "{bulk:?}");
    assert_eq!(bulk[0]["key"], "order-1");
    assert_eq!(bulk[0]["data"], json!({"item": "book", "qty": 1}));
    assert!(bulk[0]["etag"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(bulk[1]["data"], "hello");
    assert_eq!(bulk[2], json!({"key": "missing"}));

    // ETags and options.
    assert!(r["saveWithEtag"].is_null(), "{}", r["saveWithEtag"]);
    assert_eq!(r["etagChanged"], true);
    assert_eq!(failed(&r["staleSave"]), (409, "ERR_STATE_SAVE"));
    assert_eq!(r["afterStaleSave"], json!({"item": "book", "qty": 2}));
    assert!(r["lastWrite"].is_null(), "{}", r["lastWrite"]);
    assert_eq!(r["afterLastWrite"], json!({"item": "book", "qty": 3}));

    // Delete with an ETag.
    assert_eq!(failed(&r["staleDelete"]), (409, "ERR_STATE_DELETE"));
    assert_eq!(r["afterStaleDelete"], json!({"item": "book", "qty": 3}));
    assert!(r["delete"].is_null(), "{}", r["delete"]);
    assert_eq!(r["afterDelete"], "");

    // Transactions, all or nothing.
    assert_eq!(
        failed(&r["staleTransaction"]),
        (409, "ERR_STATE_TRANSACTION")
    );
    assert_eq!(r["afterStaleTransaction"], "");
    assert!(r["transaction"].is_null(), "{}", r["transaction"]);
    let after = r["afterTransaction"].as_array().unwrap();
    assert_eq!(after[0]["data"], "one");
    assert_eq!(after[1]["data"], json!({"n": 2}));
    assert_eq!(
        after[2],
        json!({"key": "count"}),
        "deleted in the transaction"
    );

    // Request metadata (metadata.* query parameters): fencing tokens are honoured.
    assert!(r["saveWithTtl"].is_null(), "{}", r["saveWithTtl"]);
    assert!(r["fence"]["five"].is_null(), "{}", r["fence"]["five"]);
    assert_eq!(failed(&r["fence"]["four"]), (409, "ERR_STATE_SAVE"));
    assert_eq!(r["afterFence"], 5);

    // Locks: the SDK's LockStatus numbers are Dapr's.
    let lock = &r["lock"];
    assert!(!lock.is_null(), "the pinned SDK has a lock client");
    assert_eq!(lock["granted"], json!({"success": true}));
    assert_eq!(lock["held"], json!({"success": false}));
    assert_eq!(lock["unlockOthers"], json!({"status": 2}));
    assert_eq!(lock["unlock"], json!({"status": 0}));
    assert_eq!(lock["unlockAgain"], json!({"status": 1}));
    assert_eq!(lock["regranted"], json!({"success": true}));
    assert!(r["final"].is_null(), "{}", r["final"]);

    // The SDK's writes, read through the HTTP API: on the service's own port (its app id)
    // they are there; on the shared listener (another app id) they are not.
    let own: SocketAddr = ([127, 0, 0, 1], r["daprPort"].as_u64().unwrap() as u16).into();
    let shared: SocketAddr = ([127, 0, 0, 1], port).into();
    let auth = [("dapr-api-token", token.as_str())];
    let got = call_at(own, "GET", "/v1.0/state/statestore/sdk-visible", &auth, "");
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json(), json!({"from": "sdk"}));
    let got = call_at(own, "GET", "/v1.0/state/statestore/tx-1", &auth, "");
    assert_eq!(got.json(), json!("one"));
    // The TTL the SDK sent as request metadata was applied.
    let got = call_at(own, "GET", "/v1.0/state/statestore/ttl-key", &auth, "");
    assert_eq!(got.json(), json!("expires"));
    assert!(got.header("metadata.ttlexpiretime").is_some(), "{got:?}");
    let got = call_at(own, "GET", "/v1.0/metadata", &auth, "");
    assert_eq!(got.json()["id"], service);
    let got = call_at(
        shared,
        "GET",
        "/v1.0/state/statestore/sdk-visible",
        &auth,
        "",
    );
    assert_eq!(
        got.status, 204,
        "another app id must not see the key: {}",
        got.body
    );
    // The SDK sent the token by itself: without it the same port refuses.
    let got = call_at(own, "GET", "/v1.0/state/statestore/sdk-visible", &[], "");
    assert_eq!(got.status, 401, "{}", got.body);
}

/// `metadata.<name>` query parameters on a save apply to every item and win over the item's own
/// metadata, as in Dapr; the JavaScript SDK sends `save`'s `options.metadata` this way.
#[test]
fn save_takes_request_metadata_from_the_query() {
    let api = Api::start(&format!("q{}", run_id()), "");
    let save = |query: &str, items: Value| {
        api.call(
            "POST",
            &format!("/v1.0/state/statestore{query}"),
            &items.to_string(),
        )
    };
    let r = save(
        "?metadata.ttlInSeconds=3600",
        json!([{"key": "a", "value": 1}, {"key": "b", "value": 2}]),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    for key in ["a", "b"] {
        let got = api.call("GET", &format!("/v1.0/state/statestore/{key}"), "");
        assert!(
            got.header("metadata.ttlexpiretime").is_some(),
            "{key}: {got:?}"
        );
    }
    let r = save("", json!([{"key": "plain", "value": 1}]));
    assert_eq!(r.status, 204, "{}", r.body);
    let got = api.call("GET", "/v1.0/state/statestore/plain", "");
    assert!(got.header("metadata.ttlexpiretime").is_none(), "{got:?}");

    // The query wins: a bad value there fails the save even though the item's own is fine.
    let r = save(
        "?metadata.ttlInSeconds=soon",
        json!([{"key": "c", "value": 1, "metadata": {"ttlInSeconds": "60"}}]),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(api.call("GET", "/v1.0/state/statestore/c", "").status, 204);

    // Fencing tokens arrive the same way.
    let fenced = |token: u64| {
        save(
            &format!("?metadata.fencingToken={token}"),
            json!([{"key": "f", "value": token}]),
        )
        .status
    };
    assert_eq!(fenced(5), 204);
    assert_eq!(fenced(4), 409);
    assert_eq!(
        api.call("GET", "/v1.0/state/statestore/f", "").json(),
        json!(5)
    );
}
