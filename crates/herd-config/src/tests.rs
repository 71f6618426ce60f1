//! Unit tests for both loading stages: good files load with defaults filled in, and every kind of
//! bad file is refused with the right line and key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn load_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(Arc::new(Source {
        path: PathBuf::from("/tmp/herd.toml"),
        text: text.to_string(),
    }))
}

/// The (key, line) of every error `text` produces.
fn error_keys(text: &str) -> Vec<(String, Option<usize>)> {
    let errs = load_str(text).expect_err("config should be refused");
    errs.0
        .iter()
        .map(|e| (e.key.clone().expect("a key"), e.line))
        .collect()
}

fn single_error(text: &str) -> ConfigError {
    let errs = load_str(text).expect_err("config should be refused");
    assert_eq!(errs.0.len(), 1, "expected one error, got: {errs}");
    errs.0.into_iter().next().unwrap()
}

#[test]
fn minimal_service_gets_defaults() {
    let c = load_str("[[service]]\nname = \"a\"\ncommand = [\"sh\", \"-c\", \"true\"]\n").unwrap();
    let s = &c.services[0];
    assert_eq!(s.instances, 1);
    assert!(
        s.command[0].ends_with("/sh"),
        "program resolved: {}",
        s.command[0]
    );
    assert_eq!(s.restart, RestartPolicy::default());
    assert_eq!(s.kill_timeout, Duration::from_secs(5));
    assert_eq!(s.ready.mode, ReadyMode::Listen);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/.herd"));
}

#[test]
fn full_service_is_read() {
    let c = load_str(
        r#"
data_dir = "state"
[logs]
max_size = "1MB"
keep = 2

[[service]]
name = "web"
command = ["sh", "server.sh"]
instances = "max"
listen = "127.0.0.1:0"
max_memory = "256MB"
kill_timeout = "2s"
env = { A = "1" }
restart = { initial_backoff = "50ms", max_backoff = "1s", max_restarts = 3, window = "10s", min_uptime = "500ms" }
ready = { mode = "notify", timeout = "3s" }
"#,
    )
    .unwrap();
    let s = &c.services[0];
    assert!(s.instances >= 1);
    assert_eq!(s.listen, Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(s.max_memory, Some(256_000_000));
    assert_eq!(s.restart.max_restarts, 3);
    assert_eq!(s.restart.min_uptime, Duration::from_millis(500));
    assert_eq!(s.ready.mode, ReadyMode::Notify);
    assert_eq!(s.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(c.logs.keep, 2);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/state"));
}

#[test]
fn unknown_key_names_line_and_table() {
    let e = single_error("[[service]]\nname = \"a\"\ncommand = [\"true\"]\ninstancez = 2\n");
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("instancez"), "{e}");
    assert_eq!(e.key.as_deref(), Some("service[0].instancez"));
}

#[test]
fn wrong_type_names_line_and_key() {
    let e = single_error("[[service]]\nname = \"a\"\ncommand = \"true\"\n");
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("service[0].command"));
    assert!(
        e.message.contains("sequence") || e.message.contains("array"),
        "{e}"
    );
}

#[test]
fn missing_command_is_reported() {
    let e = single_error("[[service]]\nname = \"a\"\n");
    assert!(e.message.contains("command"), "{e}");
    assert_eq!(e.line, Some(1));
}

#[test]
fn empty_command_and_bad_values_are_all_reported() {
    let keys = error_keys(
        "[[service]]\nname = \"a\"\ncommand = []\ninstances = 0\nlisten = \"localhost\"\nkill_timeout = \"soon\"\n",
    );
    assert_eq!(
        keys,
        vec![
            ("service[0].command".to_string(), Some(3)),
            ("service[0].instances".to_string(), Some(4)),
            ("service[0].listen".to_string(), Some(5)),
            ("service[0].kill_timeout".to_string(), Some(6)),
        ]
    );
    let text = load_str("[[service]]\nname = \"a\"\ncommand = []\n")
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("/tmp/herd.toml:3:1: service[0].command: "),
        "{text}"
    );
}

