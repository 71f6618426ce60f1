//! Forwarding one request: route, choose an endpoint, pass it on with trace context, answer.
//!
//! Hop-by-hop headers are removed both ways; `x-request-id`, `traceparent`, `x-forwarded-for`
//! and `x-forwarded-proto` are set upstream. A request without a body is sent as an empty body,
//! so when an endpoint refuses the connection (an instance that just stopped), it is sent again
//! to another endpoint: nothing reached the first one, whatever the method. A bodyless request
//! with an idempotent method (or on a `retryable` route) is also retried after a 502/503/504 or a
//! reset, with the route's backoff, up to `maxRetries` and within the route's retry budget. A
//! request with a body is sent once. Every attempt's outcome feeds the endpoint's breaker and
//! ejection counts. Failures are answered with a short JSON body naming the upstream: 404 no
//! route, 503 no endpoint, 502 upstream failure, 504 timeout.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herd_config::Target;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::retry::budget::Budget;

use crate::balance::{Attempt, Decisions, NoEndpoint, Pool};
use crate::route::RouteTable;
use crate::trace::TraceContext;

/// What goes upstream: the client's body (cut off at the size limit), or an empty one that can
/// be sent again.
pub type UpBody = Either<Limited<Incoming>, Empty<Bytes>>;
/// What goes back to the client: the upstream's body, or herd's own answer.
pub type DownBody = Either<Incoming, Full<Bytes>>;

/// Endpoints tried for a request whose body allows it, before answering 502.
const MAX_CONNECT_TRIES: usize = 3;

/// The request path's shared state.
pub struct Proxy {
    routes: RouteTable,
    pools: HashMap<Target, Arc<Pool>>,
    client: Client<HttpConnector, UpBody>,
    max_body: u64,
    /// Metric handles per route, registered once so the request path only increments.
    metrics: Vec<RouteMetrics>,
    unrouted: RouteMetrics,
}

/// A route's metric handles.
struct RouteMetrics {
    /// Requests by status class: 1xx to 5xx.
    by_class: [metrics::Counter; 5],
    duration: metrics::Histogram,
    retries: metrics::Counter,
}

impl RouteMetrics {
    fn new(route: String, upstream: String) -> Self {
        let class = |c: &'static str| {
            metrics::counter!(
                "herd_gateway_requests_total",
                "route" => route.clone(),
                "upstream" => upstream.clone(),
                "class" => c
            )
        };
        Self {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: metrics::histogram!(
                "herd_gateway_request_duration_seconds",
                "route" => route.clone(),
                "upstream" => upstream.clone()
            ),
            retries: metrics::counter!(
                "herd_gateway_retries_total",
                "route" => route,
                "upstream" => upstream
            ),
        }
    }

    fn record(&self, status: StatusCode, elapsed: std::time::Duration, tries: usize) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].increment(1);
        self.duration.record(elapsed.as_secs_f64());
        if tries > 1 {
            self.retries.increment(tries as u64 - 1);
        }
    }
}

