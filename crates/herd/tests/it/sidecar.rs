//! The sidecar API around the state calls: the API token, the default store, Dapr component
//! files, component errors with file and line, a backend that is down at start-up, body limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::state::{Api, call_at};
use crate::util::{Herd, free_port, wait_for};

#[test]
fn api_token_is_required_when_set_and_healthz_stays_open() {
    let port = free_port();
    let mut herd = Herd::prepare(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n[[service]]\nname = \"env\"\ncommand = [\"sh\", \"-c\", \"echo token=$DAPR_API_TOKEN; echo READY=1 >&$HERD_READY_FD; exec sleep 600\"]\nready = {{ mode = \"notify\" }}\n"
    ));
    herd.env.push(("HERD_API_TOKEN".into(), "s3cret".into()));
    herd.spawn();
    herd.wait_all_ready();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let r = call_at(addr, "GET", "/v1.0/metadata", &[], "");
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call_at(
        addr,
        "GET",
        "/v1.0/metadata",
        &[("dapr-api-token", "wrong")],
        "",
    );
    assert_eq!(r.status, 401);
    let r = call_at(
        addr,
        "GET",
        "/v1.0/metadata",
        &[("dapr-api-token", "s3cret")],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The default store exists when no state component is configured.
    let names: Vec<_> = r.json()["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["statestore".to_string(), "pubsub".to_string()]);
    assert_eq!(call_at(addr, "GET", "/v1.0/healthz", &[], "").status, 204);
    // Instances get the token so SDKs send it.
    wait_for("the instance's token", Duration::from_secs(10), || {
        herd.logs("env").contains("token=s3cret").then_some(())
    });
}

#[test]
fn dapr_component_files_are_loaded_and_scoped() {
    let run = crate::state::run_id();
    let app = format!("a{run}");
    let api = Api::start_with(&app, "resources_path = [\"components\"]", "", |dir| {
        let resources = dir.join("components");
        std::fs::create_dir(&resources).unwrap();
        std::fs::write(
            resources.join("statestore.yaml"),
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: orders\nspec:\n  type: state.embedded\n  version: v1\n  metadata:\n  - name: keyPrefix\n    value: name\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: private\nspec:\n  type: state.embedded\n  version: v1\n  metadata:\n  - name: path\n    value: private.redb\nscopes:\n- someone-else\n",
        )
        .unwrap();
        // A component of a block herd does not serve is skipped, not an error.
        std::fs::write(
            resources.join("pubsub.yaml"),
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: cron\nspec:\n  type: bindings.cron\n  version: v1\n  metadata: []\n",
        )
        .unwrap();
    });
    let meta = api.call("GET", "/v1.0/metadata", "").json();
    let names: Vec<_> = meta["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["orders".to_string(), "pubsub".to_string()],
        "{meta}"
    );
    let r = api.call(
        "POST",
        "/v1.0/state/orders",
        &json!([{"key": "o1", "value": {"qty": 2}}]).to_string(),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        api.call("GET", "/v1.0/state/orders/o1", "").json(),
        json!({"qty": 2})
    );
    // Scoped to another app: invisible here.
    let r = api.call("GET", "/v1.0/state/private/o1", "");
    assert_eq!(r.status, 400, "{}", r.body);
    // herd logs JSON lines here (stderr is a file), where the quotes are escaped.
    assert!(
        api.herd
            .stderr()
            .lines()
            .any(|l| l.contains("skipped component") && l.contains("cron")),
        "{}",
        api.herd.stderr()
    );
}

#[test]
fn bad_component_metadata_names_file_line_and_key() {
    let herd = Herd::prepare(
        "[api]\n\n[[component]]\nname = \"cache\"\ntype = \"state.redis\"\nmetadata = { redisHost = \"nocolon\" }\n",
    );
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let want = format!(
        "{}:6:14: component[0].metadata.redisHost:",
        herd.config().display()
    );
    assert!(err.contains(&want), "expected {want:?} in {err}");

    let herd = Herd::prepare("[api]\n\n[[component]]\nname = \"db\"\ntype = \"state.mongodb\"\n");
    let out = herd.cli(&["up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":5:1: component[0].type: unsupported component type"),
        "{err}"
    );
    // Both building blocks' types are offered.
    for kind in [
        "state.redis",
        "pubsub.rabbitmq",
        "pubsub.jetstream",
        "lock.redis",
    ] {
        assert!(err.contains(kind), "{kind} in {err}");
    }

    let herd = Herd::prepare("[[component]]\nname = \"db\"\ntype = \"state.embedded\"\n");
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("add an [api] table"), "{err}");
}

#[test]
fn bad_component_file_names_its_line() {
    let herd = Herd::prepare("[api]\nresources_path = [\"components\"]\n");
    let dir = herd.dir.path().join("components");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("state.yaml");
    std::fs::write(
        &file,
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pg\nspec:\n  type: state.postgresql\n  version: v1\n  metadata:\n  - name: tableName\n    value: \"x; drop table y\"\n  - name: connectionString\n    value: \"host=localhost\"\n",
    )
    .unwrap();
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let want = format!("{}:9: pg: spec.metadata.tableName:", file.display());
    assert!(err.contains(&want), "expected {want:?} in {err}");
}

#[test]
fn unreachable_backend_is_reported_and_herd_keeps_serving() {
    let port = free_port();
    let dead = free_port();
    let mut herd = Herd::prepare(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n[[component]]\nname = \"cache\"\ntype = \"state.redis\"\nmetadata = {{ redisHost = \"127.0.0.1:{dead}\" }}\n\n[[component]]\nname = \"local\"\ntype = \"state.embedded\"\n"
    ));
    herd.spawn();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for("the API", Duration::from_secs(10), || {
        (call_at(addr, "GET", "/v1.0/healthz", &[], "").status == 204).then_some(())
    });
    let r = call_at(addr, "GET", "/v1.0/healthz/outbound", &[], "");
    assert_eq!(r.status, 500, "{}", r.body);
    let r = call_at(addr, "GET", "/v1.0/state/cache/k", &[], "");
    assert_eq!(r.status, 500);
    assert!(r.body.contains("not connected yet"), "{}", r.body);
    // The other component works, and herd logs why the first one is down.
    let body = json!([{"key": "k", "value": 1}]).to_string();
    wait_for("the embedded component", Duration::from_secs(10), || {
        (call_at(addr, "POST", "/v1.0/state/local", &[], &body).status == 204).then_some(())
    });
    wait_for("a logged connect failure", Duration::from_secs(10), || {
        herd.stderr()
            .contains("component cache (state.redis): cannot connect")
            .then_some(())
    });
    assert!(
        herd.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "herd must keep running"
    );
}

