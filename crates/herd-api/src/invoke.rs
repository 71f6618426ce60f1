//! Service invocation: `/v1.0/invoke/{app-id}/method/{path}` (and the `dapr-app-id` header
//! form, rewritten to it before routing), every method, the path and query passed through as
//! written.
//!
//! A call goes to a ready instance of the app here, chosen by the balancer the gateway uses too
//! (`herd_upstream::Pool`, with its per-endpoint breakers), and otherwise to a peer herd that runs the app
//! (`peers.rs`), which serves it from its own instances only, so a call crosses at most one
//! herd-to-herd hop. The request body is buffered (under the API's body limit) so that an
//! attempt that found no listener (refused connection) can go to the next endpoint; the
//! response streams back. Headers are passed on but for hop-by-hop ones and herd's own
//! (`dapr-api-token`, `dapr-app-id`); the callee sees `dapr-caller-app-id` and
//! `dapr-callee-app-id` as Dapr sets them, and the trace context.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use herd_resilience::{Outcome, Policy, RunError};
use herd_telemetry::traceparent::{TRACEPARENT, Traceparent, header_value};
use herd_upstream::{
    Attempt, Client, ClientBody, ClientError, Decisions, NoEndpoint, Places, Pool, UpBody,
    idempotent, strip_hop_by_hop,
};
use http_body_util::{Either, Full};

mod app_callback;
mod metrics;

use crate::error::ApiError;
use crate::peers::Peers;
use crate::{AppId, Shared};

/// Where a herd service's ready instances are, how to balance over them and their breaker
/// settings; `None` for a name that is not a service here.
pub type Services = herd_upstream::ServiceSource;

/// The path prefix of an invocation.
pub(crate) const PREFIX: &str = "/v1.0/invoke/";
/// The header naming the app to invoke, Dapr's alternative to the path form.
const DAPR_APP_ID: HeaderName = HeaderName::from_static("dapr-app-id");
const DAPR_CALLER: HeaderName = HeaderName::from_static("dapr-caller-app-id");
const DAPR_CALLEE: HeaderName = HeaderName::from_static("dapr-callee-app-id");
const DAPR_API_TOKEN: HeaderName = HeaderName::from_static("dapr-api-token");
/// Endpoints an invocation tries when connections are refused (or, for an idempotent method,
/// break), before it gives up.
const MAX_TRIES: usize = 3;
/// Whole-call deadline unless a resiliency policy sets one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Routes invocations to local instances or peer herds.
pub struct Invoker {
    /// Set once the supervisor runs (the API serves before instances start).
    services: OnceLock<Services>,
    /// Names of the services this herd runs.
    names: Vec<String>,
    /// Their invocation metrics, in the order of `names`.
    metrics: Vec<metrics::AppMetrics>,
    /// One pool per invoked local app, made on first use.
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    client: Client,
    peers: Option<Arc<Peers>>,
    max_body: usize,
    /// Local apps reached over `AppCallback` (`app_protocol = "grpc"`).
    grpc_apps: Vec<String>,
    channels: crate::grpc::callback::Channels,
}

/// How an attempt loop over one pool ended without a response.
enum Failure {
    /// No endpoint could take the call.
    NoEndpoint(NoEndpoint),
    /// Every endpoint tried refused the connection.
    Refused(ClientError),
    /// The call failed after it may have reached the endpoint; it is not sent again.
    Failed(ClientError),
    /// The deadline passed.
    TimedOut,
    /// The app's circuit breaker (its resiliency policy) is open.
    BreakerOpen,
    /// No app with this id here or on a peer.
    Unknown,
    /// A gRPC app's call failed without an answer.
    Grpc(String),
}

impl Invoker {
    /// An invoker for the services named `names`, forwarding to `peers` when set.
    pub fn new(names: Vec<String>, peers: Option<Arc<Peers>>, max_body: usize) -> Self {
        Self {
            services: OnceLock::new(),
            metrics: names.iter().map(|_| Default::default()).collect(),
            names,
            pools: Mutex::new(HashMap::new()),
            client: Client::new(),
            peers,
            max_body,
            grpc_apps: Vec::new(),
            channels: Default::default(),
        }
    }

    /// Names the local apps that are called over `AppCallback` (`OnInvoke`).
    pub fn with_grpc_apps(mut self, apps: Vec<String>) -> Self {
        self.grpc_apps = apps;
        self
    }

    /// Hands over the services' endpoints once the supervisor runs.
    pub fn attach(&self, services: Services) {
        let _ = self.services.set(services);
    }

    /// The peer directory, when `[mesh]` is configured.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    /// Ready instances per local app, as announced to peers.
    pub fn ready_counts(&self) -> HashMap<String, usize> {
        let Some(services) = self.services.get() else {
            return HashMap::new();
        };
        self.names
            .iter()
            .filter_map(|n| Some((n.clone(), services(n)?.0.borrow().len())))
            .collect()
    }

