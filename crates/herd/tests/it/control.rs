//! The control socket and the CLI around it: detaching, `ls`, `down`, and refusing a second herd.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::util::{Herd, get, process_gone, wait_for};

const CONFIG: &str = r#"
[[service]]
name = "hello"
command = ["{hello}"]
instances = 2
listen = "127.0.0.1:0"
env = { HELLO_DELAY_MS = "0" }
"#;

#[test]
fn detached_herd_answers_the_cli_and_goes_down() {
    let herd = Herd::prepare(CONFIG);
    let out = herd.cli(&["up", "-d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("herd started in the background"), "{shown}");
    // `up -d` returns once the instances are ready, and shows them.
    assert_eq!(
        shown.lines().filter(|l| l.contains(" ready ")).count(),
        2,
        "{shown}"
    );

    let sock = herd.data_dir().join("herd.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let table = String::from_utf8_lossy(&herd.cli(&["ls"]).stdout).into_owned();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SERVICE", "ID", "PID", "STATE", "UPTIME", "RESTARTS", "CPU", "MEMORY", "LISTEN"
        ]
    );
    assert_eq!(table.lines().filter(|l| l.contains(" ready ")).count(), 2);
    assert_eq!(get(herd.addr("hello"), "/").unwrap().status, 200);

    // A second herd on the same data directory is refused.
    let out = herd.cli(&["up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));

    let pids = herd.pids("hello");
    let out = herd.cli(&["down"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("herd stopped"));
    // `down` returns once herd has stopped every instance.
    assert!(
        pids.iter().all(|&p| process_gone(p)),
        "instances outlived herd down"
    );
    wait_for(
        "the control socket removed",
        Duration::from_secs(10),
        || (!sock.exists()).then_some(()),
    );
    let out = herd.cli(&["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("herd is not running"));
}

#[test]
fn reload_with_a_broken_config_changes_nothing() {
    let herd = Herd::start(CONFIG);
    let before = herd.pids("hello");
    herd.rewrite("[[service]]\nname = \"hello\"\ncommand = [\"{hello}\"]\ninstances = -1\n");
    let out = herd.cli(&["reload", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":4:1: service[0].instances: must be between 1 and"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(herd.pids("hello"), before);
}

#[test]
fn reload_applies_a_new_instance_count() {
    let herd = Herd::start(CONFIG);
    herd.rewrite(&CONFIG.replace("instances = 2", "instances = 3"));
    let out = herd.cli(&["reload", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    herd.wait_all_ready();
    assert_eq!(herd.pids("hello").len(), 3);
    herd.rewrite(&CONFIG.replace("instances = 2", "instances = 1"));
    let out = herd.cli(&["reload", "hello"]);
    assert!(out.status.success());
    assert_eq!(herd.instances("hello").len(), 1);
}
