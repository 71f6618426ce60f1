//! Validation of `[[service]]` tables (names, the program looked up in `PATH`, instance counts,
//! listen addresses, restart and readiness settings) and of `[logs]`, the rotation of their log
//! files.
//!
//! Programs are looked up here, so `herd check` catches a typo in `command`, and `"max"`
//! instances becomes the core count.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::check::Checker;
use crate::model::{AppProtocol, LogSettings, Readiness, ReadyMode, RestartPolicy, ServiceSpec};
use crate::raw::{RawCommand, RawInstances, RawLogs, RawService};
use crate::source::KeyPath;

/// Most instances one service may ask for; a guard against typos such as `instances = 2000`.
const MAX_INSTANCES: usize = 1024;

/// Checks every `[[service]]`: each on its own, then names and listen addresses across them.
/// Services with a problem are left out (the problem is pushed onto `c`).
pub(crate) fn check(c: &mut Checker<'_>, raw: Vec<RawService>) -> Vec<ServiceSpec> {
    let mut names = HashSet::new();
    let mut addresses: BTreeMap<SocketAddr, String> = BTreeMap::new();
    let mut services = Vec::new();
    for (index, raw_service) in raw.into_iter().enumerate() {
        let name = raw_service.name.clone();
        if !names.insert(name.clone()) {
            c.err(
                &KeyPath::service(index).key("name"),
                format!("service {name:?} is defined twice"),
            );
        }
        if let Some(spec) = service(c, index, raw_service) {
            if let Some(addr) = spec.listen.filter(|a| a.port() != 0)
                && let Some(other) = addresses.insert(addr, name.clone())
            {
                c.err(
                    &KeyPath::service(index).key("listen"),
                    format!("{addr} is already the listen address of service {other:?}"),
                );
            }
            services.push(spec);
        }
    }
    services
}

/// `[logs]`: rotation of the per-service log files.
pub(crate) fn logs(c: &mut Checker<'_>, raw: RawLogs) -> LogSettings {
    let logs = LogSettings {
        max_size: raw.max_size.map_or(10 * 1024 * 1024, |s| s.as_u64()),
        keep: raw.keep.unwrap_or(5),
    };
    if logs.max_size < 4096 {
        c.err(
            &KeyPath::default().key("logs").key("max_size"),
            "must be at least 4KB",
        );
    }
    logs
}

