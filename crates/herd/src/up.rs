//! `herd up`: load, bind, start, serve the control socket, and stop cleanly on a signal.
//!
//! Start-up order matters: the config is validated and every listen address bound before any
//! instance starts, so a bad file or a taken port fails fast and leaves nothing behind.
//! `-d` re-executes herd in its own session with output to `<data_dir>/herd.log` and returns
//! once the control socket answers.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use herd_config::ConfigErrors;
use herd_supervisor::{LogHub, Supervisor};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{self, client, server};
use crate::{exit, render, sidecar};
use herd_supervisor::InstanceState;

/// Set in the environment of the background herd started by `up -d`.
const DETACHED: &str = "HERD_DETACHED";

/// Runs herd in the foreground until SIGTERM, SIGINT or `herd down`.
pub async fn run(config_path: &Path, resources: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let (config, components) = match sidecar::load(config_path, resources) {
        Ok(c) => c,
        Err(e) => return Ok(exit::config_errors(&e)),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    if client::is_running(&config.data_dir).await {
        eprintln!(
            "error: herd is already running with data directory {}",
            config.data_dir.display()
        );
        return Ok(ExitCode::from(exit::RUNTIME));
    }
    let (sockets, gateway_sockets, admin, api) = match (
        herd_supervisor::bind_all(&config),
        herd_gateway::bind(&config),
        bind_admin(&config),
        sidecar::bind(&config),
    ) {
        (Ok(s), Ok(g), Ok(a), Ok(api)) => (s, g, a, api),
        (s, g, a, api) => {
            let errors = s
                .err()
                .into_iter()
                .chain(g.err())
                .chain(a.err())
                .chain(api.err())
                .flatten()
                .collect();
            return Ok(exit::config_errors(&ConfigErrors(errors)));
        }
    };
    let control_path = control::socket_path(&config.data_dir);
    let listener = server::bind(&control_path)
        .with_context(|| format!("cannot bind control socket {}", control_path.display()))?;
    let pid_path = config.data_dir.join("herd.pid");
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))?;

    let metrics = herd_telemetry::install();
    let echo = std::env::var_os(DETACHED).is_none();
    let (logs, log_thread) =
        LogHub::start(config.data_dir.join("logs"), config.logs.clone(), echo)?;
    // The API serves before any instance starts, so apps can use it from their first line; it
    // stops after the instances, which may still use it while they drain.
    let api_stop = CancellationToken::new();
    let api_tracker = TaskTracker::new();
    let token = sidecar::token();
    let env: Vec<(String, Vec<(String, String)>)> = config
        .services
        .iter()
        .map(|s| {
            let vars = api
                .as_ref()
                .map(|a| a.env(&s.name, token.as_deref()))
                .unwrap_or_default();
            (s.name.clone(), vars)
        })
        .collect();
    let (components, invoker) = match api {
        Some(api) => {
            tracing::info!("sidecar API on {}", api.addr);
            let (c, i, p) = api.serve(&config, components, token, &api_stop, &api_tracker)?;
            (Some((c, p)), Some(i))
        }
        None => (None, None),
    };
    let extra_env = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let supervisor = Arc::new(Supervisor::start(&config, sockets, logs, &extra_env));
    if let Some((components, policies)) = components {
        let apps: herd_api::delivery::Apps = {
            let supervisor = supervisor.clone();
            Arc::new(move |name: &str| supervisor.service(name).map(|s| s.endpoints()))
        };
        let services = config.services.iter().map(|s| s.name.clone()).collect();
        herd_api::delivery::start(
            components,
            policies,
            config.subscriptions.clone(),
            services,
            apps,
            &api_stop,
            &api_tracker,
        );
    }
    for s in supervisor.status() {
        tracing::info!(
            "{}: {} instance(s){}",
            s.name,
            s.instances.len(),
            s.listen.map(|a| format!(" on {a}")).unwrap_or_default()
        );
    }

    let source: herd_upstream::ServiceSource = {
        let supervisor = supervisor.clone();
        Arc::new(move |name: &str| {
            let s = supervisor.service(name)?;
            let spec = s.spec();
            // A shared-socket service is one address: the kernel's queue in front of every
            // instance. One instance's crash says nothing about the others and a retry on the
            // same address reaches a live one, so a breaker there would turn one crash into an
            // outage of the whole service: such pools have none.
            let breaker = spec.own_port.then(|| spec.breaker.clone());
            Some((s.endpoints(), spec.balance, breaker))
        })
    };
    if let Some(invoker) = &invoker {
        invoker.attach(source.clone());
    }
    let gateway = Arc::new(herd_gateway::Gateway::start(
        &config,
        gateway_sockets,
        source,
    )?);

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(report_ready(supervisor.clone(), started, shutdown.clone()));
    let control_stop = CancellationToken::new();
    // The overview behind the dashboard and `herd monit`: a sample every second.
    let sampler = herd_telemetry::Sampler::new(metrics.clone(), services_view(&supervisor));
    tracker.spawn(sampler.clone().run(control_stop.clone()));
    let ctx = Arc::new(server::Context {
        supervisor: supervisor.clone(),
        gateway: gateway.clone(),
        config_path: config_path.to_path_buf(),
        shutdown: shutdown.clone(),
        sampler: sampler.clone(),
    });
    tracker.spawn(server::serve(
        listener,
        ctx,
        control_stop.clone(),
        tracker.clone(),
    ));
    tracker.spawn(herd_telemetry::upkeep(
        metrics.clone(),
        control_stop.clone(),
    ));
    if let Some(admin) = admin {
        let serve = herd_telemetry::serve_admin(
            admin,
            metrics,
            sampler.clone(),
            control_stop.clone(),
            tracker.clone(),
        );
        tracker.spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!("admin listener failed: {e}");
            }
        });
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break }
            _ = hup.recv() => tracing::info!("SIGHUP ignored; use `herd reload <service>`"),
            _ = shutdown.cancelled() => { tracing::info!("herd down: stopping"); break }
        }
    }

    // Stop taking requests first, let the open ones finish, then stop the instances.
    gateway.shutdown().await;
    supervisor.shutdown().await;
    api_stop.cancel();
    api_tracker.close();
    api_tracker.wait().await;
    control_stop.cancel();
    tracker.close();
    tracker.wait().await;
    // The gateway, the sampler and the invoker hold the supervisor (to look services up): all
    // go before the log thread, which ends when the last log hub handle is dropped.
    drop(invoker);
    drop(gateway);
    drop(sampler);
    drop(supervisor);
    let _ = std::fs::remove_file(&control_path);
    let _ = std::fs::remove_file(&pid_path);
    // The writer thread ends once the last hub clone is gone, after flushing.
    let _ = tokio::task::spawn_blocking(move || log_thread.join()).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The services as the overview shows them, read from the supervisor at every sample.