#[test]
fn program_not_in_path_is_a_config_error() {
    let e = single_error("[[service]]\nname = \"a\"\ncommand = [\"no-such-program-herd\"]\n");
    assert_eq!(e.key.as_deref(), Some("service[0].command"));
    assert!(e.message.contains("not found"), "{e}");
}

#[test]
fn duplicate_names_and_addresses_are_refused() {
    let keys = error_keys(
        "[[service]]\nname = \"a\"\ncommand = [\"true\"]\nlisten = \"127.0.0.1:9\"\n\
         [[service]]\nname = \"a\"\ncommand = [\"true\"]\nlisten = \"127.0.0.1:9\"\n",
    );
    assert_eq!(
        keys,
        vec![
            ("service[1].name".to_string(), Some(6)),
            ("service[1].listen".to_string(), Some(8)),
        ]
    );
}

#[test]
fn syntax_error_names_line() {
    let e = single_error("[[service]]\nname = \"a\ncommand = [\"true\"]\n");
    assert_eq!(e.line, Some(2));
}

#[test]
fn bad_readiness_mode_and_backoff_order() {
    let keys = error_keys(
        "[[service]]\nname = \"a\"\ncommand = [\"true\"]\n[service.ready]\nmode = \"http\"\n\
         [service.restart]\ninitial_backoff = \"5s\"\nmax_backoff = \"1s\"\n",
    );
    assert_eq!(
        keys,
        vec![
            ("service[0].restart.initial_backoff".to_string(), Some(7)),
            ("service[0].ready.mode".to_string(), Some(5)),
        ]
    );
}

#[test]
fn key_paths_render_like_the_file() {
    let p = KeyPath::service(2).key("restart").key("window");
    assert_eq!(p.to_string(), "service[2].restart.window");
}

#[test]
fn every_single_character_deletion_is_handled_without_panic_and_located_in_the_file() {
    let good = r#"data_dir = "d"
[logs]
keep = 2

[[service]]
name = "web"
command = ["sh", "-c", "true"]
instances = 2
listen = "127.0.0.1:0"
kill_timeout = "2s"
restart = { initial_backoff = "50ms", max_restarts = 3 }
ready = { mode = "notify", timeout = "3s" }
"#;
    let lines = good.lines().count() + 1;
    let mut refused = 0;
    for (i, _) in good.char_indices() {
        let mut text = good.to_string();
        text.remove(i);
        if let Err(errs) = load_str(&text) {
            refused += 1;
            assert!(!errs.0.is_empty());
            for e in &errs.0 {
                assert!(!e.message.is_empty(), "empty message for deletion at {i}");
                if let Some(line) = e.line {
                    assert!((1..=lines).contains(&line), "line {line} out of range: {e}");
                }
            }
        }
    }
    assert!(
        refused > good.len() / 4,
        "most deletions break the file: {refused}"
    );
}

#[test]
fn own_ports_and_http_readiness() {
    let c = load_str(
        "[[service]]\nname = \"a\"\ncommand = [\"true\"]\nport = \"auto\"\nready = { mode = \"http\", path = \"/up\" }\n",
    )
    .unwrap();
    assert!(c.services[0].own_port);
    assert_eq!(
        c.services[0].ready.mode,
        ReadyMode::Http { path: "/up".into() }
    );
    let keys = error_keys(
        "[[service]]\nname = \"a\"\ncommand = [\"true\"]\nlisten = \"127.0.0.1:0\"\nport = \"auto\"\n\
         [[service]]\nname = \"b\"\ncommand = [\"true\"]\nready = { mode = \"http\" }\n\
         [[service]]\nname = \"c\"\ncommand = [\"true\"]\nport = \"auto\"\nready = { mode = \"http\", path = \"up\" }\n",
    );
    assert_eq!(
        keys,
        vec![
            ("service[0].port".to_string(), Some(5)),
            ("service[1].ready.mode".to_string(), Some(9)),
            ("service[2].ready.path".to_string(), Some(14)),
        ]
    );
    let e = single_error(
        "[[service]]\nname = \"b\"\ncommand = [\"true\"]\nready = { mode = \"http\" }\n",
    );
    assert!(e.message.contains("port = \"auto\""), "{e}");
}

