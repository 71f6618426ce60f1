//! The state API conformance suite, run against every backend: embedded always, Redis and
//! PostgreSQL when `HERD_TEST_REDIS_URL` / `HERD_TEST_POSTGRES_URL` name a server (otherwise the
//! test reports itself skipped). Each run uses its own app id, so keys never collide with other
//! runs on a shared server.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Client, Herd, Response, free_port, wait_for};

/// A unique suffix for names on shared servers.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}x{nanos:x}", std::process::id())
}

/// `host:port` of the test Redis, or `None` (test skipped).
pub fn redis_host() -> Option<String> {
    let url = std::env::var("HERD_TEST_REDIS_URL").ok()?;
    let rest = url.strip_prefix("redis://").unwrap_or(&url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    Some(rest.split('/').next().unwrap_or(rest).to_string())
}

/// The test PostgreSQL's connection URL, or `None` (test skipped).
pub fn postgres_url() -> Option<String> {
    std::env::var("HERD_TEST_POSTGRES_URL").ok()
}

/// Says why a backend test did not run.
pub fn skipped(var: &str) {
    eprintln!("skipped: {var} is not set");
}

/// The `[[component]]` table for a backend named `kind`.
pub fn component(name: &str, kind: &str) -> Option<String> {
    Some(match kind {
        "embedded" => format!("[[component]]\nname = \"{name}\"\ntype = \"state.embedded\"\n"),
        "redis" => format!(
            "[[component]]\nname = \"{name}\"\ntype = \"state.redis\"\nmetadata = {{ redisHost = \"{}\" }}\n",
            redis_host()?
        ),
        "postgres" => format!(
            "[[component]]\nname = \"{name}\"\ntype = \"state.postgresql\"\nmetadata = {{ connectionString = \"{}\", tableName = \"herd_conformance\" }}\n",
            postgres_url()?
        ),
        other => panic!("no backend {other}"),
    })
}

/// A herd serving the sidecar API, and a client for it.
pub struct Api {
    /// The running herd.
    pub herd: Herd,
    /// The shared API listener.
    pub addr: SocketAddr,
}

impl Api {
    /// Starts herd with `[api]` on a free port, app id `app`, and `rest` appended.
    pub fn start(app: &str, rest: &str) -> Self {
        Self::start_with(app, "", rest, |_| {})
    }

    /// As [`Api::start`], with `api` lines added to `[api]` and `setup` run on herd's directory
    /// before herd starts.
    pub fn start_with(
        app: &str,
        api: &str,
        rest: &str,
        setup: impl FnOnce(&std::path::Path),
    ) -> Self {
        let port = free_port();
        let config =
            format!("[api]\nlisten = \"127.0.0.1:{port}\"\napp_id = \"{app}\"\n{api}\n{rest}");
        let mut herd = Herd::prepare(&config);
        setup(herd.dir.path());
        herd.spawn();
        herd.wait_all_ready();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let api = Api { herd, addr };
        wait_for("components connected", Duration::from_secs(20), || {
            (api.call("GET", "/v1.0/healthz/outbound", "").status == 204).then_some(())
        });
        api
    }

    /// One request on a fresh connection.
    pub fn call(&self, method: &str, path: &str, body: &str) -> Response {
        call_at(self.addr, method, path, &[], body)
    }
}

/// One request to `addr` on a fresh connection, answered within the client's 10 s.
pub fn call_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    call_within(Client::new(addr), method, path, headers, body)
}

