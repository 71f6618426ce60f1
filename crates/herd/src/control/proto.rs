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

#[cfg(test)]
mod tests {
    use super::*;

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
