//! The control protocol: one JSON request line from the CLI, then JSON reply lines from herd
//! until the operation ends. A stream of lines (rather than one reply) lets `herd reload` show
//! progress and `herd logs -f` follow.

use herd_supervisor::{LogLine, ServiceStatus};
use serde::{Deserialize, Serialize};

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Services and instances.
    Status,
    /// Recent output, optionally followed.
    Logs {
        /// One service only.
        service: Option<String>,
        /// Recent lines to send first.
        lines: usize,
        /// Keep sending new lines.
        follow: bool,
    },
    /// Rolling reload.
    Reload {
        /// Name or `all`.
        service: String,
    },
    /// Stop then start.
    Restart {
        /// Name or `all`.
        service: String,
    },
    /// Stop gracefully.
    Stop {
        /// Name or `all`.
        service: String,
    },
    /// Start stopped or errored instances.
    Start {
        /// Name or `all`.
        service: String,
    },
    /// Stop everything and exit.
    Down,
    /// The last overview of services, routes, pub/sub, stores and recent requests (`herd
    /// monit`), as the dashboard shows it.
    Overview,
}

/// What herd answers; the last line of a reply is `Done` or `Error`, except for `Status` and
/// `Overview`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Reply {
    /// The answer to `Status`.
    Status {
        /// herd's pid.
        pid: u32,
        /// Every service.
        services: Vec<ServiceStatus>,
    },
    /// The answer to `Overview`.
    Overview {
        /// What the sampler saw last.
        overview: Box<herd_telemetry::Overview>,
    },
    /// One line of output.
    Log {
        /// The line.
        line: LogLine,
    },
    /// A step of a longer operation.
    Progress {
        /// What happened.
        text: String,
    },
    /// The operation finished.
    Done,
    /// The operation failed.
    Error {
        /// Why.
        message: String,
    },
}