/// One `[[service]]` table; `None` when it has a problem (pushed onto `c`).
fn service(c: &mut Checker<'_>, index: usize, raw: RawService) -> Option<ServiceSpec> {
    let at = KeyPath::service(index);
    let errors_before = c.error_count();

    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        c.err(
            &at.key("name"),
            format!(
                "invalid service name {:?}: use letters, digits, '-' and '_'",
                raw.name
            ),
        );
    }

    let cwd = match &raw.cwd {
        None => c.base().to_path_buf(),
        Some(dir) => {
            let p = c.base().join(dir);
            if !p.is_dir() {
                c.err(&at.key("cwd"), format!("not a directory: {}", p.display()));
            }
            p
        }
    };

    for key in raw.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            c.err(
                &at.key("env"),
                format!("invalid environment variable name {key:?}"),
            );
        }
    }

    let mut command = Vec::new();
    match raw.command {
        RawCommand::Line(line) => c.err(&at.key("command"), command_line_error(&line)),
        RawCommand::Args(args) if args.is_empty() => c.err(
            &at.key("command"),
            "must name a program: command = [\"program\", \"arg\", ...]",
        ),
        RawCommand::Args(args) => {
            command = args;
            match resolve_program(&command[0], &cwd, raw.env.get("PATH")) {
                Ok(path) => command[0] = path,
                Err(message) => c.err(&at.key("command"), message),
            }
        }
    }

    let instances = match raw.instances {
        None => 1,
        Some(RawInstances::Count(n)) if n >= 1 && n as usize <= MAX_INSTANCES => n as usize,
        Some(RawInstances::Count(n)) => {
            c.err(
                &at.key("instances"),
                format!("must be between 1 and {MAX_INSTANCES}, got {n}"),
            );
            1
        }
        Some(RawInstances::Keyword(k)) if k == "max" => {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
        Some(RawInstances::Keyword(k)) => {
            c.err(
                &at.key("instances"),
                format!("must be a number or \"max\", got {k:?}"),
            );
            1
        }
    };

    let listen = raw
        .listen
        .as_deref()
        .and_then(|text| c.address(&at.key("listen"), text));
    let balance = c.balance(&at.key("balance"), raw.balance.as_deref());
    let breaker = c.breaker(&at.key("breaker"), raw.breaker.as_ref());

    let r = &raw.restart;
    let rp = at.key("restart");
    let d = RestartPolicy::default();
    let restart = RestartPolicy {
        initial_backoff: c.duration(
            &rp.key("initial_backoff"),
            r.initial_backoff.as_deref(),
            d.initial_backoff,
        ),
        max_backoff: c.duration(
            &rp.key("max_backoff"),
            r.max_backoff.as_deref(),
            d.max_backoff,
        ),
        max_restarts: r.max_restarts.unwrap_or(d.max_restarts),
        window: c.duration(&rp.key("window"), r.window.as_deref(), d.window),
        min_uptime: c.duration(&rp.key("min_uptime"), r.min_uptime.as_deref(), d.min_uptime),
    };
    if restart.initial_backoff > restart.max_backoff {
        c.err(
            &rp.key("initial_backoff"),
            "must not be longer than restart.max_backoff",
        );
    }

    let kill_timeout = c.duration(
        &at.key("kill_timeout"),
        raw.kill_timeout.as_deref(),
        Duration::from_secs(5),
    );

    let own_port = match raw.port.as_deref() {
        None => false,
        Some("auto") if listen.is_some() || raw.listen.is_some() => {
            c.err(
                &at.key("port"),
                "a service either shares `listen` or gives each instance its own `port`, not both",
            );
            false
        }
        Some("auto") => true,
        Some(other) => {
            c.err(
                &at.key("port"),
                format!("unknown port setting {other:?}: use \"auto\""),
            );
            false
        }
    };

    let passthrough = raw.passthrough.unwrap_or(false);
    if raw.passthrough == Some(true) && raw.listen.is_none() {
        c.err(
            &at.key("passthrough"),
            "passes the `listen` socket to the instances: set `listen` too",
        );
    }
    // Each instance can be reached on its own: a port of its own, or a private socket.
    let own_address = own_port || (raw.listen.is_some() && !passthrough);

    let ready_at = at.key("ready");
    let mode = match raw.ready.mode.as_deref() {
        None | Some("listen") => ReadyMode::Listen,
        Some("notify") => ReadyMode::Notify,
        Some("http") if !own_address => {
            let why = if passthrough {
                "\"http\" readiness cannot choose an instance on a shared socket (passthrough = true); use \"listen\" or \"notify\""
            } else {
                "\"http\" readiness needs `listen` or port = \"auto\" (an address per instance to probe); use \"listen\" or \"notify\""
            };
            c.err(&ready_at.key("mode"), why);
            ReadyMode::Listen
        }
        Some("http") => {
            let path = raw.ready.path.clone().unwrap_or_else(|| "/healthz".into());
            if !path.starts_with('/') {
                c.err(
                    &ready_at.key("path"),
                    format!("must start with '/': {path:?}"),
                );
            }
            ReadyMode::Http { path }
        }
        Some(other) => {
            c.err(
                &ready_at.key("mode"),
                format!("unknown readiness mode {other:?}: use \"listen\", \"notify\" or \"http\""),
            );
            ReadyMode::Listen
        }
    };
    if raw.ready.path.is_some() && !matches!(mode, ReadyMode::Http { .. }) {
        c.err(&ready_at.key("path"), "only used with mode = \"http\"");
    }
    let ready = Readiness {
        mode,
        timeout: c.duration(
            &ready_at.key("timeout"),
            raw.ready.timeout.as_deref(),
            Duration::from_secs(30),
        ),
    };

    if let Some(m) = raw.max_memory
        && m.as_u64() < 1024 * 1024
    {
        c.err(&at.key("max_memory"), "must be at least 1MB");
    }

    let app_protocol = match raw.app_protocol.as_deref() {
        None | Some("http") => AppProtocol::Http,
        Some("grpc") => AppProtocol::Grpc,
        Some(other) => {
            c.err(
                &at.key("app_protocol"),
                format!("unknown app protocol {other:?}: use \"http\" or \"grpc\""),
            );
            AppProtocol::Http
        }
    };

    (c.error_count() == errors_before).then(|| ServiceSpec {
        name: raw.name,
        index,
        command,
        instances,
        listen,
        passthrough,
        own_port,
        balance,
        breaker,
        cwd,
        env: raw.env,
        restart,
        max_memory: raw.max_memory.map(|m| m.as_u64()),
        kill_timeout,
        ready,
        app_protocol,
    })
}
/// Finds `program` the way `execvp` would, so a missing program is a config error rather than a
/// crash loop: with a `/` it is a path relative to `cwd`, otherwise it is searched in `PATH`.
fn resolve_program(program: &str, cwd: &Path, path_var: Option<&String>) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = cwd.join(program);
        return if executable(&p) {
            Ok(p.to_string_lossy().into_owned())
        } else {
            Err(format!(
                "program {} does not exist or is not executable",
                p.display()
            ))
        };
    }
    let inherited = std::env::var("PATH").unwrap_or_default();
    let search = path_var.map_or(inherited.as_str(), |s| s.as_str());
    search
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| cwd.join(dir).join(program))
        .find(|p| executable(p))
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| format!("program {program:?} not found in PATH"))
}

/// The error for `command = "<line>"`: commands are arrays (run without a shell), so suggest
/// the array this line would be, or `sh -c` when it needs a shell.
fn command_line_error(line: &str) -> String {
    let shell = line.contains(['|', '&', ';', '<', '>', '$', '`', '"', '\'', '*', '(', ')']);
    let words: Vec<String> = if shell {
        vec!["sh".into(), "-c".into(), line.to_string()]
    } else {
        line.split_whitespace().map(str::to_string).collect()
    };
    let array = words
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "must be an array, the program and its arguments (run without a shell): command = [{array}]"
    )
}
