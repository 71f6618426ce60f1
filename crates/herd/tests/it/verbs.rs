//! The PM2 verbs beyond start and stop: `scale`, `describe`, `delete`, `flush` against a
//! running herd, and `startup`, which needs none.

use std::time::Duration;

use crate::util::{Herd, get, herd_bin, process_gone, wait_for};

const CONFIG: &str = r#"
[[service]]
name = "hello"
command = ["{hello}"]
instances = 2
listen = "127.0.0.1:0"
env = { HELLO_DELAY_MS = "0", GREETING_SECRET = "s3cret" }
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a verb that must succeed; its stdout.
fn ok(herd: &Herd, args: &[&str]) -> String {
    let out = herd.cli(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Runs a verb that must fail with exit code 1; its stderr.
fn refused(herd: &Herd, args: &[&str]) -> String {
    let out = herd.cli(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

#[test]
fn scale_changes_the_instance_count_until_the_next_reload() {
    let herd = Herd::start(CONFIG);
    let first = herd.pids("hello");
    let shown = ok(&herd, &["scale", "hello", "4"]);
    assert!(shown.contains("hello scaled to 4 instance(s)"), "{shown}");
    herd.wait_all_ready();
    let four = herd.pids("hello");
    assert_eq!(four.len(), 4);
    // The instances that ran keep running.
    assert!(first.iter().all(|p| four.contains(p)), "{first:?} {four:?}");

    ok(&herd, &["scale", "hello", "1"]);
    assert_eq!(herd.instances("hello").len(), 1);
    for pid in &four[1..] {
        wait_for(
            "a removed instance to exit",
            Duration::from_secs(10),
            || process_gone(*pid).then_some(()),
        );
    }
    assert_eq!(get(herd.addr("hello"), "/").unwrap().status, 200);

    let err = refused(&herd, &["scale", "hello", "0"]);
    assert!(err.contains("herd stop hello"), "{err}");
    let err = refused(&herd, &["scale", "ghost", "2"]);
    assert!(err.contains("no service named \"ghost\""), "{err}");

    // A reload applies the config's count again.
    ok(&herd, &["reload", "hello"]);
    herd.wait_all_ready();
    assert_eq!(herd.pids("hello").len(), 2);
}

#[test]
fn describe_shows_the_settings_and_every_instance() {
    let herd = Herd::start(CONFIG);
    let shown = ok(&herd, &["describe", "hello"]);
    let addr = herd.addr("hello").to_string();
    for expected in [
        "name          hello".to_string(),
        format!("listen        {addr} (shared socket)"),
        "instances     2".to_string(),
        format!(
            "log file      {}",
            herd.data_dir().join("logs/hello.log").display()
        ),
        "env           GREETING_SECRET, HELLO_DELAY_MS".to_string(),
    ] {
        assert!(shown.contains(&expected), "{expected:?} in:\n{shown}");
    }
    assert!(
        !shown.contains("s3cret"),
        "env values are not shown:\n{shown}"
    );
    for pid in herd.pids("hello") {
        let row = shown
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no row for pid {pid} in:\n{shown}"));
        assert!(row.contains(" ready "), "{row}");
    }
    let err = refused(&herd, &["describe", "ghost"]);
    assert!(err.contains("no service named \"ghost\""), "{err}");
}

#[test]
fn delete_stops_and_hides_a_service_until_it_is_reloaded() {
    let herd = Herd::start(CONFIG);
    let pids = herd.pids("hello");
    let shown = ok(&herd, &["delete", "hello"]);
    assert!(shown.contains("hello stopped and deleted"), "{shown}");
    for pid in &pids {
        assert!(process_gone(*pid), "pid {pid} still runs");
    }
    assert!(herd.status().is_empty(), "{:?}", herd.status());
    for verb in ["start", "stop", "describe", "logs"] {
        let err = refused(&herd, &[verb, "hello"]);
        assert!(err.contains("it was deleted"), "{verb}: {err}");
    }
    let err = refused(&herd, &["scale", "hello", "3"]);
    assert!(err.contains("it was deleted"), "{err}");
    // `start all` leaves it deleted.
    ok(&herd, &["start", "all"]);
    assert!(herd.status().is_empty());

    let shown = ok(&herd, &["reload", "hello"]);
    assert!(
        shown.contains("hello started again from the config"),
        "{shown}"
    );
    herd.wait_all_ready();
    let back = herd.pids("hello");
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|p| !pids.contains(p)));
    assert_eq!(get(herd.addr("hello"), "/").unwrap().status, 200);

    let help = text(&herd.cli(&["delete", "--help"]).stdout);
    assert!(help.contains("herd reload"), "{help}");
}

#[test]
fn flush_empties_the_log_files_and_the_recent_lines() {
    let herd = Herd::start(CONFIG);
    let file = herd.data_dir().join("logs/hello.log");
    wait_for("the log file", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&file).ok()?;
        text.contains(" ready").then_some(())
    });
    assert!(herd.logs("hello").contains(" ready"));
    let rotated = herd.data_dir().join("logs/hello.log.1");
    std::fs::write(&rotated, "old\n").unwrap();

    let shown = ok(&herd, &["flush", "hello"]);
    assert!(
        shown.contains("logs of hello flushed (2 file(s)"),
        "{shown}"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
    assert!(!rotated.exists());
    assert!(!herd.logs("hello").contains(" ready"));

    // New lines are written from the start of the emptied file.
    ok(&herd, &["restart", "hello"]);
    herd.wait_all_ready();
    wait_for("new lines", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&file).ok()?;
        text.starts_with("20").then_some(())
    });

    ok(&herd, &["flush"]);
    let err = refused(&herd, &["flush", "ghost"]);
    assert!(err.contains("no service named \"ghost\""), "{err}");
}

#[test]
fn startup_prints_and_installs_a_unit_running_herd_up() {
    let herd = Herd::prepare(CONFIG);
    let printed = ok(&herd, &["startup"]);
    let exe = herd_bin();
    let expected = format!(
        "ExecStart={} -c {} up",
        exe.display(),
        herd.config().display()
    );
    assert!(printed.contains(&expected), "{expected:?} in:\n{printed}");
    assert!(printed.contains("\n[Install]\nWantedBy=multi-user.target\n"));

    let units = tempfile::tempdir().unwrap();
    let dir = units.path().to_str().unwrap();
    let shown = ok(
        &herd,
        &["startup", "--install", "--name", "shop", "--unit-dir", dir],
    );
    let written = std::fs::read_to_string(units.path().join("shop.service")).unwrap();
    assert_eq!(written, printed);
    assert!(shown.contains("systemctl enable --now shop"), "{shown}");

    let err = refused(&herd, &["startup", "--name", "a/b"]);
    assert!(err.contains("not a unit name"), "{err}");
}
