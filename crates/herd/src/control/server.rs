//! The control server inside `herd up`.
//!
//! Each connection is one request. Operations that change services re-read the config file
//! first, so `herd reload` applies what is on disk now; a file with errors is refused and the
//! running services are left alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use herd_config::ServiceSpec;
use herd_supervisor::{Service, Supervisor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::proto::{Reply, Request};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// What request handlers need.
pub struct Context {
    /// The running services.
    pub supervisor: Arc<Supervisor>,
    /// The gateway, reloaded by `herd reload gateway` (and `all`).
    pub gateway: Arc<herd_gateway::Gateway>,
    /// The config file, re-read by reload, restart and start.
    pub config_path: PathBuf,
    /// Cancelled by `herd down`.
    pub shutdown: CancellationToken,
    /// The overview `herd monit` shows (the dashboard's data).
    pub sampler: Arc<herd_telemetry::Sampler>,
}

/// Binds the control socket at `path` with mode 0600, replacing a stale one.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    // The data directory is created 0700, so no other user can reach the socket in the short
    // window before its own mode is set.
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until `stop` is cancelled; connections run on `tracker`.
pub async fn serve(
    listener: UnixListener,
    ctx: Arc<Context>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let ctx = ctx.clone();
                    let stop = stop.clone();
                    tracker.spawn(async move {
                        tokio::select! {
                            _ = handle(stream, ctx) => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
                Err(e) => tracing::warn!("control socket accept failed: {e}"),
            },
        }
    }
}

async fn send(out: &mut OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("replies serialize");
    line.push(b'\n');
    out.write_all(&line).await
}

async fn handle(stream: UnixStream, ctx: Arc<Context>) {
    let (read, mut out) = stream.into_split();
    let mut line = String::new();
    use tokio::io::AsyncReadExt;
    if BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let request = match serde_json::from_str::<Request>(&line) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("bad request: {e}");
            let _ = send(&mut out, &Reply::Error { message }).await;
            return;
        }
    };
    let _ = respond(request, &ctx, &mut out).await;
}

async fn respond(request: Request, ctx: &Context, out: &mut OwnedWriteHalf) -> std::io::Result<()> {
    let sup = &ctx.supervisor;
    match request {
        Request::Status => {
            let reply = Reply::Status {
                pid: std::process::id(),
                services: sup.status(),
            };
            send(out, &reply).await
        }
        Request::Logs {
            service,
            lines,
            follow,
        } => logs(sup, service, lines, follow, out).await,
        Request::Overview => {
            let overview = Box::new((*ctx.sampler.latest()).clone());
            send(out, &Reply::Overview { overview }).await
        }
        Request::Down => {
            send(out, &Reply::Done).await?;
            ctx.shutdown.cancel();
            Ok(())
        }
        Request::Reload { service } => operate(ctx, &service, Op::Reload, out).await,
        Request::Restart { service } => operate(ctx, &service, Op::Restart, out).await,
        Request::Stop { service } => operate(ctx, &service, Op::Stop, out).await,
        Request::Start { service } => operate(ctx, &service, Op::Start, out).await,
    }
}

