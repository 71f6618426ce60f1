//! The mesh listener: what peer herds reach. `GET /herd/v1/apps` (this herd's announcement) and
//! `/v1.0/invoke/{app}/method/...` served by local instances only. With `[mesh.tls]` every
//! connection is mutual TLS: a peer without a certificate from the mesh's CA is refused during
//! the handshake, before any request is read. Without it the listener is plain HTTP and must
//! sit on a trusted network.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse as _;
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::invoke::{self, Invoker};
use crate::peers::APPS_PATH;

async fn apps(State(invoker): State<Arc<Invoker>>) -> axum::response::Response {
    let Some(peers) = invoker.peers() else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    axum::Json(peers.advert(invoker.ready_counts())).into_response()
}

/// Serves peers on `socket` until `stop`, over mutual TLS when `tls` is set.
pub fn serve(
    invoker: Arc<Invoker>,
    socket: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<()> {
    socket.set_nonblocking(true)?;
    let socket = tokio::net::TcpListener::from_std(socket)?;
    let router = Router::new()
        .route(APPS_PATH, get(apps))
        .route("/v1.0/invoke/{*rest}", any(invoke::from_peer))
        // A forwarded call gets its SERVER span here too, a child of the calling herd's.
        .layer(axum::middleware::from_fn(crate::span::traced))
        .with_state(invoker);
    let stop = stop.clone();
    let Some(tls) = tls else {
        tracker.spawn(async move {
            let served = axum::serve(socket, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("mesh listener failed: {e}");
            }
        });
        return Ok(());
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let connections = tracker.clone();
    tracker.spawn(async move {
        loop {
            let (tcp, from) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = socket.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("mesh listener: accept failed: {e}");
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            let stop = stop.clone();
            connections.spawn(async move {
                let stream = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("mesh: TLS handshake with {from} failed: {e}");
                        return;
                    }
                };
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r {
                        tracing::debug!("mesh connection from {from} ended: {e}");
                    },
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    Ok(())
}