#[test]
fn listen_proxies_unless_passthrough_and_proxied_services_may_probe_http() {
    let c = load_str(
        "[[service]]\nname = \"a\"\ncommand = [\"true\"]\nlisten = \"127.0.0.1:0\"\nready = { mode = \"http\" }\n\
         [[service]]\nname = \"b\"\ncommand = [\"true\"]\nlisten = \"127.0.0.1:0\"\npassthrough = true\n",
    )
    .unwrap();
    assert!(!c.services[0].passthrough);
    assert!(c.services[1].passthrough);
    assert_eq!(
        c.services[0].ready.mode,
        ReadyMode::Http {
            path: "/healthz".into()
        }
    );
    let keys = error_keys(
        "[[service]]\nname = \"a\"\ncommand = [\"true\"]\npassthrough = true\n\
         [[service]]\nname = \"b\"\ncommand = [\"true\"]\nlisten = \"127.0.0.1:0\"\npassthrough = true\nready = { mode = \"http\" }\n",
    );
    assert_eq!(
        keys,
        vec![
            ("service[0].passthrough".to_string(), Some(4)),
            ("service[1].ready.mode".to_string(), Some(10)),
        ]
    );
}

#[test]
fn gateway_tables_are_read_and_checked_against_each_other() {
    let c = load_str(
        r#"
[[service]]
name = "api"
command = ["true"]
port = "auto"
balance = "p2c_ewma"

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:0"

[[route]]
host = "API.example.com"
path_prefix = "/v1"
methods = ["get", "HEAD"]
service = "api"
timeout = "2s"

[[route]]
upstream = "legacy"

[[upstream]]
name = "legacy"
endpoints = ["10.0.0.1:80", "10.0.0.2:80"]
balance = "least_request"
"#,
    )
    .unwrap();
    let g = &c.gateway;
    assert_eq!(g.listeners[0].name, "main");
    assert_eq!(g.routes[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(g.routes[0].methods, vec!["GET", "HEAD"]);
    assert_eq!(g.routes[0].target, Target::Service("api".into()));
    assert_eq!(g.routes[0].timeout, Duration::from_secs(2));
    assert_eq!(g.routes[1].path_prefix, "/");
    assert_eq!(g.upstreams[0].balance, Balance::LeastRequest);
    assert_eq!(g.upstreams[0].endpoints.len(), 2);
    assert_eq!(c.services[0].balance, Balance::P2cEwma);

    let keys = error_keys(
        r#"[[service]]
name = "worker"
command = ["true"]
[[gateway.listener]]
name = "main"
listen = "nowhere"
[[route]]
listener = "side"
service = "worker"
[[route]]
upstream = "missing"
path_prefix = "v1"
[[route]]
service = "worker"
upstream = "also"
[[upstream]]
name = "empty"
endpoints = []
balance = "random"
"#,
    );
    assert_eq!(
        keys,
        vec![
            ("gateway.listener[0].listen".to_string(), Some(6)),
            ("upstream[0].endpoints".to_string(), Some(18)),
            ("upstream[0].balance".to_string(), Some(19)),
            ("route[0].listener".to_string(), Some(8)),
            ("route[0].service".to_string(), Some(9)),
            ("route[1].upstream".to_string(), Some(11)),
            ("route[1].path_prefix".to_string(), Some(12)),
            ("route[2]".to_string(), Some(13)),
        ]
    );
}

#[test]
fn upstream_health_checks_are_validated() {
    let c = load_str(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\nhealth = { interval = \"250ms\" }\n",
    )
    .unwrap();
    let h = c.gateway.upstreams[0].health.as_ref().unwrap();
    assert_eq!(h.path, "/healthz");
    assert_eq!(h.interval, Duration::from_millis(250));
    assert_eq!((h.healthy, h.unhealthy), (2, 3));

    let keys = error_keys(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\n[upstream.health]\npath = \"up\"\ninterval = \"0s\"\nunhealthy = 0\n",
    );
    assert_eq!(
        keys,
        vec![
            ("upstream[0].health.path".to_string(), Some(5)),
            ("upstream[0].health.interval".to_string(), Some(6)),
            ("upstream[0].health.unhealthy".to_string(), Some(7)),
        ]
    );
}

#[test]
fn upstream_endpoints_may_be_dns_names() {
    let c = load_str(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"10.0.0.1:80\", \"api.default.svc.cluster.local:8080\"]\ndns_refresh = \"2s\"\n",
    )
    .unwrap();
    let u = &c.gateway.upstreams[0];
    assert_eq!(u.endpoints, vec!["10.0.0.1:80".parse().unwrap()]);
    assert_eq!(
        u.names,
        vec![("api.default.svc.cluster.local".to_string(), 8080)]
    );
    assert_eq!(u.dns_refresh, Duration::from_secs(2));
    let keys = error_keys(
        "[[upstream]]\nname = \"u\"\nendpoints = [\n  \"ok.example:1\",\n  \"no port\",\n  \"bad_host:80\",\n]\n",
    );
    assert_eq!(
        keys,
        vec![
            ("upstream[0].endpoints[1]".to_string(), Some(5)),
            ("upstream[0].endpoints[2]".to_string(), Some(6)),
        ]
    );
}

#[test]
fn placed_endpoints_get_region_priorities() {
    let c = load_str(
        r#"
[gateway]
region = "eu"
failover = ["us"]
[[upstream]]
name = "u"
endpoints = [
  "10.0.0.1:80",
  { address = "10.0.0.2:80", region = "eu" },
  { address = "10.0.0.3:80", region = "ap" },
  { address = "10.0.0.4:80", region = "us", zone = "b" },
]
"#,
    )
    .unwrap();
    assert_eq!(c.gateway.upstreams[0].priorities, vec![0, 0, 2, 1]);
    let e = single_error("[gateway]\noverprovisioning = 0.5\n");
    assert_eq!(e.key.as_deref(), Some("gateway.overprovisioning"));
}

#[test]
fn upstream_outlier_ejection_is_read_with_defaults_and_checked() {
    let c = load_str(
        "[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n\
         [[upstream]]\nname = \"b\"\nendpoints = [\"127.0.0.1:2\"]\noutlier = {}\n\
         [[upstream]]\nname = \"c\"\nendpoints = [\"127.0.0.1:3\"]\n[upstream.outlier]\n\
         consecutive_5xx = 0\nbase_ejection_time = \"400s\"\nmax_ejection_percent = 100\n",
    )
    .unwrap();
    let u = &c.gateway.upstreams;
    assert_eq!(u[0].outlier, None, "off unless configured");
    assert_eq!(u[1].outlier, Some(OutlierSpec::default()));
    let d = OutlierSpec::default();
    assert_eq!((d.consecutive_5xx, d.consecutive_gateway_failure), (5, 5));
    assert_eq!(d.consecutive_local_origin_failure, 5);
    assert_eq!(d.base_ejection_time, Duration::from_secs(30));
    assert_eq!(d.max_ejection_time, Duration::from_secs(300));
    assert_eq!(
        (d.max_ejection_percent, d.interval),
        (50, Duration::from_secs(10))
    );
    let o = u[2].outlier.unwrap();
    assert_eq!(o.consecutive_5xx, 0);
    assert_eq!(o.max_ejection_percent, 100);
    // As in Envoy, an unset maximum is never below the base.
    assert_eq!(o.max_ejection_time, Duration::from_secs(400));

    let keys = error_keys(
        r#"[[upstream]]
name = "u"
endpoints = ["127.0.0.1:1"]
[upstream.outlier]
consecutive_5xx = 1001
consecutive_local_origin_failure = 70000
base_ejection_time = "0s"
interval = "soon"
max_ejection_percent = 101
[[upstream]]
name = "v"
endpoints = ["127.0.0.1:2"]
outlier = { base_ejection_time = "1m", max_ejection_time = "30s" }
"#,
    );
    assert_eq!(
        keys,
        vec![
            ("upstream[0].outlier.interval".to_string(), Some(8)),
            ("upstream[0].outlier.consecutive_5xx".to_string(), Some(5)),
            (
                "upstream[0].outlier.consecutive_local_origin_failure".to_string(),
                Some(6)
            ),
            (
                "upstream[0].outlier.base_ejection_time".to_string(),
                Some(7)
            ),
            (
                "upstream[0].outlier.max_ejection_percent".to_string(),
                Some(9)
            ),
            (
                "upstream[1].outlier.max_ejection_time".to_string(),
                Some(13)
            ),
        ]
    );
    let e = single_error(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\noutlier = { consecutive_errors = 3 }\n",
    );
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("consecutive_errors"), "{e}");
    let e = single_error(
        "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\noutlier = { max_ejection_percent = -1 }\n",
    );
    assert_eq!(
        e.key.as_deref(),
        Some("upstream[0].outlier.max_ejection_percent")
    );
}

#[test]
fn resiliency_policies_and_targets_are_read_with_dapr_defaults() {
    let c = load_str(
        r#"
[resiliency.policies.timeouts]
general = "2s"
[resiliency.policies.retries.steady]
duration = "250ms"
maxRetries = 4
[resiliency.policies.retries.DefaultRetryPolicy]
policy = "exponential"
maxInterval = "10s"
[resiliency.policies.circuitBreakers.cb]
trip = "consecutiveFailures >= 3"
[resiliency.targets.components.statestore.outbound]
timeout = "general"
retry = "steady"
circuitBreaker = "cb"
"#,
    )
    .unwrap();
    let doc = &c.resiliency[0];
    assert_eq!(doc.timeouts["general"], Duration::from_secs(2));
    let steady = doc.retries["steady"];
    assert_eq!(
        steady.backoff,
        Backoff::Constant(Duration::from_millis(250))
    );
    assert_eq!(steady.max_retries, Some(4));
    let default = doc.retries["DefaultRetryPolicy"];
    assert_eq!(
        default.backoff,
        Backoff::Exponential {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10)
        }
    );
    assert_eq!(default.max_retries, None, "Dapr retries forever by default");
    let cb = &doc.circuit_breakers["cb"];
    assert_eq!(cb.timeout, Duration::from_secs(60));
    assert_eq!(cb.max_requests, 1);
    let target = &doc.components["statestore"].outbound;
    assert_eq!(target.retry.as_deref(), Some("steady"));
    assert_eq!(target.circuit_breaker.as_deref(), Some("cb"));
}

#[test]
fn resiliency_errors_name_the_key_and_line() {
    let keys = error_keys(
        r#"
[resiliency.policies.timeouts]
general = "soon"
[resiliency.policies.retries.r]
maxRetries = -2
[resiliency.policies.circuitBreakers.cb]
trip = "errors > 3"
[resiliency.targets.apps.orders]
retry = "missing"
"#,
    );
    assert_eq!(
        keys,
        vec![
            ("resiliency.policies.timeouts.general".into(), Some(3)),
            ("resiliency.policies.retries.r.maxRetries".into(), Some(5)),
            (
                "resiliency.policies.circuitBreakers.cb.trip".into(),
                Some(7)
            ),
            ("resiliency.targets.apps.orders.retry".into(), Some(9)),
        ]
    );
    let e = single_error("[resiliency.targets.components.s.outbound]\ncircuitBreaker = \"x\"\n");
    assert!(
        e.message.contains("no circuitBreakers policy named \"x\""),
        "{e}"
    );
    let e = single_error("[resiliency.policies.retries.r]\nbackoff = \"1s\"\n");
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn dapr_resiliency_files_are_read_with_scopes_and_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: myresiliency\nscopes:\n  - web\nspec:\n  policies:\n    retries:\n      retryFive:\n        policy: constant\n        duration: 1s\n        maxRetries: 5\n  targets:\n    components:\n      statestore:\n        outbound:\n          retry: retryFive\n";
    std::fs::write(dir.path().join("a.yaml"), good).unwrap();
    let toml = format!(
        "[api]\nresources_path = [{:?}]\n[[service]]\nname = \"web\"\ncommand = [\"sh\"]\n",
        dir.path().display().to_string()
    );
    let mut c = load_str(&toml).unwrap();
    load_resources(&mut c, &[]).unwrap();
    let doc = &c.resiliency[0];
    assert_eq!(doc.name, "myresiliency");
    assert_eq!(doc.scopes, vec!["web".to_string()]);
    assert_eq!(doc.retries["retryFive"].max_retries, Some(5));

    let bad = "---\nkind: Resiliency\nmetadata:\n  name: broken\nscopes: [nobody]\nspec:\n  policies:\n    circuitBreakers:\n      cb:\n        trip: \"consecutiveFailures >\"\n  targets:\n    apps:\n      web:\n        timeout: nope\n";
    std::fs::write(dir.path().join("b.yaml"), bad).unwrap();
    let mut c = load_str(&toml).unwrap();
    let errs = load_resources(&mut c, &[]).unwrap_err();
    let found: Vec<(Option<usize>, Option<String>)> =
        errs.0.iter().map(|e| (e.line, e.key.clone())).collect();
    assert_eq!(
        found,
        vec![
            (Some(5), Some("broken: scopes".into())),
            (
                Some(10),
                Some("broken: spec.policies.circuitBreakers.cb.trip".into())
            ),
            (
                Some(14),
                Some("broken: spec.targets.apps.web.timeout".into())
            ),
        ],
        "{errs}"
    );
    assert!(errs.0.iter().all(|e| e.file.ends_with("b.yaml")));

    // A value of the wrong type: the message names the key, the error its line.
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    let wrong = "kind: Resiliency\nmetadata:\n  name: typo\nspec:\n  policies:\n    retries:\n      r:\n        maxRetries: lots\n";
    std::fs::write(dir.path().join("c.yaml"), wrong).unwrap();
    let mut c = load_str(&toml).unwrap();
    let errs = load_resources(&mut c, &[]).unwrap_err();
    assert_eq!(errs.0.len(), 1, "{errs}");
    assert_eq!(errs.0[0].line, Some(8), "{errs}");
    assert!(
        errs.0[0]
            .to_string()
            .contains("spec.policies.retries.r.maxRetries: invalid type: string \"lots\""),
        "{errs}"
    );
}

#[test]
fn telemetry_table_is_checked_with_lines() {
    let c = load_str(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nservice_name = \"edge\"\nlog_format = \"json\"\n",
    )
    .unwrap();
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318")
    );
    assert_eq!(c.telemetry.service_name.as_deref(), Some("edge"));
    assert_eq!(c.telemetry.log_format, Some(LogFormat::Json));
    assert_eq!(load_str("").unwrap().telemetry, TelemetrySpec::default());
    let keys = error_keys(
        "[telemetry]\notlp_endpoint = \"grpc://collector:4317\"\nservice_name = \"\"\nlog_format = \"xml\"\n",
    );
    assert_eq!(
        keys,
        [
            ("telemetry.otlp_endpoint".to_string(), Some(2)),
            ("telemetry.service_name".to_string(), Some(3)),
            ("telemetry.log_format".to_string(), Some(4)),
        ]
    );
    let e = single_error("[telemetry]\nendpoint = \"http://x\"\n");
    assert!(e.to_string().contains("endpoint"), "{e}");
}

