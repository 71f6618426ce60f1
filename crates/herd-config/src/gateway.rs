//! Validation of the gateway's part of `herd.toml`: `[[gateway.listener]]`, `[[route]]` and
//! `[[upstream]]`, checked against each other and against the services.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::check::{Checker, host_port};
use crate::model::{
    Backoff, GatewaySpec, HealthSpec, Limits, ListenerSpec, OutlierSpec, Regions, RetrySpec,
    RouteSpec, ServiceSpec, Target, TlsFiles, UpstreamSpec,
};
use crate::raw::{RawEndpoint, RawGateway, RawHealth, RawOutlier, RawRetry, RawRoute, RawUpstream};
use crate::source::KeyPath;

fn root(key: &str, index: usize) -> KeyPath {
    KeyPath::default().key(key).index(index)
}

fn health(c: &mut Checker<'_>, at: &KeyPath, raw: &RawHealth) -> HealthSpec {
    let path = raw.path.clone().unwrap_or_else(|| "/healthz".into());
    if !path.starts_with('/') {
        c.err(&at.key("path"), format!("must start with '/': {path:?}"));
    }
    let second = Duration::from_secs(1);
    let h = HealthSpec {
        path,
        interval: c.duration(&at.key("interval"), raw.interval.as_deref(), second),
        timeout: c.duration(&at.key("timeout"), raw.timeout.as_deref(), second),
        healthy: raw.healthy.unwrap_or(2),
        unhealthy: raw.unhealthy.unwrap_or(3),
    };
    if h.interval.is_zero() {
        c.err(&at.key("interval"), "must be longer than zero");
    }
    for (key, n) in [("healthy", h.healthy), ("unhealthy", h.unhealthy)] {
        if n == 0 {
            c.err(&at.key(key), "must be at least 1");
        }
    }
    h
}

/// Most consecutive failures a threshold may ask for; the counts are 16-bit.
const MAX_CONSECUTIVE: u32 = 1000;

fn outlier(c: &mut Checker<'_>, at: &KeyPath, raw: &RawOutlier) -> OutlierSpec {
    let d = OutlierSpec::default();
    let base = c.duration(
        &at.key("base_ejection_time"),
        raw.base_ejection_time.as_deref(),
        d.base_ejection_time,
    );
    let o = OutlierSpec {
        consecutive_5xx: raw.consecutive_5xx.unwrap_or(d.consecutive_5xx),
        consecutive_gateway_failure: raw
            .consecutive_gateway_failure
            .unwrap_or(d.consecutive_gateway_failure),
        consecutive_local_origin_failure: raw
            .consecutive_local_origin_failure
            .unwrap_or(d.consecutive_local_origin_failure),
        base_ejection_time: base,
        // As in Envoy: unset, it is the default or the base time, whichever is longer.
        max_ejection_time: c.duration(
            &at.key("max_ejection_time"),
            raw.max_ejection_time.as_deref(),
            d.max_ejection_time.max(base),
        ),
        max_ejection_percent: raw.max_ejection_percent.unwrap_or(d.max_ejection_percent),
        interval: c.duration(&at.key("interval"), raw.interval.as_deref(), d.interval),
    };
    for (key, n) in [
        ("consecutive_5xx", o.consecutive_5xx),
        ("consecutive_gateway_failure", o.consecutive_gateway_failure),
        (
            "consecutive_local_origin_failure",
            o.consecutive_local_origin_failure,
        ),
    ] {
        if n > MAX_CONSECUTIVE {
            c.err(
                &at.key(key),
                format!("must be 0 (off) to {MAX_CONSECUTIVE}, got {n}"),
            );
        }
    }
    for (key, t) in [
        ("base_ejection_time", o.base_ejection_time),
        ("interval", o.interval),
    ] {
        if t.is_zero() {
            c.err(&at.key(key), "must be longer than zero");
        }
    }
    if o.max_ejection_time < o.base_ejection_time {
        c.err(
            &at.key("max_ejection_time"),
            format!(
                "must be at least base_ejection_time ({})",
                humantime::format_duration(o.base_ejection_time)
            ),
        );
    }
    if o.max_ejection_percent > 100 {
        c.err(
            &at.key("max_ejection_percent"),
            format!("must be 0 to 100, got {}", o.max_ejection_percent),
        );
    }
    OutlierSpec {
        consecutive_5xx: o.consecutive_5xx.min(MAX_CONSECUTIVE),
        consecutive_gateway_failure: o.consecutive_gateway_failure.min(MAX_CONSECUTIVE),
        consecutive_local_origin_failure: o.consecutive_local_origin_failure.min(MAX_CONSECUTIVE),
        max_ejection_time: o.max_ejection_time.max(o.base_ejection_time),
        max_ejection_percent: o.max_ejection_percent.min(100),
        ..o
    }
}