/// One request on a fresh connection of `client` (its address and read timeout).
pub fn call_within(
    mut client: Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    client
        .request(method, path, &all, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn save(api: &Api, store: &str, items: Value) -> Response {
    api.call("POST", &format!("/v1.0/state/{store}"), &items.to_string())
}

fn get(api: &Api, store: &str, key: &str) -> Response {
    api.call("GET", &format!("/v1.0/state/{store}/{key}"), "")
}

fn etag(r: &Response) -> String {
    r.header("etag").expect("an etag").to_string()
}

fn code(r: &Response) -> String {
    r.json()["errorCode"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every state operation and its failure modes against `store`.
fn conformance(api: &Api, store: &str) {
    // Save and get; a missing key is 204.
    let r = save(api, store, json!([{"key": "a", "value": {"n": 1}}]));
    assert_eq!(r.status, 204, "{}", r.body);
    let r = get(api, store, "a");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"n": 1}));
    let first = etag(&r);
    assert_eq!(get(api, store, "missing").status, 204);

    // ETags: a stale one conflicts, the current one wins, a foreign one is a 400.
    let r = save(
        api,
        store,
        json!([{"key": "a", "value": 2, "etag": "999999999"}]),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(code(&r), "ERR_STATE_SAVE");
    let r = save(
        api,
        store,
        json!([{"key": "a", "value": 2, "etag": "not-a-version", "options": {"concurrency": "first-write"}}]),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = save(
        api,
        store,
        json!([{"key": "a", "value": 2, "etag": first, "options": {"concurrency": "first-write"}}]),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let second = etag(&get(api, store, "a"));
    assert_ne!(first, second, "a write must change the etag");
    // The old ETag no longer matches; last-write ignores it.
    let r = save(api, store, json!([{"key": "a", "value": 3, "etag": first}]));
    assert_eq!(r.status, 409);
    let r = save(
        api,
        store,
        json!([{"key": "a", "value": 3, "etag": first, "options": {"concurrency": "last-write"}}]),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(get(api, store, "a").json(), json!(3));
    // first-write without an ETag only creates.
    let r = save(
        api,
        store,
        json!([{"key": "a", "value": 4, "options": {"concurrency": "first-write"}}]),
    );
    assert_eq!(r.status, 409);
    let r = save(
        api,
        store,
        json!([{"key": "fresh", "value": 4, "options": {"concurrency": "first-write"}}]),
    );
    assert_eq!(r.status, 204, "{}", r.body);

    // Delete with If-Match.
    let current = etag(&get(api, store, "a"));
    let path = format!("/v1.0/state/{store}/a");
    let r = call_at(api.addr, "DELETE", &path, &[("If-Match", "999999999")], "");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(code(&r), "ERR_STATE_DELETE");
    assert_eq!(
        get(api, store, "a").status,
        200,
        "a failed delete must keep the key"
    );
    let r = call_at(api.addr, "DELETE", &path, &[("If-Match", &current)], "");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(get(api, store, "a").status, 204);
    assert_eq!(
        api.call("DELETE", &path, "").status,
        204,
        "deleting a missing key"
    );
    // A key deleted and written again never repeats an ETag.
    save(api, store, json!([{"key": "a", "value": 5}]));
    let again = etag(&get(api, store, "a"));
    assert!(![first.as_str(), second.as_str(), current.as_str()].contains(&again.as_str()));

    // Bulk get.
    let r = api.call(
        "POST",
        &format!("/v1.0/state/{store}/bulk"),
        &json!({"keys": ["a", "nope", "fresh"]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let items = r.json();
    assert_eq!(items[0]["key"], "a");
    assert_eq!(items[0]["data"], json!(5));
    assert_eq!(items[0]["etag"], json!(again));
    assert_eq!(items[1], json!({"key": "nope"}));
    assert_eq!(items[2]["data"], json!(4));

    // Transactions: all or nothing.
    let tx = |ops: Value| {
        api.call(
            "POST",
            &format!("/v1.0/state/{store}/transaction"),
            &json!({"operations": ops}).to_string(),
        )
    };
    let r = tx(json!([
        {"operation": "upsert", "request": {"key": "t1", "value": "one"}},
        {"operation": "delete", "request": {"key": "a", "etag": "999999999"}},
    ]));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        get(api, store, "t1").status,
        204,
        "a failed transaction wrote t1"
    );
    let r = tx(json!([
        {"operation": "upsert", "request": {"key": "t1", "value": "one"}},
        {"operation": "upsert", "request": {"key": "t2", "value": "two", "options": {"concurrency": "first-write"}}},
        {"operation": "delete", "request": {"key": "a", "etag": again}},
    ]));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(get(api, store, "t1").json(), json!("one"));
    assert_eq!(get(api, store, "t2").json(), json!("two"));
    assert_eq!(get(api, store, "a").status, 204);
    let r = tx(json!([{"operation": "merge", "request": {"key": "x"}}]));
    assert_eq!(r.status, 400);

    // TTL: visible with its expiry time, then gone.
    let r = save(
        api,
        store,
        json!([{"key": "ttl", "value": 1, "metadata": {"ttlInSeconds": "1"}}]),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = get(api, store, "ttl");
    assert!(
        r.status == 204 || r.header("metadata.ttlexpiretime").is_some(),
        "{r:?}"
    );
    wait_for("the TTL to expire", Duration::from_secs(10), || {
        (get(api, store, "ttl").status == 204).then_some(())
    });
    let r = save(
        api,
        store,
        json!([{"key": "ttl", "value": 1, "metadata": {"ttlInSeconds": "soon"}}]),
    );
    assert_eq!(r.status, 400);

    // Fencing: once a key was written with token N, lower tokens are refused.
    let fenced = |token: u64| {
        save(
            api,
            store,
            json!([{"key": "f", "value": token, "metadata": {"fencingToken": token.to_string()}}]),
        )
    };
    assert_eq!(fenced(7).status, 204);
    let r = fenced(6);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("fencing token 6"), "{}", r.body);
    assert_eq!(fenced(7).status, 204);
    assert_eq!(fenced(9).status, 204);
    assert_eq!(fenced(8).status, 409);
    // The fence outlives a delete.
    assert_eq!(
        api.call("DELETE", &format!("/v1.0/state/{store}/f"), "")
            .status,
        204
    );
    assert_eq!(fenced(8).status, 409);
    assert_eq!(get(api, store, "f").status, 204);

    // Bad input: nothing written, a 400 that says why.
    let r = api.call("POST", &format!("/v1.0/state/{store}"), "[{\"key\": ");
    assert_eq!(r.status, 400);
    assert_eq!(code(&r), "ERR_MALFORMED_REQUEST");
    let r = save(api, store, json!([{"key": "x||y", "value": 1}]));
    assert_eq!(r.status, 400);
    let r = save(
        api,
        store,
        json!([{"key": "x", "value": 1, "options": {"concurrency": "sometimes"}}]),
    );
    assert_eq!(r.status, 400);
    assert_eq!(get(api, store, "x").status, 204);
    let r = get(api, "no-such-store", "x");
    assert_eq!(r.status, 400);
    assert_eq!(code(&r), "ERR_STATE_STORE_NOT_FOUND");
}

/// Locks with fencing tokens, on backends that have them.
fn locks(api: &Api, store: &str) {
    let lock = |resource: &str, owner: &str, secs: i64| {
        let body = json!({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": secs});
        let r = api.call(
            "POST",
            &format!("/v1.0-alpha1/lock/{store}"),
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let unlock = |resource: &str, owner: &str| {
        let body = json!({"resourceId": resource, "lockOwner": owner});
        let r = api.call(
            "POST",
            &format!("/v1.0-alpha1/unlock/{store}"),
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["status"].as_i64().unwrap()
    };
    let granted = lock("r", "o1", 30);
    assert_eq!(granted["success"], true);
    let t1 = granted["fencingToken"].as_u64().expect("a fencing token");
    assert_eq!(
        lock("r", "o2", 30)["success"],
        false,
        "a held lock is not granted"
    );
    assert_eq!(unlock("r", "o2"), 2, "someone else's lock");
    assert_eq!(unlock("r", "o1"), 0);
    assert_eq!(unlock("r", "o1"), 1, "no such lock");
    let t2 = lock("r", "o2", 30)["fencingToken"].as_u64().unwrap();
    assert!(t2 > t1, "tokens grow: {t1} then {t2}");

    // A lease expires; the next holder's token is higher, and the stale holder is fenced off.
    let stale = lock("lease", "slow", 1)["fencingToken"].as_u64().unwrap();
    let fresh = wait_for("the lease to expire", Duration::from_secs(10), || {
        let r = lock("lease", "fast", 30);
        (r["success"] == true).then(|| r["fencingToken"].as_u64().unwrap())
    });
    assert!(fresh > stale);
    let write = |token: u64| {
        save(api, store, json!([{"key": "guarded", "value": token, "metadata": {"fencingToken": token.to_string()}}])).status
    };
    assert_eq!(write(fresh), 204);
    assert_eq!(
        write(stale),
        409,
        "the expired holder's write must be refused"
    );
    assert_eq!(get(api, store, "guarded").json(), json!(fresh));

    let bad = json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 0});
    let r = api.call(
        "POST",
        &format!("/v1.0-alpha1/lock/{store}"),
        &bad.to_string(),
    );
    assert_eq!(r.status, 400);
}

/// A service whose instance prints its sidecar variables, for app-id scoping.
fn reporter(name: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", \"echo dapr_port=$DAPR_HTTP_PORT app=$APP_ID; echo READY=1 >&$HERD_READY_FD; exec sleep 600\"]\nready = {{ mode = \"notify\" }}\n"
    )
}

/// The sidecar port the instances of `service` were given.
fn sidecar_port(herd: &Herd, service: &str) -> u16 {
    wait_for("the reporter's output", Duration::from_secs(10), || {
        let logs = herd.logs(service);
        let port = logs.split("dapr_port=").nth(1)?.split_whitespace().next()?;
        port.parse().ok()
    })
}

/// Keys are scoped by app id: an instance's writes are invisible on the shared listener.
fn app_scoping(api: &Api, store: &str, service: &str) {
    let port = sidecar_port(&api.herd, service);
    assert!(api.herd.logs(service).contains(&format!("app={service}")));
    let own: SocketAddr = ([127, 0, 0, 1], port).into();
    let path = format!("/v1.0/state/{store}");
    let r = call_at(
        own,
        "POST",
        &path,
        &[],
        &json!([{"key": "mine", "value": 1}]).to_string(),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = call_at(own, "GET", &format!("{path}/mine"), &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(
        get(api, store, "mine").status,
        204,
        "another app must not see the key"
    );
    let r = call_at(own, "GET", "/v1.0/metadata", &[], "");
    assert_eq!(r.json()["id"], json!(service));
}

fn suite(kind: &str, locking: bool) {
    let run = run_id();
    let app = format!("t{run}");
    let service = format!("s{run}");
    let Some(component) = component("store", kind) else {
        return skipped(if kind == "redis" {
            "HERD_TEST_REDIS_URL"
        } else {
            "HERD_TEST_POSTGRES_URL"
        });
    };
    let api = Api::start(&app, &format!("{component}\n{}", reporter(&service)));
    conformance(&api, "store");
    app_scoping(&api, "store", &service);
    if locking {
        locks(&api, "store");
    } else {
        let body = json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5});
        let r = api.call("POST", "/v1.0-alpha1/lock/store", &body.to_string());
        // PostgreSQL serves no locks, so this herd has no lock store at all (Dapr's 500).
        assert_eq!(r.status, 500, "{}", r.body);
        assert_eq!(code(&r), "ERR_LOCK_STORE_NOT_CONFIGURED");
    }
}

#[test]
fn conformance_embedded() {
    suite("embedded", true);
}

#[test]
fn conformance_redis() {
    suite("redis", true);
}

#[test]
fn conformance_postgres() {
    suite("postgres", false);
}
