//! Service invocation: through the sidecar API to every instance of an app, failing over when
//! one dies, and across herds (mutual TLS) to an app this herd does not run or whose instances
//! here are down. The app is `tests/node/echo.js`, which answers with what it received.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::state::call_at;
use crate::util::{Client, Herd, free_port, node_available, wait_for};

fn echo_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/echo.js")
}

/// A `[[service]]` table running `instances` echo apps named `name`.
fn echo_service(name: &str, instances: usize) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\ncommand = [\"node\", \"{}\"]\ninstances = {instances}\nport = \"auto\"\n\n",
        echo_js().display()
    )
}

#[test]
fn invoke_passes_the_call_through_and_reaches_every_instance() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let port = free_port();
    let mut herd = Herd::prepare(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\napp_id = \"front\"\n\n{}",
        echo_service("echo", 3)
    ));
    herd.env.push(("HERD_API_TOKEN".into(), "t0ken".into()));
    herd.spawn();
    herd.wait_all_ready();
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    let token = ("dapr-api-token", "t0ken");

    // Method, path, query and body arrive as written; herd's own headers do not.
    let r = call_at(
        api,
        "PATCH",
        "/v1.0/invoke/echo/method/orders/7/items?x=a%20b&y=2",
        &[token, ("content-type", "text/plain")],
        "hello body",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["method"], "PATCH");
    assert_eq!(seen["url"], "/orders/7/items?x=a%20b&y=2");
    assert_eq!(seen["body"], "hello body");
    assert_eq!(seen["caller"], "front");
    assert_eq!(seen["callee"], "echo");
    assert_eq!(
        seen["token"],
        serde_json::Value::Null,
        "the API token leaked"
    );
    assert_eq!(seen["traceparent"].as_str().map(str::len), Some(55));

    // The dapr-app-id header form, with a namespace suffix on the path form too.
    let r = call_at(
        api,
        "GET",
        "/status?v=1",
        &[token, ("dapr-app-id", "echo")],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["url"], "/status?v=1");
    let r = call_at(
        api,
        "GET",
        "/v1.0/invoke/echo.default/method/ns",
        &[token],
        "",
    );
    assert_eq!(r.json()["url"], "/ns");

    // Without the token: refused before anything is forwarded.
    let r = call_at(api, "GET", "/v1.0/invoke/echo/method/x", &[], "");
    assert_eq!(r.status, 401, "{}", r.body);

    // An unknown app: Dapr's error code.
    let r = call_at(api, "GET", "/v1.0/invoke/nobody/method/x", &[token], "");
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()["errorCode"], "ERR_DIRECT_INVOKE");

    // Balanced over every instance.
    let mut client = Client::new(api);
    let instances: BTreeSet<u64> = (0..30)
        .map(|_| {
            let r = client
                .get("/v1.0/invoke/echo/method/who", &[token])
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["instance"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(instances, BTreeSet::from([0, 1, 2]));

    // The invoker lets go of the services at shutdown: herd exits.
    assert!(herd.cli(&["down"]).status.success());
    assert!(herd.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn invoke_fails_over_when_an_instance_dies() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let port = free_port();
    let herd = Herd::start(&format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
        echo_service("echo", 3)
    ));
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut client = Client::new(api);
    // Warm connections to every instance, so the killed one leaves idle connections behind.
    for _ in 0..30 {
        assert_eq!(
            client
                .get("/v1.0/invoke/echo/method/w", &[])
                .unwrap()
                .status,
            200
        );
    }
    let victim = herd.pids("echo")[1];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut failed = Vec::new();
    for i in 0..300 {
        let r = client.get("/v1.0/invoke/echo/method/after", &[]).unwrap();
        if r.status != 200 {
            failed.push((i, r.status, r.body));
        }
    }
    assert!(failed.is_empty(), "failed calls after the kill: {failed:?}");
    // The replacement comes back and serves again.
    wait_for("a replacement instance", Duration::from_secs(20), || {
        let pids = herd.pids("echo");
        (pids.len() == 3 && !pids.contains(&victim)).then_some(())
    });
}

#[test]
fn an_app_resiliency_policy_retries_and_breaks_invocations() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let (port, admin) = (free_port(), free_port());
    let _herd = Herd::start(&format!(
        r#"[api]
listen = "127.0.0.1:{port}"

[admin]
listen = "127.0.0.1:{admin}"

[resiliency.policies.retries.twice]
policy = "constant"
duration = "50ms"
maxRetries = 2

[resiliency.policies.circuitBreakers.flakyCB]
maxRequests = 1
timeout = "1s"
trip = "consecutiveFailures > 5"

[resiliency.targets.apps.flaky]
retry = "twice"
circuitBreaker = "flakyCB"

{}"#,
        echo_service("flaky", 1)
    ));
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    let seen = || {
        let r = call_at(api, "GET", "/v1.0/invoke/flaky/method/count", &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["seen"].as_u64().unwrap()
    };
    // `seen` counts itself too: each check adds one.
    let before = seen();
    // A 500 is tried three times (two retries), and the last answer is passed on.
    let r = call_at(
        api,
        "GET",
        "/v1.0/invoke/flaky/method/x?status=500",
        &[],
        "",
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()["service"], "flaky", "the app's own answer");
    assert_eq!(seen(), before + 3 + 1, "three attempts");
    // A 4xx is the caller's problem: never retried.
    let before = seen();
    let r = call_at(
        api,
        "GET",
        "/v1.0/invoke/flaky/method/x?status=404",
        &[],
        "",
    );
    assert_eq!(r.status, 404);
    assert_eq!(seen(), before + 1 + 1, "one attempt");
    // Six failures in a row open the breaker (two calls of three attempts): refused at once,
    // without reaching the app.
    for _ in 0..2 {
        call_at(
            api,
            "GET",
            "/v1.0/invoke/flaky/method/x?status=503",
            &[],
            "",
        );
    }
    let r = call_at(api, "GET", "/v1.0/invoke/flaky/method/x", &[], "");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(r.body.contains("circuit breaker is open"), "{}", r.body);
    // After its timeout a trial call goes through and closes it.
    let r = wait_for(
        "the breaker's half-open trial",
        Duration::from_secs(10),
        || {
            let r = call_at(api, "GET", "/v1.0/invoke/flaky/method/trial", &[], "");
            (r.status == 200).then_some(r)
        },
    );
    assert_eq!(r.json()["url"], "/trial");
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
    // The dashboard's overview lists the app's invocations, the failed ones among them.
    wait_for(
        "invocations in the overview",
        Duration::from_secs(10),
        || {
            let o = call_at(admin, "GET", "/api/overview", &[], "").json();
            o["stores"].as_array()?.iter().find(|s| {
                s["kind"] == "invoke"
                    && s["store"] == "flaky"
                    && s["requests"].as_u64() >= Some(8)
                    && s["errors"].as_u64() >= Some(3)
            })?;
            Some(())
        },
    );
    let metrics = call_at(admin, "GET", "/metrics", &[], "").body;
    assert!(
        metrics.contains("herd_resiliency_activations_total")
            && metrics.contains("flakyCB")
            && metrics.contains("twice"),
        "{metrics}"
    );
}

/// A CA and a certificate for `name` signed by it, written as PEM files into `dir`.
fn certify(dir: &Path, ca: &rcgen::Issuer<'_, rcgen::KeyPair>, ca_pem: &str, name: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
}

/// A certificate authority: its issuer and its certificate as PEM.
fn authority() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (rcgen::Issuer::new(params, key), cert.pem())
}

/// A herd with a mesh listener on `mesh`, peers `peers`, mTLS files in its dir, and `services`.
fn meshed(
    api: u16,
    mesh: SocketAddr,
    peers: &[SocketAddr],
    services: &str,
    ca: &(rcgen::Issuer<'static, rcgen::KeyPair>, String),
) -> Herd {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    let mut herd = Herd::prepare(&format!(
        "[api]\nlisten = \"127.0.0.1:{api}\"\napp_id = \"front\"\n\n[mesh]\nlisten = \"{mesh}\"\npeers = [{}]\nrefresh = \"200ms\"\ntls = {{ cert = \"cert.pem\", key = \"key.pem\", ca = \"ca.pem\" }}\n\n{services}",
        peers.join(", ")
    ));
    certify(herd.dir.path(), &ca.0, &ca.1, "herd");
    herd.spawn();
    herd
}

#[test]
fn a_peer_herd_serves_apps_this_one_does_not_run_or_cannot_reach() {
    if !node_available() {
        return eprintln!("skipped: node is not on PATH");
    }
    let ca = authority();
    // Two herds on two loopback addresses; each lists both (its own is skipped).
    let (mesh_a, mesh_b): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], free_port()).into(),
        ([127, 0, 0, 2], free_port()).into(),
    );
    let (api_a, api_b) = (free_port(), free_port());
    // A runs "echo" too, but its instances never get ready: calls go to B's.
    let broken =
        "[[service]]\nname = \"echo\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\nport = \"auto\"\n\n";
    let a = meshed(api_a, mesh_a, &[mesh_a, mesh_b], broken, &ca);
    let services_b = format!("{}{}", echo_service("echo", 2), echo_service("audit", 1));
    let b = meshed(api_b, mesh_b, &[mesh_a, mesh_b], &services_b, &ca);
    b.wait_all_ready();
    let api: SocketAddr = ([127, 0, 0, 1], api_a).into();
    // Once A has heard from B, both apps answer through A.
    let r = wait_for(
        "app audit through the peer",
        Duration::from_secs(20),
        || {
            let r = call_at(
                api,
                "POST",
                "/v1.0/invoke/audit/method/log?n=1",
                &[],
                "entry",
            );
            (r.status == 200).then_some(r)
        },
    );
    let seen = r.json();
    assert_eq!(seen["service"], "audit");
    assert_eq!(seen["url"], "/log?n=1");
    assert_eq!(seen["body"], "entry");
    assert_eq!(seen["caller"], "front");
    let instances: BTreeSet<u64> = (0..20)
        .map(|_| {
            let r = call_at(api, "GET", "/v1.0/invoke/echo/method/x", &[], "");
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["service"], "echo");
            r.json()["instance"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        instances,
        BTreeSet::from([0, 1]),
        "B's instances both serve"
    );

    // A third herd with a certificate from another authority is refused by B in the TLS
    // handshake, so it never learns that B runs "audit".
    let stranger_ca = authority();
    let api_c = free_port();
    let mesh_c: SocketAddr = ([127, 0, 0, 3], free_port()).into();
    let c = meshed(api_c, mesh_c, &[mesh_b], "", &stranger_ca);
    let api_c: SocketAddr = ([127, 0, 0, 1], api_c).into();
    wait_for("B refusing C's handshake", Duration::from_secs(20), || {
        b.stderr()
            .contains("mesh: TLS handshake with")
            .then_some(())
    });
    let r = call_at(api_c, "GET", "/v1.0/invoke/audit/method/x", &[], "");
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()["errorCode"], "ERR_DIRECT_INVOKE");
    drop((a, c));
}

#[test]
fn mesh_config_errors_name_the_key() {
    let herd = Herd::prepare(
        "[api]\n\n[mesh]\nlisten = \"127.0.0.1:0\"\npeers = [\"not a peer\"]\ntls = { cert = \"missing.pem\", key = \"k.pem\", ca = \"ca.pem\" }\n",
    );
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let config = herd.config().display().to_string();
    for want in [
        format!("{config}:4:1: mesh.listen: peers need a fixed port"),
        format!("{config}:5:10: mesh.peers[0]: not a peer"),
        format!("{config}:6:9: mesh.tls.cert: no such file"),
    ] {
        assert!(err.contains(&want), "expected {want:?} in {err}");
    }
}