fn services_view(supervisor: &Arc<Supervisor>) -> herd_telemetry::sampler::Services {
    use herd_telemetry::overview::{InstanceView, ServiceView};
    let supervisor = supervisor.clone();
    Arc::new(move || {
        supervisor
            .status()
            .into_iter()
            .map(|s| ServiceView {
                ready: s
                    .instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Ready)
                    .count(),
                instances: s
                    .instances
                    .iter()
                    .map(|i| InstanceView {
                        id: i.id,
                        pid: i.pid,
                        port: i.port,
                        state: render::state_name(i.state).into(),
                        uptime_ms: i.uptime_ms,
                        restarts: i.restarts,
                        cpu_percent: i.cpu_percent,
                        memory_bytes: i.memory_bytes,
                    })
                    .collect(),
                name: s.name,
                listen: s.listen,
            })
            .collect()
    })
}

/// Binds `[admin] listen`, if set; an error names the file, line and key.
fn bind_admin(
    config: &herd_config::Config,
) -> Result<Option<std::net::TcpListener>, Vec<herd_config::ConfigError>> {
    let Some(addr) = config.admin else {
        return Ok(None);
    };
    std::net::TcpListener::bind(addr).map(Some).map_err(|e| {
        let at = herd_config::KeyPath::default().key("admin").key("listen");
        vec![config.source.error(&at, format!("cannot bind {addr}: {e}"))]
    })
}

/// Logs once when every instance is first ready, with the time since `herd up` began: the
/// start-up figure (P7) that `bench/` reads.
async fn report_ready(
    supervisor: Arc<Supervisor>,
    started: std::time::Instant,
    stop: CancellationToken,
) {
    use herd_supervisor::InstanceState;
    // Fine-grained at first (start-up takes milliseconds), coarser if instances take long.
    let mut delay = Duration::from_millis(1);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_millis(100));
        let status = supervisor.status();
        let instances = status.iter().flat_map(|s| &s.instances);
        let total = instances.clone().count();
        if instances.clone().all(|i| i.state == InstanceState::Ready) {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::info!("ready: {total} instance(s) in {ms:.1} ms");
            return;
        }
    }
}

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