fn retry(c: &mut Checker<'_>, at: &KeyPath, raw: Option<&RawRetry>) -> RetrySpec {
    let d = RetrySpec::default();
    let Some(raw) = raw else {
        return d;
    };
    let (d_initial, d_max) = match d.backoff {
        Backoff::Exponential { initial, max } => (initial, max),
        Backoff::Constant(x) => (x, x),
    };
    let duration = c.duration(&at.key("duration"), raw.duration.as_deref(), d_initial);
    let backoff = match raw.policy.as_deref() {
        None | Some("exponential") => Backoff::Exponential {
            initial: duration,
            max: c.duration(&at.key("maxInterval"), raw.max_interval.as_deref(), d_max),
        },
        Some("constant") => Backoff::Constant(duration),
        Some(other) => {
            c.err(
                &at.key("policy"),
                format!("unknown retry policy {other:?}: use \"constant\" or \"exponential\""),
            );
            d.backoff
        }
    };
    let max_retries = match raw.max_retries {
        None => d.max_retries,
        Some(-1) => None,
        Some(n) if (0..=100).contains(&n) => Some(n as u32),
        Some(n) => {
            c.err(
                &at.key("maxRetries"),
                format!("must be -1 (unlimited) or 0 to 100, got {n}"),
            );
            d.max_retries
        }
    };
    RetrySpec {
        max_retries,
        backoff,
    }
}