#[test]
fn oversized_body_is_413_and_nothing_is_written() {
    let port = free_port();
    let mut herd = Herd::prepare(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\nmax_body = \"2KB\"\n"
    ));
    herd.spawn();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for("components connected", Duration::from_secs(10), || {
        (call_at(addr, "GET", "/v1.0/healthz/outbound", &[], "").status == 204).then_some(())
    });
    let big = "x".repeat(4000);
    let body = json!([{"key": "big", "value": big}]).to_string();
    let r = call_at(addr, "POST", "/v1.0/state/statestore", &[], &body);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(
        call_at(addr, "GET", "/v1.0/state/statestore/big", &[], "").status,
        204
    );
    let small = json!([{"key": "small", "value": "x"}]).to_string();
    assert_eq!(
        call_at(addr, "POST", "/v1.0/state/statestore", &[], &small).status,
        204
    );
}

#[test]
fn bad_subscriptions_name_line_and_key() {
    let herd = Herd::prepare(
        "[api]\n\n[[subscription]]\nservice = \"ghost\"\npubsub = \"pubsub\"\ntopic = \"t\"\nroute = \"/t\"\nrules = [{ match = \"event.source == 1\", path = \"/x\" }]\n",
    );
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let file = herd.config().display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:4:1: subscription[0].service: no service named \"ghost\""
        )),
        "{err}"
    );
    assert!(
        err.contains("subscription[0].rules[0].match: herd evaluates rules"),
        "{err}"
    );

    let herd = Herd::prepare(
        "[api]\n\n[[service]]\nname = \"s\"\ncommand = [\"true\"]\n\n[[subscription]]\nservice = \"s\"\npubsub = \"missing\"\ntopic = \"t\"\nroute = \"/t\"\n",
    );
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":9:1: subscription[0].pubsub: no pub/sub component named \"missing\""),
        "{err}"
    );
}

#[test]
fn an_outbox_needs_a_store_that_can_hold_one_and_a_known_pubsub() {
    let herd = Herd::prepare(
        "[api]\n\n[[component]]\nname = \"cache\"\ntype = \"state.postgresql\"\nmetadata = { connectionString = \"postgres://127.0.0.1/test\", outboxPublishPubsub = \"pubsub\", outboxPublishTopic = \"t\" }\n",
    );
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(":6:62: component[0].metadata.outboxPublishPubsub: the transactional outbox needs state.embedded or state.redis"), "{err}");
    let herd = Herd::prepare(
        "[api]\n\n[[component]]\nname = \"s\"\ntype = \"state.embedded\"\nmetadata = { outboxPublishPubsub = \"nope\", outboxPublishTopic = \"t\" }\n",
    );
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no pub/sub component named \"nope\""), "{err}");
}
