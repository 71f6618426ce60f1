//! The second stage of loading: raw values checked, defaulted and resolved into `model.rs` types.
//!
//! Validation never stops at the first problem: each check pushes onto one list so a user fixes
//! a file in one pass. Paths are resolved against the config file's directory, programs are
//! looked up in `PATH` here (so `herd check` catches a typo in `command`), and `"max"` becomes
//! the core count.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{
    Balance, Config, LogSettings, Readiness, ReadyMode, RestartPolicy, ServiceSpec,
};
use crate::raw::{RawConfig, RawInstances, RawService};
use crate::source::{ConfigError, KeyPath, Source};

/// Most instances one service may ask for; a guard against typos such as `instances = 2000`.
const MAX_INSTANCES: usize = 1024;

pub(crate) struct Checker<'a> {
    source: &'a Source,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// The file being checked.
    pub(crate) fn source(&self) -> &Source {
        self.source
    }

    pub(crate) fn err(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.errors.push(self.source.error(path, message));
    }

    pub(crate) fn duration(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) => d,
                Err(e) => {
                    self.err(
                        path,
                        format!("not a duration: {text:?} ({e}); write e.g. \"500ms\" or \"5s\""),
                    );
                    default
                }
            },
        }
    }

    /// A `balance` value: `round_robin` (default), `least_request` or `p2c_ewma`.
    pub(crate) fn balance(&mut self, path: &KeyPath, value: Option<&str>) -> Balance {
        match value {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_request") => Balance::LeastRequest,
            Some("p2c_ewma") => Balance::P2cEwma,
            Some(other) => {
                self.err(
                    path,
                    format!(
                        "unknown balancing {other:?}: use \"round_robin\", \"least_request\" or \"p2c_ewma\""
                    ),
                );
                Balance::RoundRobin
            }
        }
    }

    /// A file path relative to the config file's directory, which must exist.
    pub(crate) fn file(&mut self, path: &KeyPath, name: &str) -> PathBuf {
        let p = self.base.join(name);
        if !p.is_file() {
            self.err(path, format!("no such file: {}", p.display()));
        }
        p
    }

    /// A directory named relative to the config file; it must exist.
    pub(crate) fn directory(&mut self, path: &KeyPath, name: &str) -> Option<PathBuf> {
        let p = self.base.join(name);
        if p.is_dir() {
            Some(p)
        } else {
            self.err(path, format!("no such directory: {}", p.display()));
            None
        }
    }

    /// An `IP:PORT` address.
    pub(crate) fn address(&mut self, path: &KeyPath, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("not an address: {text:?}; write IP:PORT, e.g. \"127.0.0.1:8000\""),
                );
                None
            }
        }
    }

    fn service(&mut self, index: usize, raw: RawService) -> Option<ServiceSpec> {
        let at = KeyPath::service(index);
        let errors_before = self.errors.len();

        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.err(
                &at.key("name"),
                format!(
                    "invalid service name {:?}: use letters, digits, '-' and '_'",
                    raw.name
                ),
            );
        }

        let cwd = match &raw.cwd {
            None => self.base.clone(),
            Some(dir) => {
                let p = self.base.join(dir);
                if !p.is_dir() {
                    self.err(&at.key("cwd"), format!("not a directory: {}", p.display()));
                }
                p
            }
        };

        for key in raw.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                self.err(
                    &at.key("env"),
                    format!("invalid environment variable name {key:?}"),
                );
            }
        }

        let mut command = raw.command;
        match command.first() {
            None => self.err(
                &at.key("command"),
                "must name a program: command = [\"program\", \"arg\", ...]",
            ),
            Some(program) => match resolve_program(program, &cwd, raw.env.get("PATH")) {
                Ok(path) => command[0] = path,
                Err(message) => self.err(&at.key("command"), message),
            },
        }

        let instances = match raw.instances {
            None => 1,
            Some(RawInstances::Count(n)) if n >= 1 && n as usize <= MAX_INSTANCES => n as usize,
            Some(RawInstances::Count(n)) => {
                self.err(
                    &at.key("instances"),
                    format!("must be between 1 and {MAX_INSTANCES}, got {n}"),
                );
                1
            }
            Some(RawInstances::Keyword(k)) if k == "max" => {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            }
            Some(RawInstances::Keyword(k)) => {
                self.err(
                    &at.key("instances"),
                    format!("must be a number or \"max\", got {k:?}"),
                );
                1
            }
        };

        let listen = raw
            .listen
            .as_deref()
            .and_then(|text| self.address(&at.key("listen"), text));
        let balance = self.balance(&at.key("balance"), raw.balance.as_deref());
        let breaker = crate::gateway::breaker(self, &at.key("breaker"), raw.breaker.as_ref());

        let r = &raw.restart;
        let rp = at.key("restart");
        let d = RestartPolicy::default();
        let restart = RestartPolicy {
            initial_backoff: self.duration(
                &rp.key("initial_backoff"),
                r.initial_backoff.as_deref(),
                d.initial_backoff,
            ),
            max_backoff: self.duration(
                &rp.key("max_backoff"),
                r.max_backoff.as_deref(),
                d.max_backoff,
            ),
            max_restarts: r.max_restarts.unwrap_or(d.max_restarts),
            window: self.duration(&rp.key("window"), r.window.as_deref(), d.window),
            min_uptime: self.duration(&rp.key("min_uptime"), r.min_uptime.as_deref(), d.min_uptime),
        };
        if restart.initial_backoff > restart.max_backoff {
            self.err(
                &rp.key("initial_backoff"),
                "must not be longer than restart.max_backoff",
            );
        }

        let kill_timeout = self.duration(
            &at.key("kill_timeout"),
            raw.kill_timeout.as_deref(),
            Duration::from_secs(5),
        );

        let own_port = match raw.port.as_deref() {
            None => false,
            Some("auto") if listen.is_some() || raw.listen.is_some() => {
                self.err(
                    &at.key("port"),
                    "a service either shares `listen` or gives each instance its own `port`, not both",
                );
                false
            }
            Some("auto") => true,
            Some(other) => {
                self.err(
                    &at.key("port"),
                    format!("unknown port setting {other:?}: use \"auto\""),
                );
                false
            }
        };

        let ready_at = at.key("ready");
        let mode = match raw.ready.mode.as_deref() {
            None | Some("listen") => ReadyMode::Listen,
            Some("notify") => ReadyMode::Notify,
            Some("http") if !own_port => {
                self.err(
                    &ready_at.key("mode"),
                    "\"http\" readiness needs port = \"auto\": on a shared socket a probe cannot choose its instance; use \"listen\" or \"notify\"",
                );
                ReadyMode::Listen
            }
            Some("http") => {
                let path = raw.ready.path.clone().unwrap_or_else(|| "/healthz".into());
                if !path.starts_with('/') {
                    self.err(
                        &ready_at.key("path"),
                        format!("must start with '/': {path:?}"),
                    );
                }
                ReadyMode::Http { path }
            }
            Some(other) => {
                self.err(
                    &ready_at.key("mode"),
                    format!(
                        "unknown readiness mode {other:?}: use \"listen\", \"notify\" or \"http\""
                    ),
                );
                ReadyMode::Listen
            }
        };
        if raw.ready.path.is_some() && !matches!(mode, ReadyMode::Http { .. }) {
            self.err(&ready_at.key("path"), "only used with mode = \"http\"");
        }
        let ready = Readiness {
            mode,
            timeout: self.duration(
                &ready_at.key("timeout"),
                raw.ready.timeout.as_deref(),
                Duration::from_secs(30),
            ),
        };

        if let Some(m) = raw.max_memory
            && m.as_u64() < 1024 * 1024
        {
            self.err(&at.key("max_memory"), "must be at least 1MB");
        }

        (self.errors.len() == errors_before).then(|| ServiceSpec {
            name: raw.name,
            index,
            command,
            instances,
            listen,
            own_port,
            balance,
            breaker,
            cwd,
            env: raw.env,
            restart,
            max_memory: raw.max_memory.map(|m| m.as_u64()),
            kill_timeout,
            ready,
        })
    }
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

