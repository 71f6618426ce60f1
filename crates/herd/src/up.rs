//! `herd up`: load, bind, start, serve the control socket, and stop cleanly on a signal.
//!
//! Start-up order matters: the config is validated and every listen address bound before any
//! instance starts, so a bad file or a taken port fails fast and leaves nothing behind. [`run`]
//! is the list of steps, each a function or method here: validate (with `sidecar.rs`
//! configuring every component) → data directory → refuse a second herd → bind every listen
//! address → control socket and pid file → metrics recorder and log thread → sidecar API →
//! supervisor → delivery to subscribers → gateway (with the fronts of proxied services' `listen`
//! addresses) → background tasks (`up/background.rs`).
//! [`Running::stop`] is the way down. `-d` (`up/detach.rs`) re-executes herd in its own session
//! with output to `<data_dir>/herd.log` and returns once the control socket answers.

mod background;
mod detach;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use herd_config::ConfigErrors;
use herd_supervisor::{Listening, LogHub, Supervisor};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{self, client, server};
use crate::{exit, sidecar};
use background::Background;

pub use detach::detach;

/// Set in the environment of the background herd started by `up -d`.
const DETACHED: &str = "HERD_DETACHED";

/// Runs herd in the foreground until SIGTERM, SIGINT or `herd down`.
///
/// Each step is one call below, in the order herd comes up; [`Running::stop`] is the order it
/// goes down.
pub async fn run(config_path: &Path, resources: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let (config, components) = match sidecar::load(config_path, resources) {
        Ok(c) => c,
        Err(e) => return Ok(exit::config_errors(&e)),
    };
    create_data_dir(&config)?;
    if another_herd_runs(&config).await {
        return Ok(ExitCode::from(exit::RUNTIME));
    }
    let sockets = match Sockets::bind(&config) {
        Ok(s) => s,
        Err(errors) => return Ok(exit::config_errors(&ConfigErrors(errors))),
    };
    let (listener, files) = bind_control(&config)?;
    let metrics = herd_telemetry::install();
    let (logs, log_thread) = start_logs(&config)?;
    let mut api = Api::start(&config, sockets.api, components)?;
    let (listening, fronts) = split_fronts(&config, sockets.services);
    let supervisor = start_supervisor(&config, listening, logs, &api);
    api.start_delivery(&config, &supervisor);
    log_services(&supervisor);
    let gateway = start_gateway(&config, sockets.gateway, fronts, &supervisor, &api)?;
    let background = Background::start(
        config_path,
        started,
        &supervisor,
        &gateway,
        metrics,
        listener,
        sockets.admin,
    );
    let running = Running {
        gateway,
        supervisor,
        api,
        background,
        files,
        log_thread,
    };
    running.wait_for_stop().await?;
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// The data directory, created `0700` so no other user reaches the control socket.
fn create_data_dir(config: &herd_config::Config) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))
}

/// Whether a herd already answers on this data directory (said on stderr): a second one
/// would take over its socket and files.
async fn another_herd_runs(config: &herd_config::Config) -> bool {
    let running = client::is_running(&config.data_dir).await;
    if running {
        eprintln!(
            "error: herd is already running with data directory {}",
            config.data_dir.display()
        );
    }
    running
}

/// Every listen address of the config, bound before anything starts: a taken port fails
/// start-up with every such error listed, and leaves nothing behind.
struct Sockets {
    /// The services' `listen` sockets, one per service (`None` for a service without one).
    services: Vec<Option<herd_supervisor::Bound>>,
    /// The gateway's listeners.
    gateway: Vec<herd_gateway::Bound>,
    /// `[admin] listen`.
    admin: Option<std::net::TcpListener>,
    /// The sidecar API's listeners, with `[api]`.
    api: Option<sidecar::Bound>,
}

