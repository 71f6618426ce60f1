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
use herd_telemetry::traceparent::TRACEPARENT;
use herd_upstream::{
    Attempt, Client, ClientBody, Decisions, NoEndpoint, Pool, idempotent, strip_hop_by_hop,
};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use tower::retry::budget::Budget;

use crate::route::RouteTable;
use crate::trace::{self, TraceContext, X_REQUEST_ID};

/// What goes back to the client: the upstream's body, or herd's own answer.
pub type DownBody = Either<ClientBody, Full<Bytes>>;

/// Endpoints tried for a request whose body allows it, before answering 502.
const MAX_CONNECT_TRIES: usize = 3;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Where a connection's requests come from, set up once per connection.
pub struct Peer {
    /// The listener's name.
    pub listener: Arc<str>,
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub https: bool,
    /// The client's IP address as an `x-forwarded-for` value.
    forwarded_for: HeaderValue,
}

impl Peer {
    /// A connection from `addr` on `listener`.
    pub fn new(listener: Arc<str>, addr: SocketAddr, https: bool) -> Self {
        let forwarded_for = HeaderValue::from_maybe_shared(Bytes::from(addr.ip().to_string()))
            .expect("an IP address is a valid header value");
        Self {
            listener,
            addr,
            https,
            forwarded_for,
        }
    }
}

/// The request path's shared state.
pub struct Proxy {
    routes: RouteTable,
    /// The pool of each route, by route index (looked up once here, not per request).
    pools: Vec<Arc<Pool>>,
    client: Client,
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
    /// `route → upstream`, shared by the entries this route adds to the recent requests.
    target: Arc<str>,
}

impl RouteMetrics {
    fn new(route: String, upstream: String) -> Self {
        let target = Arc::from(format!("{route} → {upstream}"));
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
            target,
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

/// herd's own answer: `{"error": ..., "upstream": ..., "requestId": ...}`.
fn answer(
    status: StatusCode,
    error: &str,
    upstream: Option<&str>,
    trace: &TraceContext,
) -> Response<DownBody> {
    let body = serde_json::json!({
        "error": error,
        "upstream": upstream,
        "requestId": trace.request_id_str(),
    });
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(X_REQUEST_ID, trace.request_id().clone());
    r
}

/// The answer when no endpoint can take the request.
fn no_endpoint(why: NoEndpoint, pool: &Pool, trace: &TraceContext) -> Response<DownBody> {
    match why {
        NoEndpoint::Empty => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ready endpoint",
            Some(&pool.name),
            trace,
        ),
        NoEndpoint::BreakersOpen => {
            let mut r = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "every endpoint's circuit breaker is open",
                Some(&pool.name),
                trace,
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
                trace,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        NoEndpoint::AllTried => answer(
            StatusCode::BAD_GATEWAY,
            "every endpoint refused the connection",
            Some(&pool.name),
            trace,
        ),
    }
}

/// The request target sent upstream: origin-form (`/path?query`), as an HTTP/1.1 server
/// expects it from a client that is not talking to a proxy. HTTP/2 requests carry an absolute
/// URI. `CONNECT` takes the endpoint's authority instead, per attempt.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(_) if uri.scheme().is_none() && uri.authority().is_none() => uri.clone(),
        Some(pq) if pq.as_str() != "/" => Uri::from(pq.clone()),
        _ => Uri::default(),
    }
}

/// `Host` for an HTTP/1.0 request that came without one: the endpoint, its port left out when
/// it is 80.
fn endpoint_host(addr: SocketAddr) -> HeaderValue {
    let host = if addr.port() == 80 {
        match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        }
    } else {
        addr.to_string()
    };
    HeaderValue::from_str(&host).expect("an address is a valid header value")
}

