//! Forwarding one request: route, choose an endpoint, pass it on with trace context, answer.
//!
//! A head HTTP says to refuse (no or two `Host`, `CONNECT`, an unimplemented transfer coding;
//! `herd_upstream::inbound`) is answered before routing and its connection closed.
//! Hop-by-hop headers are removed both ways; `x-request-id`, `traceparent`, `x-forwarded-for`
//! and `x-forwarded-proto` are set upstream. A request without a body is sent as an empty body,
//! so when an endpoint refuses the connection (an instance that just stopped), it is sent again
//! to another endpoint: nothing reached the first one, whatever the method. The same holds when
//! it went out on a reused kept-alive connection that the endpoint closed before any byte of an
//! answer: the endpoint closed a connection it saw idle, without reading the request (the client's
//! `Error::Unanswered`; at most `MAX_CONNECT_TRIES` endpoints either way). A bodyless request
//! with an idempotent method (or on a `retryable` route) is also retried after a 502/503/504 or a
//! reset, with the route's backoff, up to `maxRetries` and within the route's retry budget. A
//! request with a body is sent once. Every attempt's outcome feeds the endpoint's breaker and
//! ejection counts. Failures are answered with a short JSON body naming the upstream
//! (`answer.rs`: 404 no route, 503 no endpoint, 502 upstream failure, 504 timeout). Once
//! answered, the request's access line, metrics and recent entry are written (`access.rs`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herd_config::Target;
use herd_telemetry::traceparent::TRACEPARENT;
use herd_upstream::inbound::head_fault;
use herd_upstream::{Attempt, Client, NoEndpoint, Pool, idempotent, strip_hop_by_hop};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full, Limited};
use hyper::body::{Body as _, Incoming};
use tower::retry::budget::Budget;

use crate::access::{self, Outcome, RouteMetrics};
use crate::answer::{DownBody, answer, client_body_fault, no_endpoint, refused};
use crate::route::RouteTable;
use crate::trace::{self, TraceContext, X_REQUEST_ID};

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
    /// Whether requests get access lines (when `herd::access` is read at info).
    access_lines: bool,
}

/// The request target sent upstream: origin-form (`/path?query`), as an HTTP/1.1 server
/// expects it from a client that is not talking to a proxy. HTTP/2 requests carry an absolute
/// URI. (`CONNECT` never gets here: it is refused with 405.)
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
            access_lines: true,
        }
    }

    /// The same proxy as a service's front: `route` is the route label of its metrics, and it
    /// writes no access lines (a service's own traffic is the app's to log).
    pub fn front(mut self, route: &str) -> Self {
        self.metrics = self
            .pools
            .iter()
            .map(|p| RouteMetrics::new(route.to_string(), p.name.clone()))
            .collect();
        self.access_lines = false;
        self
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
        let access_log = (self.access_lines && access::enabled())
            .then(|| (req.method().clone(), req.uri().clone()));
        let version = req.version();
        let mut outcome = Outcome::default();
        let fault = head_fault(req.version(), req.method(), req.headers());
        let mut response = match fault {
            None => self.forward(&peer, req, &trace, &mut outcome).await,
            Some(f) => answer(f.status, f.reason, None, &trace),
        };
        strip_hop_by_hop(response.headers_mut());
        if fault.is_some() {
            refused(&mut response, version);
        }
        response
            .headers_mut()
            .insert(X_REQUEST_ID, trace.request_id().clone());
        if let Some(request) = &access_log {
            access::log(
                request,
                &peer.listener,
                &trace,
                &outcome,
                response.status(),
                started,
            );
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
        m.finished(response.status(), started, outcome.tries, &trace);
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
            *up.uri_mut() = target.clone();
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
                // Neither reached the endpoint's app (see the module docs): any method goes again.
                Ok(Err(e))
                    if (e.is_connect() || e.is_unanswered())
                        && replayable
                        && attempt < MAX_CONNECT_TRIES =>
                {
                    tracing::debug!(endpoint = %pick.addr, trace_id = trace.trace_id(), "not answered, trying another endpoint: {e}");
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
