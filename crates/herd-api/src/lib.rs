//! The sidecar API: Dapr's HTTP API v1.0, so that the official Dapr SDKs work against herd.
//!
//! One axum router serves every listener. The shared listener (`[api] listen`) answers for the
//! app id `[api] app_id`; each service gets a loopback listener of its own whose port herd puts
//! in its instances' `DAPR_HTTP_PORT`, and requests arriving there carry the service's name as
//! app id ([`AppId`]), which scopes components and prefixes state keys. Routes:
//!
//! - `meta.rs`: `/v1.0/healthz`, `/v1.0/healthz/outbound`, `/v1.0/metadata`;
//! - `state.rs`: `/v1.0/state/{store}` save, get, bulk, delete, transaction;
//! - `lock.rs`: `/v1.0-alpha1/lock/{store}`, `/v1.0-alpha1/unlock/{store}`;
//! - `publish.rs`: `/v1.0/publish/{pubsub}/{topic}` and bulk publish (CloudEvents in
//!   `cloudevent.rs`); `delivery.rs` runs subscriptions and posts messages to the apps;
//! - `invoke.rs`: `/v1.0/invoke/{app-id}/method/{path}` and the `dapr-app-id` header form, to
//!   local instances or, through `peers.rs` (who runs what) and `mesh.rs` (the listener peers
//!   reach), to another herd.
//!
//! Component calls run under the component's outbound resiliency policy (`resilience.rs`),
//! deliveries under its inbound one; [`Shared::policies`] resolves them, and an app's policy for
//! service invocation (`policies.app(caller, id)`).
//!
//! Every request but `/v1.0/healthz` must carry `dapr-api-token` when a token is configured;
//! bodies larger than `[api] max_body` get 413, names, keys and metadata past their limits 400
//! (`limits.rs`), both as Dapr JSON like every other error. Every request but the health checks runs in a
//! SERVER span (`span.rs`), so its log lines carry the trace id. What wraps every request is one
//! service per listener around the router (`listener.rs`), not layers on each route.

#![forbid(unsafe_code)]

mod cloudevent;
pub mod components;
pub mod delivery;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod invoke;
mod keys;
mod limits;
mod listener;
mod lock;
pub mod mesh;
mod meta;
pub mod outbox;
pub mod peers;
mod publish;
mod recent;
mod resilience;
mod span;
mod state;

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use components::{Components, Declared};
pub use error::ApiError;
pub use herd_resilience::{Outcome, Policies, Policy, RunError};
pub use invoke::Invoker;
pub use keys::KeyPrefix;

/// The app id a request is made for, set per listener.
#[derive(Debug, Clone)]
pub struct AppId(pub Arc<str>);

/// What every handler shares.
pub struct Shared {
    /// The components.
    pub components: Arc<Components>,
    /// The API token every request must carry, if set.
    pub token: Option<String>,
    /// The app id of the shared listener, which sees every app's subscriptions in metadata.
    pub shared_app: String,
    /// Signalled after a transaction wrote outbox messages, to wake the relay.
    pub outbox_ready: Arc<tokio::sync::Notify>,
    /// Resiliency policies: `policies.app(caller, id)` for service invocation,
    /// `component_outbound` / `component_inbound` for components.
    pub policies: Arc<herd_resilience::Policies>,
    /// Service invocation.
    pub invoker: Arc<Invoker>,
    /// Metadata attributes apps set (`SetMetadata`), by app id.
    pub extended: std::sync::Mutex<
        std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
    >,
}

/// A bound listener and the app id of requests that arrive on it.
pub struct Listener {
    /// The socket, already bound.
    pub socket: std::net::TcpListener,
    /// The app id.
    pub app_id: String,
}

/// The `metadata.<name>` query parameters of a request, by name (Dapr's request metadata),
/// within the metadata limits (`limits.rs`).
pub(crate) fn query_metadata(
    query: &std::collections::HashMap<String, String>,
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let metadata: std::collections::HashMap<String, String> = query
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?.to_string(), v.clone())))
        .collect();
    limits::metadata(metadata.iter().map(|(k, v)| (k.as_str(), v.len())))?;
    Ok(metadata)
}

/// Parses a JSON body, mapping failures to Dapr's 400.
pub(crate) fn parse_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed(format!("failed deserializing HTTP body: {e}")))
}

/// Compares without an early exit, so timing does not tell how much of a token was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    diff == 0
}

/// The layer on every matched route: the route parameters' limits, the dashboard's entry of the
/// request (`recent.rs`), and the route template for the SERVER span when it asks for it
/// (`span.rs`).
async fn matched(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<span::WantRoute>()
        .and_then(|_| request.extensions().get::<MatchedPath>().cloned());
    let mut response = recent::record(request, |request| async move {
        match limits::path_params(request).await {
            Ok(request) => next.run(request).await,
            Err(refused) => refused,
        }
    })
    .await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ERR_NOT_FOUND",
        format!("method {:?} is not found", request.uri().path()),
    )
}

/// The router, without what `listener.rs` adds around it (the app id, the body limit, the token
/// check, the SERVER span).
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1.0/healthz", get(meta::healthz))
        .route("/v1.0/healthz/outbound", get(meta::outbound))
        .route("/v1.0/metadata", get(meta::metadata))
        .route("/v1.0/metadata/{key}", axum::routing::put(meta::set))
        .route("/v1.0/state/{store}", post(state::save).put(state::save))
        .route(
            "/v1.0/state/{store}/bulk",
            post(state::bulk).put(state::bulk),
        )
        .route(
            "/v1.0/state/{store}/transaction",
            post(state::transaction).put(state::transaction),
        )
        .route(
            "/v1.0/state/{store}/{key}",
            get(state::get).delete(state::delete),
        )
        .route("/v1.0/invoke/{*rest}", any(invoke::invoke))
        .route("/v1.0-alpha1/lock/{store}", post(lock::lock))
        .route("/v1.0-alpha1/unlock/{store}", post(lock::unlock))
        .route("/v1.0/publish/{pubsub}/{topic}", post(publish::publish))
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/{topic}",
            post(publish::bulk),
        )
        .route_layer(middleware::from_fn(matched))
        .fallback(not_found)
        .with_state(shared)
}

/// Serves `listeners` until `stop`; open requests finish first. Tasks are tracked by `tracker`.
pub fn serve(
    shared: Arc<Shared>,
    max_body: usize,
    listeners: Vec<Listener>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<()> {
    let router = router(shared.clone());
    for listener in listeners {
        listener.socket.set_nonblocking(true)?;
        let socket = tokio::net::TcpListener::from_std(listener.socket)?;
        let app = listener::Api::new(
            router.clone(),
            shared.clone(),
            AppId(listener.app_id.into()),
            max_body,
        );
        let stop = stop.clone();
        tracker.spawn(async move {
            let served = axum::serve(socket, axum::ServiceExt::<Request>::into_make_service(app))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("sidecar API listener failed: {e}");
            }
        });
    }
    Ok(())
}
