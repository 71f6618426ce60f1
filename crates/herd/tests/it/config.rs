//! Bad configs: herd refuses to start and names the file, the line and the key.

use std::process::Output;

use crate::util::Herd;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `herd <verb>` on `config` and expects exit code 2 with `expected` in stderr.
fn refused(verb: &str, config: &str, expected: &str) {
    let herd = Herd::prepare(config);
    let out = herd.cli(&[verb]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{verb}: {err}");
    let file = herd.config();
    let want = format!("{}{expected}", file.display());
    assert!(err.contains(&want), "{verb}: expected {want:?} in:\n{err}");
    assert!(!herd.data_dir().join("herd.sock").exists());
}

#[test]
fn unknown_key_is_refused_with_line_and_key() {
    let config = "[[service]]\nname = \"a\"\ncommand = [\"true\"]\ninstance = 2\n";
    refused(
        "check",
        config,
        ":4:1: service[0].instance: unknown field `instance`",
    );
    refused(
        "up",
        config,
        ":4:1: service[0].instance: unknown field `instance`",
    );
}

#[test]
fn wrong_type_is_refused_with_line_and_key() {
    let config = "[[service]]\nname = \"a\"\ncommand = [\"true\"]\ninstances = true\n";
    // Placed at the value, and saying what is expected.
    refused(
        "up",
        config,
        ":4:13: service[0].instances: invalid type: boolean `true`, expected a number of instances, or \"max\"",
    );
}

#[test]
fn missing_command_is_refused() {
    refused(
        "up",
        "\n[[service]]\nname = \"a\"\n",
        ":2:1: service[0]: missing field `command`",
    );
}

/// `herd check -c FILE` reports the problems of both loading stages at once, each with
/// file:line:column, exits 2, and starts nothing.
#[test]
fn check_reports_serde_and_validation_problems_in_one_pass() {
    let herd = Herd::prepare(
        "[[service]]\nname = \"web\"\ncommand = \"node server.js\"\ninstancez = 2\n\n[[service]]\nname = \"api\"\ncommand = [\"true\"]\ninstances = 0\nrestart = { window = 5 }\n",
    );
    let out = herd.cli(&["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let file = herd.config().display().to_string();
    for expected in [
        ":4:1: service[0].instancez: unknown field `instancez`",
        ":10:22: service[1].restart.window: invalid type: integer `5`, expected a string",
        ":3:1: service[0].command: must be an array, the program and its arguments (run without a shell): command = [\"node\", \"server.js\"]",
        ":9:1: service[1].instances: must be between 1 and",
    ] {
        let want = format!("{file}{expected}");
        assert!(err.contains(&want), "expected {want:?} in:\n{err}");
    }
    assert!(err.contains("4 problem(s)"), "{err}");
    assert!(!herd.data_dir().join("herd.sock").exists());
}

#[test]
fn several_problems_are_reported_together() {
    let herd = Herd::prepare(
        "[[service]]\nname = \"a b\"\ncommand = [\"true\"]\ninstances = 0\nkill_timeout = \"x\"\n",
    );
    let out = herd.cli(&["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2));
    for key in [
        ":2:1: service[0].name",
        ":4:1: service[0].instances",
        ":5:1: service[0].kill_timeout",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[test]
fn address_in_use_is_refused_with_line_and_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config =
        format!("[[service]]\nname = \"a\"\ncommand = [\"{{hello}}\"]\n\nlisten = \"{addr}\"\n");
    refused(
        "up",
        &config,
        &format!(":5:1: service[0].listen: cannot bind {addr}: "),
    );
}

#[test]
fn a_valid_config_checks_ok() {
    let herd = Herd::prepare(
        "[[service]]\nname = \"a\"\ncommand = [\"{hello}\"]\ninstances = 3\nlisten = \"127.0.0.1:0\"\n",
    );
    let out = herd.cli(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 service(s), 3 instance(s)"));
}