impl Sockets {
    fn bind(config: &herd_config::Config) -> Result<Self, Vec<herd_config::ConfigError>> {
        match (
            herd_supervisor::bind_all(config),
            herd_gateway::bind(config),
            bind_admin(config),
            sidecar::bind(config),
        ) {
            (Ok(services), Ok(gateway), Ok(admin), Ok(api)) => Ok(Sockets {
                services,
                gateway,
                admin,
                api,
            }),
            (s, g, a, api) => Err(s
                .err()
                .into_iter()
                .chain(g.err())
                .chain(a.err())
                .chain(api.err())
                .flatten()
                .collect()),
        }
    }
}

/// The control socket and the pid file herd removes when it ends.
struct Files {
    control: PathBuf,
    pid: PathBuf,
}

/// Binds the control socket and writes the pid file: from here on `herd` commands find this
/// herd (they are answered once the control server runs).
fn bind_control(config: &herd_config::Config) -> anyhow::Result<(UnixListener, Files)> {
    let control_path = control::socket_path(&config.data_dir);
    let listener = server::bind(&control_path)
        .with_context(|| format!("cannot bind control socket {}", control_path.display()))?;
    let pid_path = config.data_dir.join("herd.pid");
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))?;
    let files = Files {
        control: control_path,
        pid: pid_path,
    };
    Ok((listener, files))
}

/// The log hub and its writer thread; instance output is echoed unless herd runs detached.
fn start_logs(
    config: &herd_config::Config,
) -> std::io::Result<(LogHub, std::thread::JoinHandle<()>)> {
    let echo = std::env::var_os(DETACHED).is_none();
    LogHub::start(config.data_dir.join("logs"), config.logs.clone(), echo)
}

/// The sidecar API once it serves. It serves before any instance starts, so apps can use it
/// from their first line; it stops after the instances, which may still use it while they
/// drain.
struct Api {
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Each service's variables for the API (`DAPR_HTTP_PORT`, ...).
    env: Vec<(String, Vec<(String, String)>)>,
    /// Components and policies, until delivery takes them.
    delivery: Option<(Arc<herd_api::Components>, Arc<herd_api::Policies>)>,
    /// Service invocation, given the supervisor's services by [`start_gateway`].
    invoker: Option<Arc<herd_api::Invoker>>,
}

impl Api {
    /// Starts the components, the API listeners and the mesh listener, with `[api]`.
    fn start(
        config: &herd_config::Config,
        api: Option<sidecar::Bound>,
        components: Vec<herd_api::Declared>,
    ) -> anyhow::Result<Self> {
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
                let (c, i, p) = api.serve(config, components, token, &api_stop, &api_tracker)?;
                (Some((c, p)), Some(i))
            }
            None => (None, None),
        };
        Ok(Api {
            stop: api_stop,
            tracker: api_tracker,
            env,
            delivery: components,
            invoker,
        })
    }

    /// Delivery to subscribers; it follows the supervisor's ready endpoints.
    fn start_delivery(&mut self, config: &herd_config::Config, supervisor: &Arc<Supervisor>) {
        if let Some((components, policies)) = self.delivery.take() {
            let apps: herd_api::delivery::Apps = {
                let supervisor = supervisor.clone();
                Arc::new(move |name: &str| supervisor.service(name).map(|s| s.endpoints()))
            };
            let services = config
                .services
                .iter()
                .map(|s| (s.name.clone(), s.app_protocol))
                .collect();
            herd_api::delivery::start(
                components,
                policies,
                config.subscriptions.clone(),
                services,
                apps,
                &self.stop,
                &self.tracker,
            );
        }
    }

    /// Stops the API and waits for its tasks.
    async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Each service's bound `listen` socket goes to its instances (`passthrough = true`) or to the
/// gateway, which serves it as the service's front.
fn split_fronts(
    config: &herd_config::Config,
    sockets: Vec<Option<herd_supervisor::Bound>>,
) -> (Vec<Listening>, Vec<herd_gateway::Front>) {
    let mut fronts = Vec::new();
    let listening = config
        .services
        .iter()
        .zip(sockets)
        .map(|(spec, socket)| match socket {
            None => Listening::None,
            Some(b) if spec.passthrough => Listening::Shared(b),
            Some(b) => {
                let addr = b.addr();
                fronts.push(herd_gateway::Front::new(
                    spec.name.clone(),
                    b.into_listener(),
                ));
                Listening::Proxied(addr)
            }
        })
        .collect();
    (listening, fronts)
}