async fn logs(
    sup: &Supervisor,
    service: Option<String>,
    lines: usize,
    follow: bool,
    out: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    if let Some(name) = &service
        && sup.service(name).is_none()
    {
        let message = format!("no service named {name:?}");
        return send(out, &Reply::Error { message }).await;
    }
    let hub = sup.logs();
    // Subscribe before reading the ring so no line falls between the two.
    let mut live = hub.subscribe();
    for line in hub.recent(service.as_deref(), lines) {
        send(out, &Reply::Log { line }).await?;
    }
    if !follow {
        return send(out, &Reply::Done).await;
    }
    loop {
        match live.recv().await {
            Ok(line) if service.as_deref().is_none_or(|s| s == line.service) => {
                send(out, &Reply::Log { line }).await?;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let text = format!("{n} lines skipped: the reader fell behind");
                send(out, &Reply::Progress { text }).await?;
            }
            Err(_) => return send(out, &Reply::Done).await,
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Reload,
    Restart,
    Stop,
    Start,
}

/// The services a name selects: one, or every service for `all`.
fn select(sup: &Supervisor, name: &str) -> Result<Vec<Arc<Service>>, String> {
    if name == "all" {
        return Ok(sup.services().to_vec());
    }
    sup.service(name)
        .map(|s| vec![s])
        .ok_or_else(|| format!("no service named {name:?}"))
}

/// The service's spec in the config file as it is on disk now.
fn fresh_spec(ctx: &Context, name: &str) -> Result<ServiceSpec, String> {
    let config = herd_config::load(&ctx.config_path)
        .map_err(|e| format!("{e}\nthe config has errors; nothing was changed"))?;
    config.service(name).cloned().ok_or_else(|| {
        format!(
            "service {name:?} is no longer in {}",
            ctx.config_path.display()
        )
    })
}

/// `gateway` names the gateway unless a service has that name; `all` includes it.
fn names_gateway(ctx: &Context, name: &str) -> bool {
    name == "all" || (name == "gateway" && ctx.supervisor.service(name).is_none())
}

/// Reloads the gateway's routes and upstreams from the config file as it is now.
fn reload_gateway(ctx: &Context) -> Result<String, String> {
    let config = herd_config::load(&ctx.config_path)
        .map_err(|e| format!("{e}\nthe config has errors; nothing was changed"))?;
    ctx.gateway.reload(&config)?;
    Ok(format!(
        "gateway reloaded: {} route(s), {} upstream(s)",
        config.gateway.routes.len(),
        config.gateway.upstreams.len()
    ))
}

async fn operate(
    ctx: &Context,
    name: &str,
    op: Op,
    out: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    if matches!(op, Op::Reload) && name == "gateway" && names_gateway(ctx, name) {
        return match reload_gateway(ctx) {
            Ok(text) => {
                send(out, &Reply::Progress { text }).await?;
                send(out, &Reply::Done).await
            }
            Err(message) => send(out, &Reply::Error { message }).await,
        };
    }
    let services = match select(&ctx.supervisor, name) {
        Ok(s) => s,
        Err(message) => return send(out, &Reply::Error { message }).await,
    };
    for service in services {
        let (tx, mut rx) = mpsc::channel::<String>(16);
        let work = run_op(ctx, &service, op, tx);
        tokio::pin!(work);
        // Forward progress while the operation runs, then whatever is left.
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                Some(text) = rx.recv() => send(out, &Reply::Progress { text }).await?,
            }
        };
        while let Ok(text) = rx.try_recv() {
            send(out, &Reply::Progress { text }).await?;
        }
        if let Err(message) = result {
            return send(out, &Reply::Error { message }).await;
        }
    }
    if matches!(op, Op::Reload) && names_gateway(ctx, name) {
        match reload_gateway(ctx) {
            Ok(text) => send(out, &Reply::Progress { text }).await?,
            Err(message) => return send(out, &Reply::Error { message }).await,
        }
    }
    send(out, &Reply::Done).await
}

async fn run_op(
    ctx: &Context,
    service: &Service,
    op: Op,
    progress: mpsc::Sender<String>,
) -> Result<(), String> {
    let name = service.name();
    match op {
        Op::Reload => {
            let spec = fresh_spec(ctx, name)?;
            service.reload(spec, &progress).await?;
            let _ = progress.send(format!("{name} reloaded")).await;
        }
        Op::Restart => {
            let spec = fresh_spec(ctx, name)?;
            service.restart(spec).await?;
            let _ = progress.send(format!("{name} restarted")).await;
        }
        Op::Stop => {
            service.stop().await;
            let _ = progress.send(format!("{name} stopped")).await;
        }
        Op::Start => {
            service.start_all().await;
            let _ = progress.send(format!("{name} started")).await;
        }
    }
    Ok(())
}
