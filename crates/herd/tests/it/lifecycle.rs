//! Stopping herd and its services: graceful SIGTERM, SIGKILL of herd, SIGTERM, SIGINT and
//! `herd down` with instances that never got ready, stop/start, readiness by notification, and
//! the merged logs.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{Herd, get, process_gone, wait_for};

const SLOW_HELLO: &str = r#"
[[service]]
name = "hello"
command = ["{hello}"]
instances = 2
listen = "127.0.0.1:0"
kill_timeout = "10s"
env = { HELLO_DELAY_MS = "700", HELLO_LOG_REQUESTS = "1", HELLO_DRAIN_MS = "0" }
"#;

#[test]
fn sigterm_lets_in_flight_requests_finish_and_leaves_no_child() {
    let mut herd = Herd::start(SLOW_HELLO);
    let addr = herd.addr("hello");
    let pids = herd.pids("hello");
    let requests: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(addr, "/")))
        .collect();
    // In flight = accepted by an instance, which prints a line as each request arrives.
    wait_for("4 requests in flight", Duration::from_secs(5), || {
        (herd.logs("hello").matches(" request ").count() == 4).then_some(())
    });
    herd.signal(Signal::SIGTERM);
    for r in requests {
        let r = r.join().unwrap().expect("in-flight request completes");
        assert_eq!(r.status, 200);
    }
    let status = herd.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}: {}", herd.stderr());
    for pid in pids {
        assert!(process_gone(pid), "instance {pid} outlived herd");
    }
    assert!(!herd.data_dir().join("herd.sock").exists());
}

/// A ready service beside two that are not: `deaf` never accepts on its fd 3 and ignores
/// SIGTERM (its shell and the shell's child), `crashing` waits out a long backoff; and `leaky`,
/// ready, whose shell dies on SIGTERM while its child ignores it.
const NOT_READY: &str = r#"
[[service]]
name = "hello"
command = ["{hello}"]
listen = "127.0.0.1:0"
kill_timeout = "1s"

[[service]]
name = "deaf"
command = ["sh", "-c", "trap '' TERM; sleep 1000 & wait"]
listen = "127.0.0.1:0"
kill_timeout = "1s"
ready = { timeout = "60s" }

[[service]]
name = "crashing"
command = ["sh", "-c", "exit 3"]
kill_timeout = "1s"
restart = { initial_backoff = "60s", max_backoff = "60s" }

[[service]]
name = "leaky"
command = ["sh", "-c", "(trap '' TERM; exec sleep 1000) & wait"]
kill_timeout = "1s"
"#;

/// How a test asks herd to stop.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Signal(Signal),
    Down,
}

