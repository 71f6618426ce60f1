//! Serving a shop service: bind `127.0.0.1:$PORT` (the port herd gives the instance with
//! `port = "auto"`), answer `GET /healthz` (200 once the service says it can serve, 503
//! before), and on SIGTERM (or SIGINT) stop accepting, finish the requests in flight and return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Marks a service ready to serve.
#[derive(Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// From now on `/healthz` answers 200.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A service's server: readiness and the stop signal.
pub struct Server {
    name: &'static str,
    ready: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Server {
    /// A server for service `name`; SIGTERM and SIGINT cancel [`Server::stopping`] from now on.
    pub fn new(name: &'static str) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let on_signal = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            on_signal.cancel();
        });
        Ok(Server {
            name,
            ready: Arc::new(AtomicBool::new(false)),
            stop,
        })
    }

    /// Cancelled when the service is asked to stop, for its background tasks.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// From now on `/healthz` answers 200.
    pub fn set_ready(&self) {
        self.readiness().set();
    }

    /// A handle that makes `/healthz` answer 200, for a task that finishes starting up.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.ready.clone())
    }

    /// Serves `app` and `/healthz` on `127.0.0.1:$PORT` until stopped, then lets the requests
    /// in flight finish.
    pub async fn run(self, app: Router) -> std::io::Result<()> {
        let port: u16 = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let worker = std::env::var("HERD_INSTANCE").unwrap_or_else(|_| "0".into());
        println!(
            "{} {worker} listening on {}",
            self.name,
            listener.local_addr()?
        );
        let ready = self.ready.clone();
        let app = app.route(
            "/healthz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                    }
                }
            }),
        );
        let stop = self.stop.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await?;
        println!("{} {worker} stopped", self.name);
        Ok(())
    }
}