/// Whether `e` or anything that caused it satisfies `test`.
fn caused_by(
    e: &(dyn std::error::Error + 'static),
    test: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if test(err) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Why sending failed when the fault lies with the client's body rather than the upstream:
/// over the size limit (413), or malformed, e.g. bad chunking (400).
fn client_body_fault(e: &(dyn std::error::Error + 'static)) -> Option<(StatusCode, &'static str)> {
    if caused_by(e, |err| err.is::<LengthLimitError>()) {
        return Some((StatusCode::PAYLOAD_TOO_LARGE, "request body too large"));
    }
    // hyper reports an error from the body it was given to send as a "user" error.
    if caused_by(e, |err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_user())
    }) {
        return Some((StatusCode::BAD_REQUEST, "malformed request body"));
    }
    None
}

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// herd's own answer: `{"error": ..., "upstream": ...}`.
fn answer(
    status: StatusCode,
    error: &str,
    upstream: Option<&str>,
    request_id: &str,
) -> Response<DownBody> {
    let body = serde_json::json!({ "error": error, "upstream": upstream, "requestId": request_id });
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

/// Methods that may be sent again without changing the outcome (RFC 9110 §9.2.2).
fn idempotent(m: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(m)
}

/// The answer when no endpoint can take the request.
fn no_endpoint(why: NoEndpoint, pool: &Pool, request_id: &str) -> Response<DownBody> {
    match why {
        NoEndpoint::Empty => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ready endpoint",
            Some(&pool.name),
            request_id,
        ),
        NoEndpoint::BreakersOpen => {
            let mut r = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "every endpoint's circuit breaker is open",
                Some(&pool.name),
                request_id,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        NoEndpoint::Ejected => {
            let mut r = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "every endpoint is ejected as an outlier",
                Some(&pool.name),
                request_id,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        NoEndpoint::AllTried => answer(
            StatusCode::BAD_GATEWAY,
            "every endpoint refused the connection",
            Some(&pool.name),
            request_id,
        ),
    }
}

/// What the access log records about one request.
struct Outcome<'a> {
    route: Option<usize>,
    upstream: Option<&'a str>,
    endpoint: Option<SocketAddr>,
    tries: usize,
    /// Endpoints left out (ejected, breaker open) and state changes the attempts caused.
    decisions: Decisions,
}

impl Proxy {
    /// A proxy over `routes` and the `pools` their targets name, accepting bodies up to
    /// `max_body` bytes.
    pub fn new(routes: RouteTable, pools: HashMap<Target, Arc<Pool>>, max_body: u64) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(connector);
        let metrics = routes
            .iter()
            .map(|r| {
                let upstream = pools
                    .get(&r.target)
                    .map_or("none".into(), |p| p.name.clone());
                RouteMetrics::new(format!("route[{}]", r.index), upstream)
            })
            .collect();
        Self {
            routes,
            pools,
            client,
            max_body,
            metrics,
            unrouted: RouteMetrics::new("none".into(), "none".into()),
        }
    }

    /// Handles one request that arrived on `listener` from `peer`.
    pub async fn handle(
        self: Arc<Self>,
        listener: Arc<str>,
        peer: SocketAddr,
        https: bool,
        req: Request<Incoming>,
    ) -> Result<Response<DownBody>, Infallible> {
        let started = Instant::now();
        let trace = TraceContext::from_headers(req.headers());
        let method = req.method().clone();
        let uri = req.uri().clone();
        let mut outcome = Outcome {
            route: None,
            upstream: None,
            endpoint: None,
            tries: 0,
            decisions: Decisions::default(),
        };
        let response = self
            .forward(&listener, peer, https, req, &trace, &mut outcome)
            .await;
        let mut response = response;
        strip_hop_by_hop(response.headers_mut());
        if let Ok(v) = HeaderValue::from_str(&trace.request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        // Built only when someone reads it: formatting a JSON line costs as much as proxying.
        if tracing::enabled!(target: "herd::access", tracing::Level::INFO) {
            let mut line = serde_json::json!({
                "traceId": trace.trace_id,
                "requestId": trace.request_id,
                "listener": &*listener,
                "method": method.as_str(),
                "path": uri.path(),
                "route": outcome.route,
                "upstream": outcome.upstream,
                "endpoint": outcome.endpoint.map(|e| e.to_string()),
                "status": response.status().as_u16(),
                "latencyMs": started.elapsed().as_secs_f64() * 1000.0,
                "tries": outcome.tries,
            });
            outcome.decisions.annotate(&mut line);
            tracing::info!(target: "herd::access", "{line}");
        }
        let m = outcome
            .route
            .and_then(|i| self.metrics.get(i))
            .unwrap_or(&self.unrouted);
        m.record(response.status(), started.elapsed(), outcome.tries);
        Ok(response)
    }

    async fn forward<'a>(
        &'a self,
        listener: &str,
        peer: SocketAddr,
        https: bool,
        req: Request<Incoming>,
        trace: &TraceContext,
        outcome: &mut Outcome<'a>,
    ) -> Response<DownBody> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let Some(route) = self
            .routes
            .find(listener, host, req.uri().path(), req.method())
        else {
            return answer(StatusCode::NOT_FOUND, "no route", None, &trace.request_id);
        };
        outcome.route = Some(route.index);
        let pool = self
            .pools
            .get(&route.target)
            .expect("a pool per route target");
        outcome.upstream = Some(&pool.name);
        if let Some(Err(wait)) = route.limiter.as_ref().map(|l| l.try_take()) {
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded",
                Some(&pool.name),
                &trace.request_id,
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
        // Held until the response head arrived.
        let Some(_admitted) = pool.admit() else {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream at its concurrency limit",
                Some(&pool.name),
                &trace.request_id,
            );
        };

        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                None,
                &trace.request_id,
            );
        }
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if !parts.headers.contains_key(header::HOST)
            && let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            // HTTP/2 clients send the host as :authority; HTTP/1.1 upstreams need the header.
            parts.headers.insert(header::HOST, v);
        }
        let h = &mut parts.headers;
        h.insert(
            "traceparent",
            HeaderValue::from_str(&trace.child_traceparent()).expect("ascii"),
        );
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&trace.request_id).expect("checked ascii"),
        );
        let forwarded = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(&forwarded).expect("ascii"),
        );
        let proto = if https { "https" } else { "http" };
        h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let mut body = if body.is_end_stream() {
            None
        } else {
            Some(body)
        };

        let deadline = tokio::time::Instant::now() + route.timeout;
        route.budget.deposit();
        // Only a request whose body herd never streamed can be sent again; and beyond a refused
        // connection (which reached nobody) only if its method is idempotent or the route says so.
        let replayable = body.is_none();
        let may_retry = replayable && (idempotent(&parts.method) || route.retryable);
        let mut tried = Vec::new();
        let mut retries = 0u32;
        loop {
            let pick = match pool.pick(&tried, &mut outcome.decisions) {
                Ok(p) => p,
                // Everything tried once, or the rest ejected or breaker-open: a retry may go back
                // to an endpoint already used.
                Err(NoEndpoint::AllTried | NoEndpoint::Ejected | NoEndpoint::BreakersOpen)
                    if !tried.is_empty() =>
                {
                    match pool.pick(&[], &mut outcome.decisions) {
                        Ok(p) => p,
                        Err(e) => return no_endpoint(e, pool, &trace.request_id),
                    }
                }
                Err(e) => return no_endpoint(e, pool, &trace.request_id),
            };
            tried.push(pick.addr);
            outcome.tries = tried.len();
            outcome.endpoint = Some(pick.addr);
            let uri: Uri = format!("http://{}{}", pick.addr, path_and_query)
                .parse()
                .expect("valid authority and path");
            let mut up = Request::new(match body.take() {
                Some(b) => Either::Left(Limited::new(b, self.max_body as usize)),
                None => Either::Right(Empty::new()),
            });
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = uri;
            *up.headers_mut() = parts.headers.clone();

            // An attempt ends at the route's deadline, or earlier at its per-try timeout.
            let attempt_deadline = route
                .per_try_timeout
                .map_or(deadline, |t| deadline.min(tokio::time::Instant::now() + t));
            let result = tokio::time::timeout_at(attempt_deadline, self.client.request(up)).await;
            let retry_allowed = |retries: u32| {
                may_retry
                    && route.retry.max_retries.is_none_or(|max| retries < max)
                    && tokio::time::Instant::now() < deadline
            };
            match result {
                Err(_) => {
                    pick.report(Attempt::NoAnswer, &mut outcome.decisions);
                    if attempt_deadline < deadline
                        && retry_allowed(retries)
                        && route.budget.withdraw()
                    {
                        retries += 1;
                        continue;
                    }
                    return answer(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream timed out",
                        Some(&pool.name),
                        &trace.request_id,
                    );
                }
                Ok(Ok(resp)) if resp.status().is_server_error() => {
                    let transient = matches!(resp.status().as_u16(), 502..=504);
                    let answered = Attempt::Answered(resp.status().as_u16());
                    pick.report(answered, &mut outcome.decisions);
                    if transient && retry_allowed(retries) && route.budget.withdraw() {
                        retries += 1;
                        tokio::time::sleep(route.retry.backoff.delay(retries - 1, fastrand::f64()))
                            .await;
                        continue;
                    }
                    return resp.map(Either::Left);
                }
                Ok(Ok(resp)) => {
                    let answered = Attempt::Answered(resp.status().as_u16());
                    pick.report(answered, &mut outcome.decisions);
                    return resp.map(Either::Left);
                }
                Ok(Err(e)) if e.is_connect() && replayable && tried.len() < MAX_CONNECT_TRIES => {
                    tracing::debug!(endpoint = %pick.addr, "connect failed, trying another endpoint: {e}");
                    pick.report(Attempt::NoAnswer, &mut outcome.decisions);
                    continue;
                }
                Ok(Err(e)) => {
                    if let Some((status, why)) = client_body_fault(&e) {
                        // The client's fault says nothing about the endpoint: no breaker report.
                        drop(pick);
                        return answer(status, why, Some(&pool.name), &trace.request_id);
                    }
                    pick.report(Attempt::NoAnswer, &mut outcome.decisions);
                    if !e.is_connect() && retry_allowed(retries) && route.budget.withdraw() {
                        retries += 1;
                        tokio::time::sleep(route.retry.backoff.delay(retries - 1, fastrand::f64()))
                            .await;
                        continue;
                    }
                    tracing::warn!(upstream = %pool.name, endpoint = %outcome.endpoint.map(|e| e.to_string()).unwrap_or_default(), "upstream failed: {e}");
                    let reason = if e.is_connect() {
                        "connection refused"
                    } else {
                        "upstream failed"
                    };
                    return answer(
                        StatusCode::BAD_GATEWAY,
                        reason,
                        Some(&pool.name),
                        &trace.request_id,
                    );
                }
            }
        }
    }
}