    /// The pool of local app `app`, if it is a service here.
    fn local_pool(&self, app: &str) -> Option<Arc<Pool>> {
        if !self.names.iter().any(|n| n == app) {
            return None;
        }
        let services = self.services.get()?;
        let mut pools = self.pools.lock().expect("pools poisoned");
        if let Some(p) = pools.get(app) {
            return Some(p.clone());
        }
        let (addrs, balance, breaker) = services(app)?;
        let pool = Arc::new(Pool::new(
            format!("app {app}"),
            addrs,
            balance,
            breaker,
            Places::default(),
        ));
        pools.insert(app.to_string(), pool.clone());
        Some(pool)
    }

    /// Calls `app` with `parts` and `body` under `policy` (the caller's resiliency policy for
    /// the app; none for a call a peer forwarded here, which the peer's policy covers).
    async fn call(
        &self,
        policy: Option<&Policy>,
        app: &str,
        caller: &str,
        parts: &Parts,
        body: Bytes,
        local_only: bool,
    ) -> Response {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        let once = |_attempt| self.route(app, caller, parts, body.clone(), local_only, deadline);
        let result = match policy {
            Some(p) => p.run(once, classify).await,
            None => once(0).await.map_err(RunError::Failed),
        };
        let (target, response) = match result {
            Ok((target, resp)) => (target, finish(resp)),
            Err(RunError::Failed((target, f))) => (target, failed(app, f)),
            Err(RunError::TimedOut(_)) => ("local", failed(app, Failure::TimedOut)),
            Err(RunError::BreakerOpen(_)) => ("local", failed(app, Failure::BreakerOpen)),
        };
        let cached = self
            .names
            .iter()
            .position(|n| n == app)
            .map(|i| &self.metrics[i]);
        metrics::record(cached, app, target, started, response.status());
        response
    }

    /// One attempt of a call: local instances first, then peers unless `local_only` (a call a
    /// peer forwarded here). Says where it went.
    async fn route(
        &self,
        app: &str,
        caller: &str,
        parts: &Parts,
        body: Bytes,
        local_only: bool,
        deadline: tokio::time::Instant,
    ) -> Result<(&'static str, Response), (&'static str, Failure)> {
        let mut last = None;
        if let Some(pool) = self.local_pool(app) {
            let req = parts.request(app, caller, body.clone(), &parts.path_and_query);
            let answer = if self.grpc_apps.iter().any(|a| a == app) {
                app_callback::attempts(&pool, &self.channels, &req, app, caller, deadline).await
            } else {
                attempts(&pool, &self.client, req, deadline)
                    .await
                    .map(|r| r.map(Body::new))
            };
            match answer {
                Ok(resp) => return Ok(("local", resp)),
                // Refused everywhere or nothing ready here: a peer may have the app.
                Err(f @ (Failure::NoEndpoint(_) | Failure::Refused(_))) => last = Some(f),
                Err(f) => return Err(("local", f)),
            }
        }
        if !local_only
            && let Some((peers, pool)) = self.peers.as_ref().and_then(|p| Some((p, p.pool(app)?)))
        {
            let path = format!("{PREFIX}{app}/method{}", parts.path_and_query);
            let req = parts.request(app, caller, body, &path);
            return match attempts(&pool, peers.client(), req, deadline).await {
                Ok(resp) => Ok(("peer", resp.map(Body::new))),
                Err(f) => Err(("peer", f)),
            };
        }
        Err(("local", last.unwrap_or(Failure::Unknown)))
    }
}

/// How an attempt counts for the resiliency policy: an answer by its status; nothing ready,
/// or every connection refused, as unreachable (Dapr's built-in retries cover those); a call
/// that broke or timed out after it may have arrived as a failure.
fn classify(result: &Result<(&'static str, Response), (&'static str, Failure)>) -> Outcome {
    match result {
        Ok((_, resp)) => Outcome::from_http_status(resp.status().as_u16()),
        Err((_, Failure::NoEndpoint(_) | Failure::Refused(_))) => Outcome::Unreachable,
        Err((_, Failure::Unknown)) => Outcome::Permanent,
        Err((
            _,
            Failure::Failed(_) | Failure::TimedOut | Failure::BreakerOpen | Failure::Grpc(_),
        )) => Outcome::Failure,
    }
}

/// What is kept of the incoming request to build each attempt.
struct Parts {
    method: axum::http::Method,
    /// The app's path and query, starting with `/`.
    path_and_query: String,
    headers: HeaderMap,
}

