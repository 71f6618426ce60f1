//! The deployment files, checked offline (no Docker daemon or cluster runs here). The Kubernetes
//! manifests as `kubectl kustomize deploy/kubernetes` renders them, and the Helm chart as
//! `deploy/helm/render.py` renders it in both modes, parse; the herd.toml of every ConfigMap
//! passes `herd check`; container ports, probes, the headless Service, the PodDisruptionBudget
//! and the grace period agree with that config. The Dockerfile's start command runs outside a
//! container, with the image's argv and environment (its config copied to a temp dir with free
//! ports and a temp data dir), until the image's HEALTHCHECK command passes; SIGTERM stops it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;

use crate::util::{free_port, get, herd_bin, process_gone, wait_for};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every YAML document in `text`, as JSON values (empty documents dropped).
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| {
            let v = serde_norway::Value::deserialize(d).expect("valid YAML");
            serde_json::to_value(v).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Runs a renderer; `None` (the test reports itself skipped) when the program is missing.
fn render(program: &str, args: &[&str]) -> Option<Vec<Value>> {
    let out = match Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(out) => out,
        Err(_) => return None,
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("No module named 'yaml'") {
        return None;
    }
    assert!(out.status.success(), "{program} {args:?} failed: {stderr}");
    Some(documents(&String::from_utf8(out.stdout).unwrap()))
}

/// `herd check` on `text` (programs named without a path get an executable stub on PATH: the
/// app is the image's business), then the config as TOML.
fn checked(text: &str) -> toml::Table {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herd.toml");
    std::fs::write(&config, text).unwrap();
    let table: toml::Table = text.parse().expect("herd.toml is TOML");
    let stubs = dir.path().join("bin");
    std::fs::create_dir(&stubs).unwrap();
    for service in table
        .get("service")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        let program = service["command"][0].as_str().unwrap();
        if !program.contains('/') {
            let stub = stubs.join(program);
            std::fs::write(&stub, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
    }
    let path = format!(
        "{}:{}",
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(herd_bin())
        .args(["-c".as_ref(), config.as_os_str(), "check".as_ref()])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "herd check refused the ConfigMap's herd.toml:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    table
}

fn port_of(listen: &Value) -> u64 {
    let s = listen.as_str().expect("a listen address");
    s.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn listen_port(table: &toml::Table, section: &str) -> Option<u64> {
    let listen = table.get(section)?.get("listen")?.as_str()?;
    Some(port_of(&Value::from(listen)))
}

/// `selector` (a label map) picks a pod with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Checks one rendered set of manifests; returns how many herd pods it has.
fn check_manifests(docs: &[Value]) -> usize {
    let by_kind = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let config_maps: BTreeMap<&str, &Value> = by_kind("ConfigMap")
        .map(|c| (c["metadata"]["name"].as_str().unwrap(), c))
        .collect();
    let mut pods = Vec::new();
    for deployment in by_kind("Deployment") {
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let template = &deployment["spec"]["template"];
        let labels = &template["metadata"]["labels"];
        assert!(
            selects(&deployment["spec"]["selector"]["matchLabels"], labels),
            "{name}: selector"
        );
        let pod = &template["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let containers: Vec<&Value> = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod[*k].as_array().into_iter().flatten())
            .collect();
        let mounts = |c: &Value| c["volumeMounts"].as_array().cloned().unwrap_or_default();
        let herd = containers
            .iter()
            .find(|c| mounts(c).iter().any(|m| m["mountPath"] == "/etc/herd"))
            .unwrap_or_else(|| panic!("{name}: no container mounts /etc/herd"));
        if pod["initContainers"]
            .as_array()
            .is_some_and(|i| i.iter().any(|c| c == *herd))
        {
            assert_eq!(
                herd["restartPolicy"], "Always",
                "{name}: herd is a native sidecar"
            );
        }
        // The config, from the ConfigMap mounted at /etc/herd.
        let volume = mounts(herd)
            .into_iter()
            .find(|m| m["mountPath"] == "/etc/herd")
            .unwrap()["name"]
            .clone();
        let volumes = pod["volumes"].as_array().unwrap();
        let cm_name = volumes.iter().find(|v| v["name"] == volume).unwrap()["configMap"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: /etc/herd is not a ConfigMap"));
        let cm = config_maps
            .get(cm_name)
            .unwrap_or_else(|| panic!("{name}: no ConfigMap {cm_name}"));
        let table = checked(cm["data"]["herd.toml"].as_str().unwrap());
        // The data dir is a writable volume (the root file system is read-only).
        let data_dir = table["data_dir"].as_str().expect("data_dir set");
        assert!(
            mounts(herd)
                .iter()
                .any(|m| m["mountPath"] == data_dir && m["readOnly"] != true),
            "{name}: data_dir {data_dir} is not a mounted volume"
        );
        assert_eq!(
            herd["securityContext"]["readOnlyRootFilesystem"], true,
            "{name}"
        );
        // Ports by name, matching the listen addresses.
        let ports: BTreeMap<String, u64> = herd["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        let admin = listen_port(&table, "admin").expect("[admin] for the probes");
        assert_eq!(ports.get("admin"), Some(&admin), "{name}: admin port");
        if let Some(mesh) = listen_port(&table, "mesh") {
            assert_eq!(ports.get("mesh"), Some(&mesh), "{name}: mesh port");
        }
        let services = table
            .get("service")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default();
        if let Some(listen) = services.iter().find_map(|s| s.get("listen")) {
            let http = port_of(&Value::from(listen.as_str().unwrap()));
            assert_eq!(ports.get("http"), Some(&http), "{name}: the service's port");
        }
        let resolve = |port: &Value| match port {
            Value::String(n) => *ports
                .get(n)
                .unwrap_or_else(|| panic!("{name}: no port {n}")),
            p => p.as_u64().unwrap(),
        };
        let live = &herd["livenessProbe"]["httpGet"];
        assert_eq!(live["path"], "/healthz", "{name}");
        assert_eq!(resolve(&live["port"]), admin, "{name}: liveness on admin");
        let ready = &herd["readinessProbe"]["httpGet"];
        assert!(
            ports.values().any(|p| *p == resolve(&ready["port"])),
            "{name}: readiness port"
        );
        // Graceful termination: longer than every instance's kill_timeout, with room to drain.
        let kill = services
            .iter()
            .map(|s| {
                let t = s
                    .get("kill_timeout")
                    .and_then(|t| t.as_str())
                    .unwrap_or("5s");
                humantime::parse_duration(t).unwrap()
            })
            .max()
            .unwrap_or_default();
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace period");
        assert!(
            grace >= kill.as_secs() + 5,
            "{name}: grace {grace}s vs kill_timeout {kill:?}"
        );
        // Mesh peers named by DNS: a headless Service over herd pods, on the mesh port.
        let peers = table
            .get("mesh")
            .and_then(|m| m.get("peers"))
            .and_then(|p| p.as_array());
        for peer in peers.into_iter().flatten() {
            let (host, port) = peer.as_str().unwrap().rsplit_once(':').unwrap();
            let svc = by_kind("Service")
                .find(|s| s["metadata"]["name"] == host)
                .unwrap_or_else(|| panic!("{name}: peer {host} is no Service"));
            assert_eq!(svc["spec"]["clusterIP"], "None", "{host} is headless");
            assert!(
                selects(&svc["spec"]["selector"], labels),
                "{host} selects {name}"
            );
            let p = &svc["spec"]["ports"][0];
            assert_eq!(p["port"].as_u64(), port.parse().ok(), "{host}: port");
            assert_eq!(p["targetPort"], "mesh", "{host}: targetPort");
        }
        pods.push((labels.clone(), ports));
    }
    for pdb in by_kind("PodDisruptionBudget") {
        let sel = &pdb["spec"]["selector"]["matchLabels"];
        assert!(
            pods.iter().any(|(l, _)| selects(sel, l)),
            "PDB selects no pod"
        );
    }
    for svc in by_kind("Service") {
        let picked: Vec<_> = pods
            .iter()
            .filter(|(l, _)| selects(&svc["spec"]["selector"], l))
            .collect();
        assert!(
            !picked.is_empty(),
            "Service {} selects no pod",
            svc["metadata"]["name"]
        );
    }
    pods.len()
}

#[test]
fn kubernetes_manifests_render_and_agree_with_their_herd_toml() {
    let Some(docs) = render("kubectl", &["kustomize", "deploy/kubernetes"]) else {
        return eprintln!("skipped: kubectl is not on PATH");
    };
    assert_eq!(
        check_manifests(&docs),
        2,
        "the cluster-mode and the sidecar Deployment"
    );
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "PodDisruptionBudget")
            .count(),
        2
    );
}

#[test]
fn the_helm_chart_renders_in_both_modes_and_agrees_with_its_herd_toml() {
    for values in [None, Some("deploy/helm/herd/ci/sidecar-values.yaml")] {
        let mut args = vec!["deploy/helm/render.py", "--release", "herd"];
        args.extend(values.iter().flat_map(|v| ["-f", *v]));
        let Some(docs) = render("python3", &args) else {
            return eprintln!("skipped: python3 with PyYAML is not available");
        };
        assert_eq!(check_manifests(&docs), 1, "{values:?}");
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "ConfigMap",
                "Deployment",
                "PodDisruptionBudget",
                "Service",
                "Service"
            ]
        );
    }
}

/// The JSON array of a Dockerfile instruction (`ENTRYPOINT ["a", "b"]`), continuation lines joined.
fn instruction(dockerfile: &str, name: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .rfind(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the Dockerfile"));
    let json = &line[line.find('[').expect("exec form")..];
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_image_start_command_serves_its_healthcheck_and_stops_on_sigterm() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let copy = dockerfile
        .lines()
        .find(|l| l.starts_with("COPY deploy/herd.toml "))
        .expect("the default config is copied into the image");
    let image_config = copy.split_whitespace().nth(2).unwrap();
    // What the build and the image take from the context is not ignored.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "crates/herd",
        "examples/hello",
        "deploy/herd.toml",
    ] {
        let hit = ignore
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .find(|p| needed == *p || needed.starts_with(&format!("{p}/")));
        assert!(hit.is_none(), ".dockerignore's {hit:?} drops {needed}");
    }
    let argv: Vec<String> = [
        instruction(&dockerfile, "ENTRYPOINT"),
        instruction(&dockerfile, "CMD"),
    ]
    .concat();
    // tini is process 1 (it reaps what apps leave behind) and runs herd.
    assert_eq!(argv[..2], ["tini", "--"], "{argv:?}");
    assert!(
        dockerfile.contains("apt-get install -y --no-install-recommends tini"),
        "the runtime image installs tini"
    );
    let argv = argv[2..].to_vec();
    assert_eq!(argv[0], "herd");
    assert!(
        argv.contains(&image_config.to_string()),
        "{argv:?} uses {image_config}"
    );
    let env: Vec<(String, String)> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace().map(|kv| kv.split_once('=').unwrap()))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The image's config, as it is, passes `herd check`; then its ports and data dir move.
    let text = std::fs::read_to_string(repo().join("deploy/herd.toml")).unwrap();
    let table = checked(&text);
    let admin = listen_port(&table, "admin").unwrap();
    let api = listen_port(&table, "api").unwrap();
    let expose = dockerfile
        .lines()
        .find(|l| l.starts_with("EXPOSE "))
        .expect("EXPOSE");
    assert!(
        expose.split_whitespace().any(|p| p == admin.to_string()),
        "{expose}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (new_admin, new_api) = (free_port(), free_port());
    let mapped = text
        .replace(
            &format!("0.0.0.0:{admin}"),
            &format!("127.0.0.1:{new_admin}"),
        )
        .replace(&format!("127.0.0.1:{api}"), &format!("127.0.0.1:{new_api}"))
        .replace(
            table["data_dir"].as_str().unwrap(),
            &dir.path().join("data").to_string_lossy(),
        );
    let config = dir.path().join("herd.toml");
    std::fs::write(&config, mapped).unwrap();
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| {
            if a == image_config {
                config.to_string_lossy().into_owned()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut child = Command::new(herd_bin())
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = ([127, 0, 0, 1], new_admin).into();
    wait_for("/healthz", Duration::from_secs(20), || {
        get(addr, "/healthz").ok().filter(|r| r.status == 200)
    });
    // The HEALTHCHECK command itself, pointed at the moved port.
    let check: Vec<String> = instruction(&dockerfile, "HEALTHCHECK")
        .into_iter()
        .map(|a| a.replace(&format!("/{admin} "), &format!("/{new_admin} ")))
        .collect();
    let status = Command::new(&check[0]).args(&check[1..]).status().unwrap();
    assert!(status.success(), "HEALTHCHECK {check:?} failed");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let pid = child.id();
    wait_for("herd to stop on SIGTERM", Duration::from_secs(15), || {
        process_gone(pid).then_some(())
    });
    let exit = child.wait().unwrap();
    assert!(exit.success(), "herd exited {exit} on SIGTERM");
}
