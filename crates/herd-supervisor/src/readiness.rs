//! Readiness detection: accepting on the shared socket, or an explicit `READY=1`.
//!
//! `listen` mode polls `/proc` (see `procfs.rs`) with a short interval that widens while the
//! instance boots; `notify` mode reads a pipe whose write end the instance holds at
//! `HERD_READY_FD`, the same word systemd's `sd_notify` uses.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep, timeout_at};

use crate::procfs;
use crate::spawn::high_fd;

/// A readiness pipe: herd's read end and the write end (above fd 4) for the instance.
pub fn pipe() -> std::io::Result<(pipe::Receiver, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let write = high_fd(&write)?;
    // SAFETY: F_SETFL on a descriptor we own.
    unsafe {
        libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
    }
    Ok((pipe::Receiver::from_owned_fd(read)?, write))
}

/// Waits until `pid` accepts on the socket with `inode`, or `limit` passes.
pub async fn accepting(pid: u32, inode: u64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut interval = Duration::from_millis(2);
    loop {
        if procfs::is_accepting(pid, inode) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not accepting on the shared socket within {}",
                humantime::format_duration(limit)
            ));
        }
        sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(25));
    }
}

/// Waits for a `READY=1` line on `rx`, or `limit`.
pub async fn notified(rx: pipe::Receiver, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut lines = BufReader::new(rx).lines();
    loop {
        match timeout_at(deadline, lines.next_line()).await {
            Err(_) => {
                return Err(format!(
                    "no READY=1 within {}",
                    humantime::format_duration(limit)
                ));
            }
            Ok(Ok(Some(line))) if line.trim() == "READY=1" => return Ok(()),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => {
                return Err("closed the readiness pipe without READY=1".into());
            }
        }
    }
}