impl Parts {
    /// A request for one attempt at `path`.
    fn request(&self, app: &str, caller: &str, body: Bytes, path: &str) -> Template {
        let mut headers = self.headers.clone();
        strip_hop_by_hop(&mut headers);
        for h in [
            &DAPR_API_TOKEN,
            &DAPR_APP_ID,
            &header::HOST,
            &header::CONTENT_LENGTH,
        ] {
            headers.remove(h);
        }
        if let Ok(v) = HeaderValue::from_str(caller) {
            headers.insert(DAPR_CALLER, v);
        }
        if let Ok(v) = HeaderValue::from_str(app) {
            headers.insert(DAPR_CALLEE, v);
        }
        // The callee's parent is this request's SERVER span (the `traced` layer); outside one,
        // the caller's trace goes on with a new span id.
        let traceparent = herd_telemetry::current_traceparent()
            .and_then(|tp| HeaderValue::from_str(&tp).ok())
            .unwrap_or_else(|| {
                let incoming = headers
                    .get(TRACEPARENT)
                    .and_then(|v| Traceparent::parse(v.as_bytes()));
                header_value(Traceparent::next_hop(incoming).to_bytes())
            });
        headers.insert(TRACEPARENT, traceparent);
        Template {
            method: self.method.clone(),
            uri: Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/")),
            headers,
            body,
        }
    }
}

/// One call's request, copied for each attempt.
struct Template {
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    fn to(&self, addr: SocketAddr) -> http::Request<UpBody> {
        let mut req = http::Request::new(Either::Right(Full::new(self.body.clone())));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if let Ok(host) = HeaderValue::from_str(&addr.to_string()) {
            req.headers_mut().insert(header::HOST, host);
        }
        req
    }
}

/// Sends `req` to endpoints of `pool`: a refused connection moves on to the next endpoint
/// (nothing reached the first), as does a broken one for an idempotent method; any answer is
/// the answer.
async fn attempts(
    pool: &Pool,
    client: &Client,
    req: Template,
    deadline: tokio::time::Instant,
) -> Result<http::Response<ClientBody>, Failure> {
    let mut decisions = Decisions::default();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut refused = None;
    loop {
        let pick = match pool.pick(&tried, &mut decisions) {
            Ok(p) => p,
            Err(e) => {
                return Err(match refused {
                    Some(err) => Failure::Refused(err),
                    None => Failure::NoEndpoint(e),
                });
            }
        };
        let addr = pick.addr;
        match tokio::time::timeout_at(deadline, client.send(addr, req.to(addr))).await {
            Err(_) => {
                pick.report(Attempt::NoAnswer, &mut decisions);
                return Err(Failure::TimedOut);
            }
            Ok(Ok(resp)) => {
                pick.report(Attempt::Answered(resp.status().as_u16()), &mut decisions);
                return Ok(resp);
            }
            Ok(Err(e)) if e.is_connect() => {
                tracing::debug!(endpoint = %addr, "{}: connect failed, trying another endpoint: {e}", pool.name);
                pick.report(Attempt::NoAnswer, &mut decisions);
                tried.push(addr);
                refused = Some(e);
                if tried.len() >= MAX_TRIES {
                    return Err(Failure::Refused(refused.expect("just set")));
                }
            }
            // The connection broke after the request may have arrived (an instance killed
            // while the call was in flight, or an idle connection it had just closed): sent
            // again elsewhere only when repeating it changes nothing.
            Ok(Err(e)) if idempotent(&req.method) && tried.len() + 1 < MAX_TRIES => {
                tracing::debug!(endpoint = %addr, "{}: call failed, trying another endpoint: {e}", pool.name);
                pick.report(Attempt::NoAnswer, &mut decisions);
                tried.push(addr);
            }
            Ok(Err(e)) => {
                pick.report(Attempt::NoAnswer, &mut decisions);
                return Err(Failure::Failed(e));
            }
        }
    }
}

fn finish(mut resp: Response) -> Response {
    strip_hop_by_hop(resp.headers_mut());
    resp
}

fn failed(app: &str, f: Failure) -> Response {
    let (status, why) = match f {
        Failure::NoEndpoint(NoEndpoint::Empty) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no ready instance".to_string(),
        ),
        Failure::NoEndpoint(NoEndpoint::BreakersOpen | NoEndpoint::Ejected) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit breaker is open for every instance".to_string(),
        ),
        Failure::NoEndpoint(NoEndpoint::AllTried) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "every instance refused the connection".to_string(),
        ),
        Failure::Refused(e) | Failure::Failed(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Failure::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "timed out".to_string()),
        Failure::Grpc(why) => (StatusCode::INTERNAL_SERVER_ERROR, why),
        Failure::BreakerOpen => (
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit breaker is open".to_string(),
        ),
        Failure::Unknown => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no app with this id here or on a peer".to_string(),
        ),
    };
    let mut r = ApiError::new(
        status,
        "ERR_DIRECT_INVOKE",
        format!("failed to invoke, id: {app}, err: {why}"),
    )
    .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// Splits `/v1.0/invoke/{app}/method/{path}?query` into the app id (a trailing `.namespace`
