//! The command line: verbs follow PM2 where they overlap (`ls`, `logs`, `reload`, `restart`,
//! `stop`, `scale`, `describe`, `delete`, `flush`, `startup`). The verbs that are sent to a
//! running herd as they are typed are the control protocol's [`Request`]s; this file adds the ones herd runs itself (`up`, `check`,
//! `startup`, which work without a running herd) and the views over a request's answer
//! (`ls`, `monit`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::control::proto::Request;

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
    /// Print (or install) a systemd unit that runs `herd up` for this config at boot.
    ///
    /// herd runs as the user who runs this (or who ran sudo), in the config's directory;
    /// `systemctl reload` is `herd reload all`. `--install` writes the unit to
    /// /etc/systemd/system (as root); then `systemctl daemon-reload && systemctl enable --now
    /// <name>`.
    Startup {
        /// Write the unit file instead of printing it.
        #[arg(long)]
        install: bool,
        /// The unit's name (`<name>.service`).
        #[arg(long, default_value = "herd")]
        name: String,
        /// Where `--install` writes the unit.
        #[arg(long, value_name = "DIR", default_value = crate::startup::SYSTEM_UNITS)]
        unit_dir: PathBuf,
    },
    /// The verbs a running herd carries out as they are typed: `logs`, `reload`, `restart`,
    /// `stop`, `start`, `scale`, `describe`, `delete`, `flush`, `down` (one definition with the
    /// control protocol).
    #[command(flatten)]
    Control(Request),
}
