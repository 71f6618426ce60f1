//! The service each API listener runs around the shared router: what every request goes
//! through before and after routing, in one future.
//!
//! In order: a `dapr-app-id` header turns any path into an invocation; the listener's
//! [`AppId`] and the body limit go into the request; a head HTTP says to refuse is answered
//! (`limits::refused_head`); the rest runs in its SERVER span (`span.rs`), where the token is
//! checked and the framework's own plain-text errors become Dapr JSON (`limits::dapr_json`).
//!
//! These were once `Router::layer`s; axum applies those to every route separately, so each
//! request cloned and boxed each layer's copy of the route's stack on its way down. As one
//! service outside the router they cost one boxed future per request.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use crate::error::ApiError;
use crate::{AppId, Shared, invoke, limits, span};

/// The router with the body limit set on every request.
type Limited = <DefaultBodyLimit as Layer<Router>>::Service;

/// One listener's service: the shared router, seen as the app id of that listener.
#[derive(Clone)]
pub(crate) struct Api {
    router: Limited,
    shared: Arc<Shared>,
    app: AppId,
    max_body: usize,
}

impl Api {
    /// `router` (already given its state) serving the listener of `app`.
    pub(crate) fn new(router: Router, shared: Arc<Shared>, app: AppId, max_body: usize) -> Self {
        Self {
            router: DefaultBodyLimit::max(max_body).layer(router),
            shared,
            app,
            max_body,
        }
    }
}

impl Service<Request> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut request = invoke::rewrite_app_id_header(request);
        request.extensions_mut().insert(self.app.clone());
        let this = self.clone();
        Box::pin(async move {
            if let Some(refused) = limits::refused_head(&request) {
                return Ok(refused);
            }
            Ok(span::serve(request, |request| this.guarded(request)).await)
        })
    }
}

impl Api {
    /// The token check, the router, and Dapr JSON for what the framework answered itself.
    async fn guarded(self, request: Request) -> Response {
        if let Some(refused) = refused_token(&self.shared, &request) {
            return refused;
        }
        let invocation = request.uri().path().starts_with(invoke::PREFIX);
        let Ok(response) = self.router.oneshot(request).await;
        limits::dapr_json(response, invocation, self.max_body).await
    }
}

/// The 401 for a request without the configured token, if there is one: every request but
/// `/v1.0/healthz` must carry it.
fn refused_token(shared: &Shared, request: &Request) -> Option<Response> {
    let token = shared.token.as_ref()?;
    if request.uri().path() == "/v1.0/healthz" {
        return None;
    }
    let given = request
        .headers()
        .get("dapr-api-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if crate::constant_time_eq(given, token.as_bytes()) {
        return None;
    }
    Some(
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ERR_UNAUTHORIZED",
            "invalid api token",
        )
        .into_response(),
    )
}