/// dropped) and the app's path and query.
fn target(uri: &Uri) -> Option<(String, String)> {
    let rest = uri.path().strip_prefix(PREFIX)?;
    let (app, method) = rest.split_once('/')?;
    let path = method.strip_prefix("method")?;
    if !(path.is_empty() || path.starts_with('/')) || app.is_empty() {
        return None;
    }
    let app = app.split_once('.').map_or(app, |(id, _namespace)| id);
    let mut path_and_query = if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    };
    if let Some(q) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Some((app.to_string(), path_and_query))
}

/// `dapr-app-id: X` on a request outside the API's own paths: rewritten to
/// `/v1.0/invoke/X/method/<path>` before routing, as Dapr does.
pub(crate) fn rewrite_app_id_header(mut req: Request) -> Request {
    let Some(app) = req
        .headers()
        .get(DAPR_APP_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    else {
        return req;
    };
    if req.uri().path().starts_with(PREFIX) {
        return req;
    }
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    // Escaped, so that a value that is no app id (`../x`) stays one path segment and is
    // refused as an app id rather than read as a different path.
    let escaped = crate::limits::escape(app);
    if let Ok(uri) = Uri::try_from(format!("{PREFIX}{escaped}/method{pq}")) {
        *req.uri_mut() = uri;
    }
    req
}

/// An invocation from an app of this herd.
pub(crate) async fn invoke(
    State(shared): State<Arc<Shared>>,
    axum::Extension(AppId(caller)): axum::Extension<AppId>,
    req: Request,
) -> Response {
    call_from(&shared, &caller, req).await
}

/// An invocation by app `caller` in the HTTP API's form, whichever front end it came from
/// (gRPC's `InvokeService` builds one).
pub(crate) async fn call_from(shared: &Shared, caller: &str, req: Request) -> Response {
    let policy = target(req.uri()).map(|(app, _)| shared.policies.app(caller, &app));
    handle(&shared.invoker, policy.as_deref(), caller, req, false).await
}

/// An invocation a peer herd forwarded: served by local instances only.
pub(crate) async fn from_peer(State(invoker): State<Arc<Invoker>>, req: Request) -> Response {
    let caller = req
        .headers()
        .get(DAPR_CALLER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    handle(&invoker, None, &caller, req, true).await
}

async fn handle(
    invoker: &Invoker,
    policy: Option<&Policy>,
    caller: &str,
    req: Request,
    local_only: bool,
) -> Response {
    let Some((app, path_and_query)) = target(req.uri()) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "ERR_DIRECT_INVOKE",
            "write /v1.0/invoke/{app-id}/method/{path}",
        )
        .into_response();
    };
    if let Err(e) = crate::limits::app_id(&app) {
        return e.into_response();
    }
    let (head, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, invoker.max_body).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "ERR_BODY_TOO_LARGE",
                    "request body too large",
                )
            } else {
                ApiError::malformed(format!("cannot read the request body: {e}"))
            }
            .into_response();
        }
    };
    let parts = Parts {
        method: head.method,
        path_and_query,
        headers: head.headers,
    };
    invoker
        .call(policy, &app, caller, &parts, body, local_only)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splits_app_and_path() {
        let t = |s: &str| target(&Uri::try_from(s).unwrap());
        assert_eq!(
            t("/v1.0/invoke/orders/method/api/v1/items?x=1&y=%20"),
            Some(("orders".into(), "/api/v1/items?x=1&y=%20".into()))
        );
        assert_eq!(
            t("/v1.0/invoke/orders.prod/method/a"),
            Some(("orders".into(), "/a".into()))
        );
        assert_eq!(
            t("/v1.0/invoke/orders/method"),
            Some(("orders".into(), "/".into()))
        );
        assert_eq!(t("/v1.0/invoke/orders/methods/a"), None);
        assert_eq!(t("/v1.0/invoke//method/a"), None);
        assert_eq!(t("/v1.0/invoke/orders"), None);
    }

    #[test]
    fn the_header_form_is_rewritten_to_the_path_form() {
        let req = axum::http::Request::builder()
            .uri("/api/items?q=1")
            .header("dapr-app-id", "orders")
            .body(Body::empty())
            .unwrap();
        let req = rewrite_app_id_header(req);
        assert_eq!(req.uri(), "/v1.0/invoke/orders/method/api/items?q=1");
        let plain = axum::http::Request::builder()
            .uri("/v1.0/state/s")
            .body(Body::empty())
            .unwrap();
        assert_eq!(rewrite_app_id_header(plain).uri(), "/v1.0/state/s");
    }
}
