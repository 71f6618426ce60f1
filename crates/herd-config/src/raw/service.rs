//! `[[service]]` and `[logs]` as serde reads them: the program, its instances, restart and
//! readiness settings, and the rotation of the services' log files. Checked in `service.rs`.

use std::collections::BTreeMap;

use bytesize::ByteSize;
use serde::Deserialize;

use super::RawBreaker;

/// One `[[service]]`: a program run as N instances behind one listening address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Unique name; used in the CLI and as the log prefix. Letters, digits, `-` and `_`.
    pub name: String,
    /// The program and its arguments, run directly (no shell), as an array:
    /// `command = ["node", "server.js"]`. The program is looked up in `PATH` unless it contains
    /// a `/`, in which case it is relative to `cwd`. A string is read so that the check can
    /// suggest the array form.
    pub command: RawCommand,
    /// How many instances to run: a number, or `"max"` for one per CPU core. Default: 1.
    pub instances: Option<RawInstances>,
    /// The one address the service is reached at, e.g. `"127.0.0.1:8000"`; port 0 picks a free
    /// port. herd accepts on it and forwards each HTTP request over kept-alive connections to a
    /// ready instance; every instance gets a private loopback listening socket of its own as fd 3
    /// (systemd socket activation), so apps written for a shared socket run unchanged. Reloads and
    /// crashes lose no request: a stopping instance leaves the rotation and finishes its requests
    /// before it gets SIGTERM, and a request it never answered is sent to another instance.
    pub listen: Option<String>,
    /// `true`: pass the `listen` socket itself to every instance as fd 3 (all accept from one
    /// kernel queue) instead of proxying. No proxy cost and any TCP protocol, but herd is out of
    /// the path: a request on a kept-alive connection that an instance closes while stopping or
    /// crashing fails at the client. Default: `false`.
    pub passthrough: Option<bool>,
    /// How the gateway balances over this service's instances (see `[[upstream]]`).
    pub balance: Option<String>,
    /// Circuit breaker per instance, for the gateway (see `[[upstream]]`).
    pub breaker: Option<RawBreaker>,
    /// `"auto"`: for apps that can only bind a port of their own. Each instance gets a free
    /// loopback port in `PORT` and binds it itself (no shared socket); `herd ls` shows it, and
    /// the gateway balances over these ports. Excludes `listen`.
    pub port: Option<String>,
    /// Working directory of the instances, relative to the config file. Default: its directory.
    pub cwd: Option<String>,
    /// Extra environment variables for the instances (herd's own environment is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// When to restart crashed instances.
    #[serde(default)]
    pub restart: RawRestart,
    /// Restart an instance whose resident memory passes this size, e.g. `"512MB"`.
    pub max_memory: Option<ByteSize>,
    /// How long a stopping instance gets between SIGTERM and SIGKILL. Default: `"5s"`.
    pub kill_timeout: Option<String>,
    /// How herd knows an instance is ready to serve.
    #[serde(default)]
    pub ready: RawReady,
    /// How herd reaches the app for subscriptions and service invocation: `"http"` (POSTs and
    /// plain HTTP calls) or `"grpc"` (Dapr's AppCallback service). Default: `"http"`.
    pub app_protocol: Option<String>,
}

/// `command = ["node", "server.js"]`, or the string `"node server.js"` that validation refuses
/// with the array form as a suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawCommand {
    /// The program and its arguments.
    Args(Vec<String>),
    /// A command line as one string (refused).
    Line(String),
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawCommand;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of strings such as [\"node\", \"server.js\"]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Line(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawCommand, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    args.push(arg);
                }
                Ok(RawCommand::Args(args))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// `instances = 2` or `instances = "max"`.
#[derive(Debug)]
pub enum RawInstances {
    /// A fixed count.
    Count(i64),
    /// A keyword; only `"max"` is accepted.
    Keyword(String),
}

impl<'de> Deserialize<'de> for RawInstances {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = RawInstances;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of instances, or \"max\" for one per CPU core")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawInstances, E> {
                Ok(RawInstances::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawInstances, E> {
                Ok(RawInstances::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawInstances, E> {
                Ok(RawInstances::Keyword(v.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// `[service.restart]`: exponential backoff with jitter, and a cap on restarts per window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    /// Delay before the first restart after a crash. Default: `"100ms"`.
    pub initial_backoff: Option<String>,
    /// Upper bound of the doubling delay. Default: `"10s"`.
    pub max_backoff: Option<String>,
    /// Restarts allowed within `window` before the instance is marked errored. Default: 10.
    pub max_restarts: Option<u32>,
    /// The sliding window `max_restarts` counts over. Default: `"60s"`.
    pub window: Option<String>,
    /// An instance that ran at least this long resets its backoff. Default: `"1s"`.
    pub min_uptime: Option<String>,
}

/// `[service.ready]`: readiness detection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    /// `"listen"` (default): ready once the instance accepts on the shared socket, seen from
    /// `/proc` (the socket registered in one of its epoll sets, or a thread blocked in accept).
    /// For `port = "auto"` services, `"listen"` means the instance's port accepts connections.
    /// `"notify"`: ready once the instance writes `READY=1` to the fd named by `HERD_READY_FD`.
    /// `"http"`: ready once `GET <path>` on the instance's own port answers 2xx; needs
    /// `port = "auto"`, since on a shared socket a probe cannot choose its instance.
    pub mode: Option<String>,
    /// The health path probed in `"http"` mode. Default: `"/healthz"`.
    pub path: Option<String>,
    /// How long a starting instance may take to become ready. Default: `"30s"`.
    pub timeout: Option<String>,
}

/// `[logs]`: rotation of the per-service log files under `<data_dir>/logs/`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    /// Size at which a log file is rotated, e.g. `"10MB"`. Default: 10 MB.
    pub max_size: Option<ByteSize>,
    /// How many rotated files to keep beside the live one. Default: 5.
    pub keep: Option<u32>,
}