/// The command names of the live processes in process group `pgid` (zombies left out).
fn group_members(pgid: u32) -> Vec<String> {
    let dir = std::fs::read_dir("/proc").expect("read /proc");
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid pgrp ...`; the name may hold spaces and parentheses.
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1;
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let pgrp = fields.nth(1)?.parse::<u32>().ok()?;
            (state != "Z" && pgrp == pgid).then(|| comm.to_string())
        })
        .collect()
}

/// The pid of `service`'s first instance once its group runs a `sleep`: its shell forked, with
/// its trap set.
fn sleeping(herd: &Herd, service: &str) -> u32 {
    wait_for(
        &format!("{service}'s sleep"),
        Duration::from_secs(10),
        || {
            let pid = herd.instances(service)[0]["pid"].as_u64()? as u32;
            group_members(pid)
                .iter()
                .any(|c| c == "sleep")
                .then_some(pid)
        },
    )
}

/// Stops a herd whose instances are ready, starting (ignoring SIGTERM), in backoff, or leave a
/// process in their group that ignores SIGTERM, by `how`, and checks it exits with success
/// within the instances' kill_timeout (1 s) and a margin, with no process of any instance left.
fn stops_with_instances_never_ready(how: Stop) {
    let mut herd = Herd::prepare(NOT_READY);
    herd.spawn();
    let deaf = sleeping(&herd, "deaf");
    let leaky = sleeping(&herd, "leaky");
    let hello = wait_for("hello ready", Duration::from_secs(10), || {
        let i = herd.instances("hello");
        (i[0]["state"] == "ready").then(|| i[0]["pid"].as_u64().unwrap() as u32)
    });
    wait_for("crashing in backoff", Duration::from_secs(10), || {
        (herd.instances("crashing")[0]["state"] == "backoff").then_some(())
    });
    assert_eq!(herd.instances("deaf")[0]["state"], "starting");

    let down = match how {
        Stop::Signal(signal) => {
            herd.signal(signal);
            None
        }
        Stop::Down => Some(
            std::process::Command::new(crate::util::herd_bin())
                .arg("-c")
                .arg(herd.config())
                .arg("down")
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        ),
    };
    let status = herd.wait_exit(Duration::from_secs(1 + 5));
    assert!(status.success(), "{how:?}: {status:?}: {}", herd.stderr());
    if let Some(mut down) = down {
        let status = wait_for("herd down to return", Duration::from_secs(5), || {
            down.try_wait().unwrap()
        });
        assert!(status.success(), "herd down: {status:?}");
    }
    for pid in [deaf, hello, leaky] {
        let left = group_members(pid);
        assert!(
            left.is_empty(),
            "{how:?}: {left:?} of group {pid} outlived herd"
        );
    }
    let events = std::fs::read_to_string(herd.dir.path().join("stdout.log")).unwrap();
    for event in [
        format!("pid {deaf} still running 1s after SIGTERM; sent SIGKILL"),
        format!(
            "pid {leaky} stopped (killed by SIGTERM); stopping the processes left in its group"
        ),
        format!("processes of pid {leaky}'s group still running 1s after SIGTERM; sent SIGKILL"),
    ] {
        assert!(
            events.contains(&event),
            "{how:?}: no {event:?} in\n{events}"
        );
    }
    assert!(!herd.data_dir().join("herd.sock").exists());
}

#[test]
fn sigterm_stops_herd_with_instances_that_never_got_ready() {
    stops_with_instances_never_ready(Stop::Signal(Signal::SIGTERM));
}

#[test]
fn sigint_stops_herd_with_instances_that_never_got_ready() {
    stops_with_instances_never_ready(Stop::Signal(Signal::SIGINT));
}

#[test]
fn herd_down_stops_herd_with_instances_that_never_got_ready() {
    stops_with_instances_never_ready(Stop::Down);
}

#[test]
fn sigkill_of_herd_takes_every_instance_with_it() {
    let mut herd = Herd::start(SLOW_HELLO);
    let pids = herd.pids("hello");
    assert_eq!(pids.len(), 2);
    herd.signal(Signal::SIGKILL);
    herd.wait_exit(Duration::from_secs(5));
    wait_for("instances to die with herd", Duration::from_secs(5), || {
        pids.iter().all(|&p| process_gone(p)).then_some(())
    });
}

#[test]
fn stop_and_start_a_service() {
    let herd = Herd::start(SLOW_HELLO);
    let pids = herd.pids("hello");
    let out = herd.cli(&["stop", "hello"]);
    assert!(out.status.success());
    assert!(
        herd.instances("hello")
            .iter()
            .all(|i| i["state"] == "stopped")
    );
    assert!(pids.iter().all(|&p| process_gone(p)));

    let out = herd.cli(&["start", "hello"]);
    assert!(out.status.success());
    herd.wait_all_ready();
    let new = herd.pids("hello");
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|p| !pids.contains(p)));

    let out = herd.cli(&["stop", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named \"nope\""));
}

#[test]
fn notify_readiness_waits_for_ready_and_kills_instances_that_never_say_it() {
    let mut herd = Herd::prepare(
        r#"
[[service]]
name = "notifier"
command = ["sh", "-c", "echo starting; echo READY=1 >&$HERD_READY_FD; exec sleep 60"]
ready = { mode = "notify" }

[[service]]
name = "silent"
command = ["sleep", "60"]
ready = { mode = "notify", timeout = "300ms" }
restart = { initial_backoff = "10ms", max_restarts = 1 }
"#,
    );
    herd.spawn();
    wait_for("notifier ready", Duration::from_secs(10), || {
        (herd.instances("notifier")[0]["state"] == "ready").then_some(())
    });
    assert_ne!(herd.instances("silent")[0]["state"], "ready");
    // The silent one is killed at its deadline, restarted once, then errored.
    wait_for("silent to be errored", Duration::from_secs(10), || {
        (herd.instances("silent")[0]["state"] == "errored").then_some(())
    });
    let logs = herd.logs("silent");
    assert!(
        logs.contains("no READY=1 within 300ms; killing it"),
        "{logs}"
    );
}

#[test]
fn logs_are_merged_prefixed_and_written_to_files() {
    let herd = Herd::start(SLOW_HELLO);
    wait_for("both workers logged", Duration::from_secs(5), || {
        let logs = herd.logs("hello");
        (logs.contains("hello:0 | worker 0 listening")
            && logs.contains("hello:1 | worker 1 listening"))
        .then_some(())
    });
    let file = herd.data_dir().join("logs").join("hello.log");
    wait_for("the log file", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&file).ok()?;
        text.contains("hello:1 | worker 1 listening").then_some(())
    });
    // Every line starts with an RFC 3339 timestamp.
    let logs = herd.logs("hello");
    for line in logs.lines() {
        assert!(
            line.len() > 24 && &line[4..5] == "-" && &line[10..11] == "T",
            "{line}"
        );
    }
}

#[test]
fn instances_get_the_socket_activation_environment_and_fd_3() {
    let mut herd = Herd::prepare(
        r#"
[[service]]
name = "env"
command = ["sh", "-c", "echo pid=$$ listen_pid=$LISTEN_PID fds=$LISTEN_FDS names=$LISTEN_FDNAMES svc=$HERD_SERVICE inst=$HERD_INSTANCE port=$PORT fd3=$(readlink /proc/$$/fd/3); exec sleep 60"]
instances = 2
listen = "127.0.0.1:0"
"#,
    );
    herd.spawn();
    let port = herd.addr("env").port();
    let lines = wait_for("both instances to report", Duration::from_secs(10), || {
        let logs = herd.logs("env");
        let lines: Vec<String> = logs
            .lines()
            .filter(|l| l.contains(" | pid="))
            .map(String::from)
            .collect();
        (lines.len() == 2).then_some(lines)
    });
    for line in lines {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing in {line}"))
                .to_string()
        };
        assert_eq!(field("listen_pid"), field("pid"), "{line}");
        assert_eq!(field("fds"), "1");
        assert_eq!(field("names"), "env");
        assert_eq!(field("svc"), "env");
        assert_eq!(field("port"), port.to_string());
        assert!(field("fd3").starts_with("socket:["), "{line}");
        let inst = field("inst");
        assert!(line.contains(&format!("env:{inst} | ")), "{line}");
    }
}

#[test]
fn logs_follow_prints_new_lines_as_they_come() {
    let herd = Herd::start(SLOW_HELLO.replace("700", "0").as_str());
    let mut follow = std::process::Command::new(crate::util::herd_bin())
        .arg("-c")
        .arg(herd.config())
        .args(["logs", "hello", "-f", "-n", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains(" request "))
    });
    let addr = herd.addr("hello");
    // Requests are made until the follower has seen one: it may subscribe after the first.
    wait_for(
        "the follower to print a request line",
        Duration::from_secs(10),
        || {
            get(addr, "/").unwrap();
            reader.is_finished().then_some(())
        },
    );
    let line = reader.join().unwrap().expect("a request line");
    assert!(
        line.contains("hello:") && line.contains(" | worker "),
        "{line}"
    );
    // The reader is gone and its pipe closed: the next line ends the follower quietly.
    let status = wait_for("the follower to end", Duration::from_secs(10), || {
        get(addr, "/").unwrap();
        follow.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
}
