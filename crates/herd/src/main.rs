//! The `herd` binary: parses the command line and hands each verb to the building blocks.
//! `herd up` runs the supervisor; every other verb (but `check`) is a client of the control
//! socket of a running herd.

#![forbid(unsafe_op_in_unsafe_fn)]

mod cli;
mod control;
mod exit;
mod monit;
mod render;
mod sidecar;
mod startup;
mod trim;
mod up;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use control::client;
use control::proto::{Reply, Request};
use herd_telemetry::logs::LogFormat;
use herd_telemetry::otlp::OtlpSettings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `herd up` reads `[telemetry]` before anything logs; a config with errors is reported
    // by `up` itself, so here it only falls back to the defaults.
    let telemetry = match &cli.command {
        Command::Up { detach: false, .. } => herd_config::load(&cli.config)
            .map(|c| c.telemetry)
            .unwrap_or_default(),
        _ => herd_config::TelemetrySpec::default(),
    };
    let configured = telemetry.log_format.map(|f| match f {
        herd_config::LogFormat::Json => LogFormat::Json,
        herd_config::LogFormat::Text => LogFormat::Text,
    });
    match LogFormat::choose(configured) {
        Ok(format) => herd_telemetry::logs::init(format),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Spans are exported by `herd up` only; the exporter's requests run on this runtime, so it
    // is flushed below, after `dispatch` returned and before the runtime is dropped.
    let exporting = match &cli.command {
        Command::Up { detach: false, .. } => {
            let settings = OtlpSettings {
                endpoint: telemetry.otlp_endpoint,
                service_name: telemetry.service_name,
            };
            match herd_telemetry::otlp::install(&settings, runtime.handle().clone()) {
                Ok(exporting) => exporting,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(exit::CONFIG);
                }
            }
        }
        _ => None,
    };
    let result = runtime.block_on(dispatch(cli));
    if let Some(exporting) = exporting {
        exporting.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_path();
    let data_dir = || herd_config::data_dir_of(config);
    match cli.command {
        Command::Up {
            detach: false,
            resources,
        } => up::run(config, &resources).await,
        Command::Up {
            detach: true,
            resources,
        } => up::detach(config, &resources).await,
        Command::Check { resources } => Ok(check(config, &resources)),
        Command::Startup {
            install,
            name,
            unit_dir,
        } => startup::run(config, &name, install, &unit_dir),
        Command::Ls { json } => ls(&data_dir(), json).await,
        Command::Monit { once } => monit::run(&data_dir(), once).await,
        Command::Control(Request::Down) => down(&data_dir()).await,
        Command::Control(request) => stream(&data_dir(), &request).await,
    }
}

fn check(config: &Path, resources: &[std::path::PathBuf]) -> ExitCode {
    match sidecar::load(config, resources) {
        Ok((c, _)) => {
            let n: usize = c.services.iter().map(|s| s.instances).sum();
            println!(
                "{}: ok ({} service(s), {n} instance(s), {} component(s))",
                config.display(),
                c.services.len(),
                c.components.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => exit::config_errors(&e),
    }
}

async fn ls(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut replies = client::request(data_dir, &Request::Status).await?;
    match replies.next().await? {
        Some(Reply::Status { services, .. }) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&services)?);
            } else {
                print!("{}", render::table(&services));
            }
            Ok(ExitCode::SUCCESS)
        }
        other => anyhow::bail!("unexpected reply: {other:?}"),
    }
}

/// Asks herd to stop and waits until it has: every instance stopped and the socket gone.
async fn down(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let code = stream(data_dir, &Request::Down).await?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    while client::is_running(data_dir).await {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!("herd stopped");
    Ok(ExitCode::SUCCESS)
}

/// Prints replies until `Done` (exit 0) or `Error` (exit 1). A closed stdout (`herd logs | head`)
/// ends quietly.
async fn stream(data_dir: &Path, req: &Request) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut replies = client::request(data_dir, req).await?;
    let mut stdout = std::io::stdout();
    while let Some(reply) = replies.next().await? {
        let printed = match reply {
            Reply::Log { line } => writeln!(stdout, "{}", line.render()),
            Reply::Progress { text } => writeln!(stdout, "{text}"),
            Reply::Done => return Ok(ExitCode::SUCCESS),
            Reply::Error { message } => {
                eprintln!("error: {message}");
                return Ok(ExitCode::from(exit::RUNTIME));
            }
            Reply::Status { .. } | Reply::Overview { .. } => Ok(()),
        };
        match printed.and_then(|()| stdout.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other?,
        }
    }
    anyhow::bail!("herd closed the connection before the operation finished")
}
