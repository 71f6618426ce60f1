//! The command line: verbs follow PM2 where they overlap (`ls`, `logs`, `reload`, `restart`,
//! `stop`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Run services as resilient clusters.
#[derive(Debug, Parser)]
#[command(name = "herd", version, about)]
pub struct Cli {
    /// The config file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "herd.toml",
        env = "HERD_CONFIG"
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start every service of the config and supervise them (foreground unless -d).
    Up {
        /// Run in the background; returns once herd is up.
        #[arg(short, long)]
        detach: bool,
        /// A folder of Dapr resource files whose components herd loads (repeatable), as with
        /// `dapr run --resources-path`.
        #[arg(long = "resources-path", value_name = "DIR")]
        resources: Vec<PathBuf>,
    },
    /// Validate the config and exit: 0 when valid, 2 with every problem listed otherwise.
    Check {
        /// A folder of Dapr resource files to validate with the config (repeatable).
        #[arg(long = "resources-path", value_name = "DIR")]
        resources: Vec<PathBuf>,
    },
    /// List services and instances: pid, state, uptime, restarts, cpu, memory.
    #[command(alias = "list", alias = "status")]
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Live overview: services, routes, pub/sub, stores and recent requests, refreshed every
    /// second until q or Ctrl-C (the dashboard of the admin listener, in the terminal).
    Monit {
        /// Print one snapshot and exit (also what happens when stdout is not a terminal).
        #[arg(long)]
        once: bool,
    },
    /// Show instance output, merged and prefixed.
    Logs {
        /// Only this service.
        service: Option<String>,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many recent lines to print first.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
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
    /// Stop every service and end herd.
    Down,
}