/// Checks `raw` (read from `source`) and builds the [`Config`], or returns every problem.
pub fn validate(source: Arc<Source>, raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let base = source
        .path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let base = std::path::absolute(&base).unwrap_or(base);
    let mut c = Checker {
        source: &source,
        base,
        errors: Vec::new(),
    };

    let logs = LogSettings {
        max_size: raw.logs.max_size.map_or(10 * 1024 * 1024, |s| s.as_u64()),
        keep: raw.logs.keep.unwrap_or(5),
    };
    if logs.max_size < 4096 {
        c.err(
            &KeyPath::default().key("logs").key("max_size"),
            "must be at least 4KB",
        );
    }

    let mut names = HashSet::new();
    let mut addresses: BTreeMap<SocketAddr, String> = BTreeMap::new();
    let mut services = Vec::new();
    for (index, raw_service) in raw.service.into_iter().enumerate() {
        let name = raw_service.name.clone();
        if !names.insert(name.clone()) {
            c.err(
                &KeyPath::service(index).key("name"),
                format!("service {name:?} is defined twice"),
            );
        }
        if let Some(spec) = c.service(index, raw_service) {
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

    let gateway = crate::gateway::check(&mut c, raw.gateway, raw.route, raw.upstream, &services);
    let admin_at = KeyPath::default().key("admin").key("listen");
    let admin = raw
        .admin
        .listen
        .as_deref()
        .and_then(|text| c.address(&admin_at, text));
    let telemetry = crate::telemetry::check(&mut c, raw.telemetry);
    let (api, mut components) = crate::api::check(&mut c, raw.api, raw.component, &services);
    if api.is_some() {
        crate::api::add_default_store(&mut components);
        crate::api::add_default_pubsub(&mut components);
    }
    let subscriptions = crate::api::subscriptions(&mut c, raw.subscription, &services);
    if api.is_none() && !subscriptions.is_empty() {
        c.err(
            &KeyPath::default().key("subscription"),
            "subscriptions are served by the sidecar API: add an [api] table",
        );
    }
    let resiliency = crate::resiliency::check(&mut c, raw.resiliency);
    let mesh = raw
        .mesh
        .map(|m| crate::mesh::check(&mut c, m, gateway.regions.local.as_deref()));
    if mesh.is_some() && api.is_none() {
        c.err(
            &KeyPath::default().key("mesh"),
            "invocation is served by the sidecar API: add an [api] table",
        );
    }
    let data_dir = c.base.join(raw.data_dir.as_deref().unwrap_or(".herd"));
    if c.errors.is_empty() {
        Ok(Config {
            source,
            data_dir,
            logs,
            services,
            gateway,
            admin,
            telemetry,
            api,
            components,
            subscriptions,
            resiliency,
            mesh,
        })
    } else {
        Err(c.errors)
    }
}
