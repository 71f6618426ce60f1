//! The route table: the first `[[route]]` whose listener, host, path prefix and method all
//! match a request decides where it goes.

use std::time::Duration;

use std::sync::Arc;

use herd_config::{RetrySpec, RouteSpec, Target};
use herd_resilience::TokenBucket;
use tower::retry::budget::TpsBudget;

/// Retries may add this share of a route's recent requests…
const RETRY_PERCENT: f32 = 0.2;
/// … plus this many per second, over this window.
const RETRY_FLOOR: u32 = 10;
const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// A route ready for matching.
#[derive(Debug)]
pub struct Route {
    /// Position in the file, shown in access logs as `route[N]`.
    pub index: usize,
    listener: Option<String>,
    host: Option<String>,
    prefix: String,
    methods: Vec<http::Method>,
    /// Destination.
    pub target: Target,
    /// Whole-request deadline.
    pub timeout: Duration,
    /// Deadline of one attempt, after which an idempotent request is retried elsewhere.
    pub per_try_timeout: Option<Duration>,
    /// Retry policy.
    pub retry: RetrySpec,
    /// Whether non-idempotent methods may be retried.
    pub retryable: bool,
    /// The route's retry budget.
    pub budget: Arc<TpsBudget>,
    /// The route's rate limit.
    pub limiter: Option<TokenBucket>,
}

/// Every route, in order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles the configured routes.
    pub fn new(specs: &[RouteSpec]) -> Self {
        let routes = specs
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                index,
                listener: r.listener.clone(),
                host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                prefix: r.path_prefix.trim_end_matches('/').to_string(),
                methods: r
                    .methods
                    .iter()
                    .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
                    .collect(),
                target: r.target.clone(),
                timeout: r.timeout,
                per_try_timeout: r.per_try_timeout,
                retry: r.retry,
                retryable: r.retryable,
                budget: herd_resilience::retry_budget(RETRY_WINDOW, RETRY_FLOOR, RETRY_PERCENT),
                limiter: r
                    .rate_limit
                    .map(|(rate, burst)| TokenBucket::new(rate, burst)),
            })
            .collect();
        Self { routes }
    }

    /// Every route, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The route for a request on `listener` with `host` (any case, port allowed), `path` and
    /// `method`.
    pub fn find(
        &self,
        listener: &str,
        host: Option<&str>,
        path: &str,
        method: &http::Method,
    ) -> Option<&Route> {
        // Route hosts are lower case, so comparing without regard to case matches the request's
        // host lower-cased, without building that string for every request.
        let host = host.map(strip_port);
        self.routes.iter().find(|r| {
            r.listener.as_deref().is_none_or(|l| l == listener)
                && r.host
                    .as_deref()
                    .is_none_or(|h| host.is_some_and(|q| q.eq_ignore_ascii_case(h)))
                && prefix_matches(&r.prefix, path)
                && (r.methods.is_empty() || r.methods.contains(method))
        })
    }
}

/// `host:port` → `host`, keeping IPv6 literals (`[::1]:80` → `[::1]`) whole.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// Whether `path` lies under `prefix` (given without its trailing `/`) at a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: Option<&str>, prefix: &str, methods: &[&str], to: &str) -> RouteSpec {
        RouteSpec {
            listener: None,
            host: host.map(String::from),
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            target: Target::Service(to.into()),
            timeout: Duration::from_secs(1),
            per_try_timeout: None,
            retry: RetrySpec::default(),
            retryable: false,
            rate_limit: None,
        }
    }

    fn target(
        t: &RouteTable,
        host: Option<&str>,
        path: &str,
        method: http::Method,
    ) -> Option<String> {
        t.find("main", host, path, &method)
            .map(|r| match &r.target {
                Target::Service(s) | Target::Upstream(s) => s.clone(),
            })
    }

    #[test]
    fn first_match_wins_on_host_prefix_and_method() {
        let t = RouteTable::new(&[
            spec(Some("api.example.com"), "/v1", &["GET"], "api-read"),
            spec(Some("api.example.com"), "/v1/", &[], "api"),
            spec(None, "/", &[], "web"),
        ]);
        use http::Method;
        assert_eq!(
            target(&t, Some("API.example.com:8080"), "/v1/items", Method::GET).as_deref(),
            Some("api-read")
        );
        assert_eq!(
            target(&t, Some("api.example.com"), "/v1/items", Method::POST).as_deref(),
            Some("api")
        );
        assert_eq!(
            target(&t, Some("api.example.com"), "/v1", Method::GET).as_deref(),
            Some("api-read")
        );
        assert_eq!(
            target(&t, Some("api.example.com"), "/v10", Method::GET).as_deref(),
            Some("web"),
            "segment boundary"
        );
        assert_eq!(
            target(&t, Some("other"), "/v1/items", Method::GET).as_deref(),
            Some("web")
        );
        assert_eq!(target(&t, None, "/", Method::GET).as_deref(), Some("web"));
    }

    #[test]
    fn no_route_without_a_match() {
        let t = RouteTable::new(&[spec(Some("a"), "/x", &[], "a")]);
        assert!(
            t.find("main", Some("a"), "/y", &http::Method::GET)
                .is_none()
        );
        assert!(
            t.find("main", Some("b"), "/x", &http::Method::GET)
                .is_none()
        );
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
