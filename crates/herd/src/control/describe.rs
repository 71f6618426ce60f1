//! `herd describe NAME`: one service's settings as herd runs it now (after any `herd scale`),
//! and the state of each instance, as lines of text.

use herd_config::{ReadyMode, ServiceSpec};
use herd_supervisor::{LogHub, Service, ServiceStatus};

use crate::render;

/// The lines describing `service`.
pub fn lines(service: &Service, logs: &LogHub) -> Vec<String> {
    let spec = service.spec();
    let status = service.status();
    let mut out = settings(&spec, &status);
    out.push(format!(
        "{:<14}{}",
        "log file",
        logs.file_of(&spec.name).display()
    ));
    out.push(String::new());
    out.push(format!(
        "{:<4} {:>8} {:>6} {:<9} {:>8} {:>8} {:>9}  last exit",
        "id", "pid", "port", "state", "uptime", "restarts", "memory"
    ));
    for i in &status.instances {
        let dash = || "-".to_string();
        out.push(format!(
            "{:<4} {:>8} {:>6} {:<9} {:>8} {:>8} {:>9}  {}",
            i.id,
            i.pid.map_or_else(dash, |p| p.to_string()),
            i.port.map_or_else(dash, |p| p.to_string()),
            render::state_name(i.state),
            i.uptime_ms
                .map_or_else(dash, |ms| render::uptime(std::time::Duration::from_millis(
                    ms
                ))),
            i.restarts,
            render::memory(i.memory_bytes),
            i.last_exit.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// The service's settings, one `name value` line each.
fn settings(spec: &ServiceSpec, status: &ServiceStatus) -> Vec<String> {
    let line = |name: &str, value: String| format!("{name:<14}{value}");
    let mut out = vec![
        line("name", spec.name.clone()),
        line("command", shell_words(&spec.command)),
        line("cwd", spec.cwd.display().to_string()),
        line("instances", spec.instances.to_string()),
    ];
    if let Some(listen) = &status.listen {
        out.push(line("listen", format!("{listen} (shared socket)")));
    } else if spec.own_port {
        out.push(line("port", "auto (one port per instance)".into()));
    }
    let ready = match &spec.ready.mode {
        ReadyMode::Listen => "listen".to_string(),
        ReadyMode::Http { path } => format!("http {path}"),
        ReadyMode::Notify => "notify".to_string(),
    };
    out.push(line(
        "ready",
        format!(
            "{ready}, within {}",
            humantime::format_duration(spec.ready.timeout)
        ),
    ));
    let r = &spec.restart;
    out.push(line(
        "restart",
        format!(
            "backoff {} to {}, at most {} restarts in {}",
            humantime::format_duration(r.initial_backoff),
            humantime::format_duration(r.max_backoff),
            r.max_restarts,
            humantime::format_duration(r.window)
        ),
    ));
    out.push(line(
        "kill timeout",
        humantime::format_duration(spec.kill_timeout).to_string(),
    ));
    if let Some(max) = spec.max_memory {
        out.push(line("max memory", render::memory(max)));
    }
    // Names only: values may hold secrets, and the config file has them.
    let env: Vec<&str> = spec.env.keys().map(String::as_str).collect();
    if !env.is_empty() {
        out.push(line("env", env.join(", ")));
    }
    out
}

/// The command as one would type it (arguments with spaces quoted).
fn shell_words(command: &[String]) -> String {
    command
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("{w:?}")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