#[test]
fn bulk_subscribe_takes_daprs_defaults_and_bad_settings_name_their_key() {
    let base = "[api]\n[[service]]\nname = \"s\"\ncommand = [\"sh\"]\n\n[[subscription]]\nservice = \"s\"\npubsub = \"pubsub\"\ntopic = \"t\"\nroute = \"/t\"\n";
    let c = load_str(&format!(
        "{base}bulk_subscribe = {{ max_await_duration_ms = 50 }}\n"
    ))
    .unwrap();
    let bulk = c.subscriptions[0].bulk.expect("bulk on");
    assert_eq!(bulk.max_messages, 100);
    assert_eq!(bulk.max_await, Duration::from_millis(50));
    let c = load_str(&format!("{base}bulk_subscribe = {{ enabled = false }}\n")).unwrap();
    assert_eq!(c.subscriptions[0].bulk, None);
    let keys = error_keys(&format!(
        "{base}in_order = true\nbulk_subscribe = {{ max_messages_count = 0 }}\n"
    ));
    assert!(
        keys.contains(&(
            "subscription[0].bulk_subscribe.max_messages_count".into(),
            Some(12)
        )),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|(k, _)| k == "subscription[0].bulk_subscribe"),
        "{keys:?}"
    );
    let keys = error_keys(&format!("{base}bulk_subscribe = {{ max = 1 }}\n"));
    assert!(
        keys.iter().any(|(k, _)| k.contains("bulk_subscribe")),
        "{keys:?}"
    );
}
