//! The CLI's side of the control socket.

use std::path::Path;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use herd_supervisor::ServiceStatus;

use super::proto::{Reply, Request};

/// An open request: read its replies with [`Replies::next`].
pub struct Replies {
    lines: Lines<BufReader<OwnedReadHalf>>,
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Replies {
    /// The next reply, or `None` when herd closed the connection.
    pub async fn next(&mut self) -> anyhow::Result<Option<Reply>> {
        match self.lines.next_line().await? {
            None => Ok(None),
            Some(line) => Ok(Some(
                serde_json::from_str(&line).with_context(|| format!("bad reply: {line}"))?,
            )),
        }
    }
}

/// Sends `request` to the herd whose data directory is `data_dir`.
pub async fn request(data_dir: &Path, request: &Request) -> anyhow::Result<Replies> {
    let path = super::socket_path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e) => bail!(
            "herd is not running here (no answer on {}: {e}); start it with `herd up`",
            path.display()
        ),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    Ok(Replies {
        lines: BufReader::new(read).lines(),
        _write: write,
    })
}

/// The services of the herd on `data_dir`, or `None` when none answers.
pub async fn status(data_dir: &Path) -> Option<Vec<ServiceStatus>> {
    match request(data_dir, &Request::Status).await.ok()?.next().await {
        Ok(Some(Reply::Status { services, .. })) => Some(services),
        _ => None,
    }
}

/// The last overview of the herd on `data_dir` (what `herd monit` shows).
pub async fn overview(data_dir: &Path) -> anyhow::Result<herd_telemetry::Overview> {
    match request(data_dir, &Request::Overview).await?.next().await? {
        Some(Reply::Overview { overview }) => Ok(*overview),
        Some(Reply::Error { message }) => bail!("{message}"),
        other => bail!("unexpected reply: {other:?}"),
    }
}

/// Whether a herd answers on `data_dir`'s control socket.
pub async fn is_running(data_dir: &Path) -> bool {
    status(data_dir).await.is_some()
}
