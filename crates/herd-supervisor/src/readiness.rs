//! Readiness detection: accepting on the shared socket or on the instance's own port, a healthy
//! HTTP answer, or an explicit `READY=1`; and the other way round, [`drained`]: nothing herd
//! forwarded to a stopping instance is still unanswered.
//!
//! On a shared socket, `listen` mode polls `/proc` (see `procfs.rs`); with a port of its own the
//! instance is probed directly, by TCP connect or by `GET <path>`. Polls start fast and widen
//! while the instance boots. `notify` mode reads a pipe whose write end the instance holds at
//! `HERD_READY_FD`, the same word systemd's `sd_notify` uses.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
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

/// Polls `check` until it holds or `limit` passes; the error names `what` was not seen.
async fn poll<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    let mut interval = Duration::from_millis(2);
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} within {}",
                humantime::format_duration(limit)
            ));
        }
        sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(25));
    }
}

/// Waits until `pid` accepts on the socket with `inode`, or `limit` passes.
pub async fn accepting(pid: u32, inode: u64, limit: Duration) -> Result<(), String> {
    poll(limit, "not accepting on the shared socket", || async move {
        procfs::is_accepting(pid, inode)
    })
    .await
}

/// Waits until no request herd sent to `port` on loopback awaits its response head, up to
/// `limit`. The instance has left its service's endpoints already, so the count only falls.
pub async fn drained(port: u16, limit: Duration) -> Result<(), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    poll(limit, "requests still unanswered", || async move {
        herd_upstream::in_flight(addr) == 0
    })
    .await
}

/// Waits until `127.0.0.1:port` accepts a TCP connection.
pub async fn connects(port: u16, limit: Duration) -> Result<(), String> {
    poll(
        limit,
        &format!("not accepting on port {port}"),
        || async move { TcpStream::connect(("127.0.0.1", port)).await.is_ok() },
    )
    .await
}

/// Waits until `GET path` on `127.0.0.1:port` answers 2xx.
pub async fn http_ok(port: u16, path: &str, limit: Duration) -> Result<(), String> {
    let what = format!("GET {path} on port {port} did not answer 2xx");
    poll(limit, &what, || async move {
        tokio::time::timeout(Duration::from_secs(1), probe(port, path))
            .await
            .is_ok_and(|ok| ok)
    })
    .await
}

/// One health request on a fresh connection.
async fn probe(port: u16, path: &str) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header("user-agent", "herd-health")
        .body(Empty::<Bytes>::new());
    let ok = match request {
        Ok(req) => sender
            .send_request(req)
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    };
    conn.abort();
    ok
}

/// A free loopback port for an instance to bind. The port is released before the instance
/// binds it, so another process could take it in between; the instance then fails to start and
/// is restarted with a new port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
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
