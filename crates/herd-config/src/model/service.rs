//! A validated `[[service]]`: command, instances, listen address, restart policy and readiness,
//! and the rotation of the services' log files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herd_resilience::BreakerConfig;

use super::gateway::Balance;

/// Rotation of per-service log files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Rotate when the live file reaches this many bytes.
    pub max_size: u64,
    /// Rotated files kept beside the live one.
    pub keep: u32,
}

/// One service: a command run as a cluster of instances.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Unique name.
    pub name: String,
    /// Index of this service's `[[service]]` table in the file, for error locations.
    pub index: usize,
    /// The program, resolved to a path when it was found in `PATH`, and its arguments.
    pub command: Vec<String>,
    /// Number of instances (slots); `"max"` has already been turned into the core count.
    pub instances: usize,
    /// The address the service is reached at, if it has one.
    pub listen: Option<SocketAddr>,
    /// `listen` is handed to the instances as a shared socket (fd 3) rather than proxied by herd
    /// to a private socket per instance.
    pub passthrough: bool,
    /// Each instance binds a port of its own, allocated by herd (`port = "auto"`).
    pub own_port: bool,
    /// How the gateway balances over the instances.
    pub balance: Balance,
    /// Circuit breaker per instance, for the gateway.
    pub breaker: BreakerConfig,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// Extra environment for the instances.
    pub env: BTreeMap<String, String>,
    /// Crash restart policy.
    pub restart: RestartPolicy,
    /// Restart an instance above this resident set size, in bytes.
    pub max_memory: Option<u64>,
    /// Time between SIGTERM and SIGKILL when stopping an instance.
    pub kill_timeout: Duration,
    /// How readiness is detected.
    pub ready: Readiness,
    /// How herd delivers subscriptions and invocations to the app.
    pub app_protocol: AppProtocol,
}

/// How herd talks to an app (`app_protocol`), as Dapr's `--app-protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppProtocol {
    /// Plain HTTP: POSTs for messages, the invoked method as a path.
    #[default]
    Http,
    /// Dapr's `AppCallback` gRPC service (h2c).
    Grpc,
}

/// Exponential backoff with jitter, and an upper bound on restarts per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// First delay after a crash.
    pub initial_backoff: Duration,
    /// Upper bound of the doubling delay.
    pub max_backoff: Duration,
    /// Restarts allowed within `window` before the instance is marked errored.
    pub max_restarts: u32,
    /// Sliding window for `max_restarts`.
    pub window: Duration,
    /// Uptime after which the backoff starts over.
    pub min_uptime: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_restarts: 10,
            window: Duration::from_secs(60),
            min_uptime: Duration::from_secs(1),
        }
    }
}

/// How herd learns that a new instance can take traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The detection method.
    pub mode: ReadyMode,
    /// Deadline for a starting instance.
    pub timeout: Duration,
}

/// Readiness detection methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyMode {
    /// The instance accepts on the shared socket (seen in `/proc`), or on its own port. Services
    /// with neither are ready as soon as they are spawned.
    Listen,
    /// `GET path` on the instance's own port (or private socket) answers 2xx.
    Http {
        /// The health path.
        path: String,
    },
    /// The instance writes `READY=1` to the pipe at `HERD_READY_FD`.
    Notify,
}