/// Checks the gateway tables; problems are pushed onto `c`.
pub(crate) fn check(
    c: &mut Checker<'_>,
    raw: RawGateway,
    routes: Vec<RawRoute>,
    upstreams: Vec<RawUpstream>,
    services: &[ServiceSpec],
) -> GatewaySpec {
    let mut spec = GatewaySpec::default();
    let at = KeyPath::default().key("gateway");
    let d = Limits::default();
    spec.limits = Limits {
        max_header_count: raw.max_header_count.unwrap_or(d.max_header_count),
        max_header_bytes: raw
            .max_header_bytes
            .map_or(d.max_header_bytes, |b| b.as_u64() as usize),
        max_body_bytes: raw.max_body_bytes.map_or(d.max_body_bytes, |b| b.as_u64()),
        header_read_timeout: c.duration(
            &at.key("header_read_timeout"),
            raw.header_read_timeout.as_deref(),
            d.header_read_timeout,
        ),
        max_pending_connections: raw
            .max_pending_connections
            .unwrap_or(d.max_pending_connections),
    };
    if spec.limits.max_pending_connections == 0 {
        c.err(&at.key("max_pending_connections"), "must be at least 1");
    }
    if spec.limits.header_read_timeout.is_zero() {
        c.err(&at.key("header_read_timeout"), "must be longer than zero");
    }
    if !(1..=10_000).contains(&spec.limits.max_header_count) {
        c.err(&at.key("max_header_count"), "must be between 1 and 10000");
    }
    if spec.limits.max_header_bytes < 8192 {
        c.err(
            &at.key("max_header_bytes"),
            "must be at least 8KiB (8192 bytes)",
        );
    }
    let declared_listeners = raw.listener.len();
    let mut names = HashSet::new();
    for (index, l) in raw.listener.into_iter().enumerate() {
        let at = KeyPath::default()
            .key("gateway")
            .key("listener")
            .index(index);
        if !names.insert(l.name.clone()) {
            c.err(
                &at.key("name"),
                format!("listener {:?} is defined twice", l.name),
            );
        }
        let tls = l.tls.as_ref().map(|t| TlsFiles {
            cert: c.file(&at.key("tls").key("cert"), &t.cert),
            key: c.file(&at.key("tls").key("key"), &t.key),
        });
        if let Some(listen) = c.address(&at.key("listen"), &l.listen) {
            spec.listeners.push(ListenerSpec {
                name: l.name,
                listen,
                tls,
                index,
            });
        }
    }

    spec.regions = Regions {
        local: raw.region.clone(),
        failover: raw.failover.clone(),
        overprovisioning: raw.overprovisioning.unwrap_or(1.4),
    };
    if !(1.0..=10.0).contains(&spec.regions.overprovisioning) {
        c.err(&at.key("overprovisioning"), "must be between 1.0 and 10.0");
    }
    let all_regions: Vec<String> = upstreams
        .iter()
        .flat_map(|u| &u.endpoints)
        .filter_map(|e| match e {
            RawEndpoint::Placed(p) => p.region.clone(),
            RawEndpoint::Plain(_) => None,
        })
        .collect();
    let mut upstream_names = HashSet::new();
    for (index, u) in upstreams.into_iter().enumerate() {
        let at = root("upstream", index);
        if !upstream_names.insert(u.name.clone()) {
            c.err(
                &at.key("name"),
                format!("upstream {:?} is defined twice", u.name),
            );
        }
        if u.endpoints.is_empty() {
            c.err(
                &at.key("endpoints"),
                "needs at least one \"IP:PORT\" or \"name:port\"",
            );
        }
        let mut endpoints = Vec::new();
        let mut names = Vec::new();
        let mut priorities = Vec::new();
        for (i, e) in u.endpoints.iter().enumerate() {
            let e = match e {
                RawEndpoint::Plain(text) => text,
                RawEndpoint::Placed(p) => {
                    let address_at = at.key("endpoints").index(i).key("address");
                    if let Some(addr) = c.address(&address_at, &p.address) {
                        endpoints.push(addr);
                        priorities.push(spec.regions.priority(p.region.as_deref(), &all_regions));
                    }
                    continue;
                }
            };
            if let Ok(addr) = e.parse::<SocketAddr>() {
                endpoints.push(addr);
                priorities.push(0);
                continue;
            }
            match host_port(e) {
                Some(name) => names.push(name),
                None => c.err(
                    &at.key("endpoints").index(i),
                    format!("not an endpoint: {e:?}; write \"IP:PORT\" or \"name:port\""),
                ),
            }
        }
        let dns_refresh = c.duration(
            &at.key("dns_refresh"),
            u.dns_refresh.as_deref(),
            Duration::from_secs(5),
        );
        let balance = c.balance(&at.key("balance"), u.balance.as_deref());
        if u.max_concurrency == Some(0) {
            c.err(&at.key("max_concurrency"), "must be at least 1");
        }
        let breaker = c.breaker(&at.key("breaker"), u.breaker.as_ref());
        let health = u.health.as_ref().map(|h| health(c, &at.key("health"), h));
        let outlier = u
            .outlier
            .as_ref()
            .map(|o| outlier(c, &at.key("outlier"), o));
        spec.upstreams.push(UpstreamSpec {
            name: u.name,
            endpoints,
            priorities,
            names,
            dns_refresh,
            balance,
            breaker,
            health,
            outlier,
            max_concurrency: u.max_concurrency,
        });
    }

    for (index, r) in routes.into_iter().enumerate() {
        let at = root("route", index);
        if let Some(l) = &r.listener
            && !names.contains(l)
        {
            c.err(
                &at.key("listener"),
                format!("no [[gateway.listener]] named {l:?}"),
            );
        }
        let target = match (r.service, r.upstream) {
            (Some(s), None) => {
                if !services.iter().any(|svc| svc.name == s) {
                    c.err(&at.key("service"), format!("no [[service]] named {s:?}"));
                } else if services
                    .iter()
                    .any(|svc| svc.name == s && svc.listen.is_none() && !svc.own_port)
                {
                    c.err(
                        &at.key("service"),
                        format!("service {s:?} has neither `listen` nor `port = \"auto\"`"),
                    );
                }
                Target::Service(s)
            }
            (None, Some(u)) => {
                if !upstream_names.contains(&u) {
                    c.err(&at.key("upstream"), format!("no [[upstream]] named {u:?}"));
                }
                Target::Upstream(u)
            }
            _ => {
                c.err(&at, "needs exactly one of `service` or `upstream`");
                continue;
            }
        };
        let path_prefix = r.path_prefix.unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') {
            c.err(
                &at.key("path_prefix"),
                format!("must start with '/': {path_prefix:?}"),
            );
        }
        let methods: Vec<String> = r
            .methods
            .unwrap_or_default()
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        if methods
            .iter()
            .any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            c.err(&at.key("methods"), "methods are words such as \"GET\"");
        }
        let timeout = c.duration(
            &at.key("timeout"),
            r.timeout.as_deref(),
            Duration::from_secs(30),
        );
        let retry = retry(c, &at.key("retries"), r.retries.as_ref());
        let rate_limit = r.rate_limit.as_ref().and_then(|l| {
            let burst = l.burst.unwrap_or(l.rate.ceil() as u32).max(1);
            if l.rate > 0.0 && l.rate.is_finite() {
                Some((l.rate, burst))
            } else {
                c.err(
                    &at.key("rate_limit").key("rate"),
                    "must be a positive number",
                );
                None
            }
        });
        let per_try_timeout = r
            .per_try_timeout
            .as_deref()
            .map(|text| c.duration(&at.key("per_try_timeout"), Some(text), timeout));
        spec.routes.push(RouteSpec {
            listener: r.listener,
            host: r.host.map(|h| h.to_ascii_lowercase()),
            path_prefix,
            methods,
            target,
            timeout,
            per_try_timeout,
            retry,
            retryable: r.retryable.unwrap_or(false),
            rate_limit,
        });
    }
    if !spec.routes.is_empty() && declared_listeners == 0 {
        c.err(
            &root("route", 0),
            "routes need a [[gateway.listener]] to receive requests",
        );
    }
    spec
}
