//! The control protocol: one JSON request line from the CLI, then JSON reply lines from herd
//! until the operation ends. A stream of lines (rather than one reply) lets `herd reload` show
//! progress and `herd logs -f` follow. The requests double as the CLI's remote verbs (see
//! [`Request`]).

use clap::Subcommand;
use herd_supervisor::{LogLine, ServiceStatus};
use serde::{Deserialize, Serialize};

/// What the CLI asks.
///
/// This is also the list of the CLI's verbs that are sent as they are typed: clap parses
/// `herd logs`, `reload`, `restart`, `stop`, `start`, `scale`, `describe`, `delete`, `flush`
/// and `down` straight into this enum
/// (flattened into [`crate::cli::Command`]), so a new verb is added here once, and its doc
/// comments are its `--help` text. `Status` and `Overview` are not subcommands of their own:
/// `herd ls` and `herd monit` ask them, with options that only change how the answer is shown.
/// The JSON field order is the declaration order (a test pins the lines), so clap's display
/// order is set where the two differ.
#[derive(Debug, Clone, Serialize, Deserialize, Subcommand)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Services and instances (`herd ls`).
    #[command(skip)]
    Status,
    /// Show instance output, merged and prefixed.
    Logs {
        /// Only this service.
        service: Option<String>,
        /// How many recent lines to print first.
        #[arg(short = 'n', long, default_value_t = 100, display_order = 2)]
        lines: usize,
        /// Keep printing new lines.
        #[arg(short, long, display_order = 1)]
        follow: bool,
    },
    /// Zero-downtime rolling reload with the config as it is now on disk.
    Reload {
        /// A service name, or `all`.
        service: String,
    },
    /// Stop all instances, then start them again (clears an errored state).
    Restart {
        /// A service name, or `all`.
        service: String,
    },
    /// Stop a service's instances gracefully; it stays stopped until `herd start`.
    Stop {
        /// A service name, or `all`.
        service: String,
    },
    /// Start a stopped or errored service.
    Start {
        /// A service name, or `all`.
        service: String,
    },
    /// Set how many instances of a service run, until its next reload.
    ///
    /// Added instances start, surplus ones stop gracefully (highest slot first). The next
    /// `herd reload` of the service applies the config's `instances` again; `herd restart`
    /// keeps the count.
    Scale {
        /// The service name.
        service: String,
        /// The number of instances (1 or more; `herd stop` stops them all).
        instances: usize,
    },
    /// Show a service's settings and instances.
    ///
    /// Its command, directory, address or ports, readiness, restart and memory settings, the
    /// names of its env variables (not their values), its log file, and each instance's pid,
    /// state, uptime, restarts and last exit.
    Describe {
        /// The service name.
        service: String,
    },
    /// Stop a service and remove it from the running herd until it is reloaded.
    ///
    /// `herd ls`, `start`, `stop`, `scale`, `describe` and `logs` no longer know it. It comes
    /// back, from the config on disk, with `herd reload NAME` (or `all`), `herd restart NAME`
    /// or the next `herd up`; its listen address stays reserved for it meanwhile. The config
    /// file is not changed.
    Delete {
        /// A service name, or `all`.
        service: String,
    },
    /// Empty the log files of a service, or of every service.
    ///
    /// The live file is truncated, rotated files are removed, and the recent lines `herd logs`
    /// shows are dropped.
    Flush {
        /// Only this service.
        service: Option<String>,
    },
    /// Stop every service and end herd.
    Down,
    /// The last overview of services, routes, pub/sub, stores and recent requests (`herd
    /// monit`), as the dashboard shows it.
    #[command(skip)]
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

/// Reads `data` as a request line (herd's side) and as a reply line (the CLI's side): whatever
/// parses is written back and parses to the same line. The fuzz target `control_proto` and the
/// corpus replay below run this.
#[cfg_attr(not(test), allow(dead_code))]
pub fn check_wire(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let line = serde_json::to_string(&request).expect("requests serialize");
        let again: Request = serde_json::from_str(&line).expect("a written request parses");
        assert_eq!(serde_json::to_string(&again).expect("serialize"), line);
    }
    if let Ok(reply) = serde_json::from_slice::<Reply>(data) {
        let line = serde_json::to_string(&reply).expect("replies serialize");
        let again: Reply = serde_json::from_str(&line).expect("a written reply parses");
        assert_eq!(serde_json::to_string(&again).expect("serialize"), line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input of the fuzz target's corpus, replayed on stable.
    #[test]
    fn the_fuzz_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/control_proto");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        for file in files {
            check_wire(&std::fs::read(&file).unwrap());
        }
    }

    /// The wire format, byte for byte: a herd and a CLI of different builds must still agree.
    #[test]
    fn requests_keep_their_wire_format() {
        let web = || "web".to_string();
        let cases = [
            (Request::Status, r#"{"op":"status"}"#),
            (
                Request::Logs {
                    service: None,
                    lines: 100,
                    follow: false,
                },
                r#"{"op":"logs","service":null,"lines":100,"follow":false}"#,
            ),
            (
                Request::Logs {
                    service: Some(web()),
                    lines: 5,
                    follow: true,
                },
                r#"{"op":"logs","service":"web","lines":5,"follow":true}"#,
            ),
            (
                Request::Reload { service: web() },
                r#"{"op":"reload","service":"web"}"#,
            ),
            (
                Request::Restart { service: web() },
                r#"{"op":"restart","service":"web"}"#,
            ),
            (
                Request::Stop { service: web() },
                r#"{"op":"stop","service":"web"}"#,
            ),
            (
                Request::Start { service: web() },
                r#"{"op":"start","service":"web"}"#,
            ),
            (
                Request::Scale {
                    service: web(),
                    instances: 3,
                },
                r#"{"op":"scale","service":"web","instances":3}"#,
            ),
            (
                Request::Describe { service: web() },
                r#"{"op":"describe","service":"web"}"#,
            ),
            (
                Request::Delete { service: web() },
                r#"{"op":"delete","service":"web"}"#,
            ),
            (
                Request::Flush { service: None },
                r#"{"op":"flush","service":null}"#,
            ),
            (Request::Down, r#"{"op":"down"}"#),
            (Request::Overview, r#"{"op":"overview"}"#),
        ];
        for (request, wire) in cases {
            assert_eq!(serde_json::to_string(&request).unwrap(), wire);
            let back: Request = serde_json::from_str(wire).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), wire);
        }
    }

    #[test]
    fn replies_keep_their_wire_format() {
        let cases = [
            (Reply::Done, r#"{"kind":"done"}"#),
            (
                Reply::Progress { text: "ok".into() },
                r#"{"kind":"progress","text":"ok"}"#,
            ),
            (
                Reply::Error {
                    message: "no".into(),
                },
                r#"{"kind":"error","message":"no"}"#,
            ),
        ];
        for (reply, wire) in cases {
            assert_eq!(serde_json::to_string(&reply).unwrap(), wire);
        }
    }
}