/// The supervisor, starting every instance with the API's variables.
fn start_supervisor(
    config: &herd_config::Config,
    sockets: Vec<Listening>,
    logs: LogHub,
    api: &Api,
) -> Arc<Supervisor> {
    let extra_env = |name: &str| {
        api.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Arc::new(Supervisor::start(config, sockets, logs, &extra_env))
}

/// One line per service: its instance count and address.
fn log_services(supervisor: &Supervisor) {
    for s in supervisor.status() {
        tracing::info!(
            "{}: {} instance(s){}",
            s.name,
            s.instances.len(),
            s.listen.map(|a| format!(" on {a}")).unwrap_or_default()
        );
    }
}

/// The gateway, over the supervisor's services, serving the proxied services' `listen`
/// addresses too; invocation gets the same view of the services.
fn start_gateway(
    config: &herd_config::Config,
    sockets: Vec<herd_gateway::Bound>,
    fronts: Vec<herd_gateway::Front>,
    supervisor: &Arc<Supervisor>,
    api: &Api,
) -> std::io::Result<Arc<herd_gateway::Gateway>> {
    let source: herd_upstream::ServiceSource = {
        let supervisor = supervisor.clone();
        Arc::new(move |name: &str| {
            let s = supervisor.service(name)?;
            let spec = s.spec();
            // A shared-socket service is one address: the kernel's queue in front of every
            // instance. One instance's crash says nothing about the others and a retry on the
            // same address reaches a live one, so a breaker there would turn one crash into an
            // outage of the whole service: such pools have none.
            let shared = spec.passthrough && !spec.own_port;
            let breaker = (!shared).then(|| spec.breaker.clone());
            Some((s.endpoints(), spec.balance, breaker))
        })
    };
    if let Some(invoker) = &api.invoker {
        invoker.attach(source.clone());
    }
    Ok(Arc::new(herd_gateway::Gateway::start(
        config, sockets, fronts, source,
    )?))
}

/// herd once everything runs: what [`Running::stop`] takes down.
struct Running {
    gateway: Arc<herd_gateway::Gateway>,
    supervisor: Arc<Supervisor>,
    api: Api,
    background: Background,
    files: Files,
    log_thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Waits for SIGTERM, SIGINT or `herd down`; SIGHUP is logged and ignored. Whichever came
    /// cancels the shutdown token, so a signal and `herd down` take one path down.
    async fn wait_for_stop(&self) -> std::io::Result<()> {
        let shutdown = &self.background.shutdown;
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
        shutdown.cancel();
        Ok(())
    }

    /// Shutdown, in order: the gateway drains, the supervisor stops every instance, the API
    /// stops, the control server and the other background tasks end, the control socket and
    /// pid file are removed, and the log thread flushes.
    async fn stop(self) {
        let Running {
            gateway,
            supervisor,
            mut api,
            background,
            files,
            log_thread,
        } = self;
        // Stop taking requests first, let the open ones finish, then stop the instances.
        gateway.shutdown().await;
        supervisor.shutdown().await;
        api.stop().await;
        background.stop.cancel();
        background.tracker.close();
        background.tracker.wait().await;
        // The gateway, the sampler and the invoker hold the supervisor (to look services up): all
        // go before the log thread, which ends when the last log hub handle is dropped.
        drop(api.invoker.take());
        drop(gateway);
        drop(background.sampler);
        drop(supervisor);
        let _ = std::fs::remove_file(&files.control);
        let _ = std::fs::remove_file(&files.pid);
        // The writer thread ends once the last hub clone is gone, after flushing.
        let _ = tokio::task::spawn_blocking(move || log_thread.join()).await;
        tracing::info!("stopped");
    }
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