/// One access-log line, serialized straight from borrowed fields (building a
/// `serde_json::Value` first costs a map node and a key string per field). The fields are in
/// the order `serde_json` prints a map's keys, sorted, as earlier lines were.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessLine<'a> {
    /// `ip:port`, or null when no endpoint was tried.
    endpoint: Option<SocketAddr>,
    latency_ms: f64,
    listener: &'a str,
    method: &'a str,
    path: &'a str,
    request_id: &'a str,
    route: Option<usize>,
    status: u16,
    trace_id: &'a str,
    tries: usize,
    upstream: Option<&'a str>,
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
        let metrics = routes
            .iter()
            .map(|r| {
                let upstream = pools
                    .get(&r.target)
                    .map_or("none".into(), |p| p.name.clone());
                RouteMetrics::new(format!("route[{}]", r.index), upstream)
            })
            .collect();
        let by_route = routes
            .iter()
            .map(|r| {
                pools
                    .get(&r.target)
                    .expect("a pool per route target")
                    .clone()
            })
            .collect();
        Self {
            routes,
            pools: by_route,
            client: Client::new(),
            max_body,
            metrics,
            unrouted: RouteMetrics::new("none".into(), "none".into()),
        }
    }

    /// Handles one request that arrived from `peer`.
    pub async fn handle(
        self: Arc<Self>,
        peer: Arc<Peer>,
        req: Request<Incoming>,
    ) -> Result<Response<DownBody>, Infallible> {
        let started = Instant::now();
        let mut trace = TraceContext::from_headers(req.headers());
        // The SERVER span, only when spans are exported (otherwise one check of an `Option`).
        let span = herd_telemetry::tracer().map(|tracer| {
            trace.start_span(
                tracer,
                req.method(),
                req.uri(),
                peer.addr,
                peer.https,
                &peer.listener,
            )
        });
        // Built only when someone reads it: formatting a JSON line costs as much as proxying.
        let access_log = tracing::enabled!(target: "herd::access", tracing::Level::INFO)
            .then(|| (req.method().clone(), req.uri().clone()));
        let mut outcome = Outcome {
            route: None,
            upstream: None,
            endpoint: None,
            tries: 0,
            decisions: Decisions::default(),
        };
        let mut response = self.forward(&peer, req, &trace, &mut outcome).await;
        strip_hop_by_hop(response.headers_mut());
        response
            .headers_mut()
            .insert(X_REQUEST_ID, trace.request_id().clone());
        if let Some((method, uri)) = access_log {
            let line = AccessLine {
                endpoint: outcome.endpoint,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                listener: &peer.listener,
                method: method.as_str(),
                path: uri.path(),
                request_id: trace.request_id_str(),
                route: outcome.route,
                status: response.status().as_u16(),
                trace_id: trace.trace_id(),
                tries: outcome.tries,
                upstream: outcome.upstream,
            };
            let line = if outcome.decisions.is_empty() {
                serde_json::to_string(&line)
            } else {
                // Skipped endpoints and state changes are rare: added to a map, as a map sorts.
                serde_json::to_value(&line).map(|mut v| {
                    outcome.decisions.annotate(&mut v);
                    v.to_string()
                })
            }
            .expect("an access line serializes");
            tracing::info!(target: "herd::access", "{line}");
        }
        if let Some(span) = span {
            trace::end_span(
                span,
                trace::SpanEnd {
                    status: response.status(),
                    upstream: outcome.upstream,
                    endpoint: outcome.endpoint,
                    tries: outcome.tries,
                },
            );
        }
        let m = outcome
            .route
            .and_then(|i| self.metrics.get(i))
            .unwrap_or(&self.unrouted);
        let elapsed = started.elapsed();
        m.record(response.status(), elapsed, outcome.tries);
        // The dashboard's recent requests: a small struct into a fixed ring, nothing formatted.
        herd_telemetry::recent::push(herd_telemetry::recent::Finished::new(
            herd_telemetry::recent::Source::Gateway,
            m.target.clone(),
            trace.trace_id().as_bytes().try_into().ok(),
            response.status().as_u16(),
            started,
            elapsed,
        ));
        Ok(response)
    }

    async fn forward<'a>(
        &'a self,
        peer: &Peer,
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
            .find(&peer.listener, host, req.uri().path(), req.method())
        else {
            return answer(StatusCode::NOT_FOUND, "no route", None, trace);
        };
        outcome.route = Some(route.index);
        let pool = &*self.pools[route.index];
        outcome.upstream = Some(&pool.name);
        if let Some(Err(wait)) = route.limiter.as_ref().map(|l| l.try_take()) {
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded",
                Some(&pool.name),
                trace,
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
                trace,
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
                trace,
            );
        }
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // Without a host still after this (an HTTP/1.0 request), each attempt names its endpoint.
        let mut host_missing = !parts.headers.contains_key(header::HOST);
        if host_missing
            && let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            // HTTP/2 clients send the host as :authority; HTTP/1.1 upstreams need the header.
            parts.headers.insert(header::HOST, v);
            host_missing = false;
        }
        let h = &mut parts.headers;
        // Room for the headers added below at once, rather than growing the map step by step.
        h.reserve(4);
        h.insert(TRACEPARENT, trace.child_traceparent());
        h.insert(X_REQUEST_ID, trace.request_id().clone());
        let forwarded = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => {
                HeaderValue::from_str(&format!("{prior}, {}", peer.addr.ip())).expect("ascii")
            }
            None => peer.forwarded_for.clone(),
        };
        h.insert(X_FORWARDED_FOR, forwarded);
        let proto = if peer.https { "https" } else { "http" };
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        let target = origin_form(&parts.uri);
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
        // Endpoints of earlier attempts; allocated only when there is a second attempt.
        let mut tried: Vec<SocketAddr> = Vec::new();
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
                        Err(e) => return no_endpoint(e, pool, trace),
                    }
                }
                Err(e) => return no_endpoint(e, pool, trace),
            };
            let attempt = tried.len() + 1;
            outcome.tries = attempt;
            outcome.endpoint = Some(pick.addr);
            let mut up = Request::new(match body.take() {
                Some(b) => Either::Left(Limited::new(b, self.max_body as usize)),
                None => Either::Right(Full::default()),
            });
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = if parts.method == Method::CONNECT {
                Uri::from_maybe_shared(Bytes::from(pick.addr.to_string()))
                    .expect("an address is an authority")
            } else {
                target.clone()
            };
            // A request that may go out again keeps its headers for the next attempt.
            *up.headers_mut() = if replayable {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            if host_missing {
                up.headers_mut()
                    .insert(header::HOST, endpoint_host(pick.addr));
            }

            // An attempt ends at the route's deadline, or earlier at its per-try timeout.
            let attempt_deadline = route
                .per_try_timeout
                .map_or(deadline, |t| deadline.min(tokio::time::Instant::now() + t));
            let result =
                tokio::time::timeout_at(attempt_deadline, self.client.send(pick.addr, up)).await;
            let retry_allowed = |retries: u32| {
                may_retry
                    && route.retry.max_retries.is_none_or(|max| retries < max)
                    && tokio::time::Instant::now() < deadline
            };
            match result {
                Err(_) => {
                    let addr = pick.addr;
                    pick.report(Attempt::NoAnswer, &mut outcome.decisions);
                    if attempt_deadline < deadline
                        && retry_allowed(retries)
                        && route.budget.withdraw()
                    {
                        retries += 1;
                        tried.push(addr);
                        continue;
                    }
                    return answer(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream timed out",
                        Some(&pool.name),
                        trace,
                    );
                }
                Ok(Ok(resp)) if resp.status().is_server_error() => {
                    let transient = matches!(resp.status().as_u16(), 502..=504);
                    let addr = pick.addr;
                    let answered = Attempt::Answered(resp.status().as_u16());
                    pick.report(answered, &mut outcome.decisions);
                    if transient && retry_allowed(retries) && route.budget.withdraw() {
                        retries += 1;
                        tried.push(addr);
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
                Ok(Err(e)) if e.is_connect() && replayable && attempt < MAX_CONNECT_TRIES => {
                    tracing::debug!(endpoint = %pick.addr, trace_id = trace.trace_id(), "connect failed, trying another endpoint: {e}");
                    let addr = pick.addr;
                    pick.report(Attempt::NoAnswer, &mut outcome.decisions);
                    tried.push(addr);
                    continue;
                }
                Ok(Err(e)) => {
                    if let Some((status, why)) = client_body_fault(&e) {
                        // The client's fault says nothing about the endpoint: no breaker report.
                        drop(pick);
                        return answer(status, why, Some(&pool.name), trace);
                    }
                    let addr = pick.addr;
                    pick.report(Attempt::NoAnswer, &mut outcome.decisions);
                    if !e.is_connect() && retry_allowed(retries) && route.budget.withdraw() {
                        retries += 1;
                        tried.push(addr);
                        tokio::time::sleep(route.retry.backoff.delay(retries - 1, fastrand::f64()))
                            .await;
                        continue;
                    }
                    tracing::warn!(
                        upstream = %pool.name,
                        endpoint = %addr,
                        trace_id = trace.trace_id(),
                        "upstream failed: {e}"
                    );
                    let reason = if e.is_connect() {
                        "connection refused"
                    } else {
                        "upstream failed"
                    };
                    return answer(StatusCode::BAD_GATEWAY, reason, Some(&pool.name), trace);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_read_as_before() {
        let line = AccessLine {
            endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            latency_ms: 1.25,
            listener: "main",
            method: "GET",
            path: "/a\"b",
            request_id: "abc",
            route: Some(0),
            status: 200,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            tries: 1,
            upstream: None,
        };
        // The line as a `serde_json::Value` map prints it (sorted keys).
        let map = serde_json::json!({
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
            "requestId": "abc",
            "listener": "main",
            "method": "GET",
            "path": "/a\"b",
            "route": 0,
            "upstream": null,
            "endpoint": "127.0.0.1:8080",
            "status": 200,
            "latencyMs": 1.25,
            "tries": 1,
        });
        assert_eq!(serde_json::to_string(&line).unwrap(), map.to_string());
    }

    #[test]
    fn upstream_requests_use_origin_form() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(origin_form(&uri("/a/b?c=d")), "/a/b?c=d");
        assert_eq!(origin_form(&uri("http://example.com/a?b")), "/a?b");
        assert_eq!(origin_form(&uri("http://example.com")), "/");
        assert_eq!(origin_form(&uri("/")), "/");
        assert_eq!(origin_form(&uri("*")), "*");
    }

    #[test]
    fn a_missing_host_names_the_endpoint() {
        let host = |a: &str| endpoint_host(a.parse().unwrap());
        assert_eq!(host("10.0.0.1:8080"), "10.0.0.1:8080");
        assert_eq!(host("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(host("[::1]:80"), "[::1]");
        assert_eq!(host("[::1]:8080"), "[::1]:8080");
    }
}
