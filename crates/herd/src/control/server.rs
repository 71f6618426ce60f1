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
/// Most instances `herd scale` sets (the config's limit).
const MAX_INSTANCES: usize = 1024;

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
        Request::Delete { service } => operate(ctx, &service, Op::Delete, out).await,
        Request::Scale { service, instances } => {
            if let Err(message) = scalable(&service, instances) {
                return send(out, &Reply::Error { message }).await;
            }
            operate(ctx, &service, Op::Scale(instances), out).await
        }
        Request::Describe { service } => match select(sup, &service, false) {
            Ok(found) if service != "all" => {
                for text in super::describe::lines(&found[0], sup.logs()) {
                    send(out, &Reply::Progress { text }).await?;
                }
                send(out, &Reply::Done).await
            }
            Ok(_) => {
                let message = "describe one service at a time".to_string();
                send(out, &Reply::Error { message }).await
            }
            Err(message) => send(out, &Reply::Error { message }).await,
        },
        Request::Flush { service } => flush(sup, service.as_deref(), out).await,
    }
}

/// Whether `herd scale NAME N` can be carried out.
fn scalable(name: &str, instances: usize) -> Result<(), String> {
    if name == "all" {
        return Err("scale one service at a time".into());
    }
    if instances == 0 {
        return Err(format!(
            "a service runs at least 1 instance; `herd stop {name}` stops them all"
        ));
    }
    if instances > MAX_INSTANCES {
        return Err(format!(
            "at most {MAX_INSTANCES} instances, as in the config"
        ));
    }
    Ok(())
}

/// `herd flush [NAME]`.
async fn flush(
    sup: &Supervisor,
    service: Option<&str>,
    out: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    if let Some(name) = service
        && sup.service(name).is_none()
    {
        let message = format!("no service named {name:?}");
        return send(out, &Reply::Error { message }).await;
    }
    match sup.logs().flush(service) {
        Ok(files) => {
            let text = format!(
                "logs of {} flushed ({} file(s) emptied or removed)",
                service.unwrap_or("every service"),
                files.len()
            );
            send(out, &Reply::Progress { text }).await?;
            send(out, &Reply::Done).await
        }
        Err(e) => {
            let message = format!("flushing the logs failed: {e}");
            send(out, &Reply::Error { message }).await
        }
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
        && let Err(message) = select(sup, name, false)
    {
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
    Delete,
    Scale(usize),
}

impl Op {
    /// Whether the operation brings a deleted service back (it re-reads the config).
    fn revives(self) -> bool {
        matches!(self, Op::Reload | Op::Restart)
    }
}

/// The services a name selects: one, or every service for `all`. Deleted services are only
/// selected by operations that bring them back (`revive`).
fn select(sup: &Supervisor, name: &str, revive: bool) -> Result<Vec<Arc<Service>>, String> {
    if name == "all" {
        return Ok(sup
            .services()
            .iter()
            .filter(|s| revive || !sup.is_deleted(s.name()))
            .cloned()
            .collect());
    }
    match sup.service(name) {
        Some(s) if revive || !sup.is_deleted(name) => Ok(vec![s]),
        Some(_) => Err(format!(
            "no service named {name:?}: it was deleted; `herd reload {name}` starts it again from the config"
        )),
        None => Err(format!("no service named {name:?}")),
    }
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
    let services = match select(&ctx.supervisor, name, op.revives()) {
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
    let sup = &ctx.supervisor;
    match op {
        Op::Reload | Op::Restart if sup.is_deleted(name) => {
            // Its instances are stopped: start them again with the config as it is now.
            let spec = fresh_spec(ctx, name)?;
            let instances = spec.instances;
            service.restart(spec).await?;
            service.scale(instances, &progress).await;
            sup.undelete(name);
            let _ = progress
                .send(format!("{name} started again from the config"))
                .await;
        }
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
        Op::Delete => {
            service.stop().await;
            sup.delete(name);
            let _ = progress
                .send(format!(
                    "{name} stopped and deleted; `herd reload {name}` or the next `herd up` starts it again"
                ))
                .await;
        }
        Op::Scale(instances) => {
            service.scale(instances, &progress).await;
            let _ = progress
                .send(format!(
                    "{name} scaled to {instances} instance(s) until its next reload"
                ))
                .await;
        }
    }
    Ok(())
}
