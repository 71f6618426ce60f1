//! `herd up -d`: herd re-executed in its own session, with output to `<data_dir>/herd.log`;
//! the command returns once the control socket answers and the instances settled.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use herd_supervisor::InstanceState;

use super::DETACHED;
use crate::control::client;
use crate::{exit, render, sidecar};

/// `herd up -d`: starts a background herd and returns once every instance is ready (or one is
/// errored, or 60 s passed), showing the `herd ls` table.
pub async fn detach(config_path: &Path, resources: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let config = match sidecar::load(config_path, resources) {
        Ok((c, _)) => c,
        Err(e) => return Ok(exit::config_errors(&e)),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)?;
    let log_path = config.data_dir.join("herd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let start_offset = log.metadata()?.len();
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--config")
        .arg(std::path::absolute(config_path)?)
        .arg("up")
        .args(resources.iter().flat_map(|r| {
            [
                std::ffi::OsString::from("--resources-path"),
                std::path::absolute(r).unwrap_or_else(|_| r.clone()).into(),
            ]
        }))
        .env(DETACHED, "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the child from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(services) = client::status(&config.data_dir).await {
            let all = || services.iter().flat_map(|s| &s.instances);
            let settled = all().all(|i| i.state == InstanceState::Ready)
                || all().any(|i| i.state == InstanceState::Errored);
            if settled || tokio::time::Instant::now() > deadline {
                print!("{}", render::table(&services));
                println!(
                    "herd started in the background (pid {pid}); log: {}",
                    log_path.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read(&log_path).unwrap_or_default();
            let tail = String::from_utf8_lossy(&text[(start_offset as usize).min(text.len())..]);
            eprint!("{tail}");
            eprintln!("error: herd exited during start-up ({status})");
            return Ok(ExitCode::from(
                status
                    .code()
                    .and_then(|c| u8::try_from(c).ok())
                    .unwrap_or(exit::RUNTIME),
            ));
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!(
                "error: herd did not answer within 60s; see {}",
                log_path.display()
            );
            return Ok(ExitCode::from(exit::RUNTIME));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
