//! The overview as plain text: one table per section, as `herd monit` prints it.

use std::fmt::Write as _;
use std::time::Duration;

use herd_telemetry::Overview;

use crate::render;

/// Columns padded to their widest cell, two spaces apart.
fn table(out: &mut String, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    let _ = writeln!(out, "{title}");
    if rows.is_empty() {
        out.push_str("  (none)\n\n");
        return;
    }
    let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    all.extend(rows);
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            all.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in all {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    out.push('\n');
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn ms(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x >= 100.0 => format!("{x:.0}ms"),
        Some(x) if x >= 1.0 => format!("{x:.1}ms"),
        Some(x) => format!("{x:.2}ms"),
    }
}

/// `HH:MM:SS` (UTC) of a time in milliseconds since the Unix epoch, with milliseconds when
/// `precise`.
pub fn clock(time_ms: u64, precise: bool) -> String {
    let s = time_ms / 1000;
    let hms = format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60);
    if precise {
        format!("{hms}.{:03}", time_ms % 1000)
    } else {
        hms
    }
}

/// The whole overview.
pub fn render(o: &Overview) -> String {
    let mut out = String::new();
    let interval = if o.interval_secs > 0.0 {
        format!("rates over the last {:.1}s", o.interval_secs)
    } else {
        "rates after the next sample".into()
    };
    let _ = writeln!(out, "herd  {} UTC  ({interval})\n", clock(o.time_ms, false));

    let mut rows = Vec::new();
    for s in &o.services {
        for i in &s.instances {
            rows.push(vec![
                s.name.clone(),
                i.id.to_string(),
                i.state.clone(),
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.uptime_ms
                    .map_or("-".into(), |u| render::uptime(Duration::from_millis(u))),
                i.restarts.to_string(),
                format!("{:.1}%", i.cpu_percent),
                render::memory(i.memory_bytes),
            ]);
        }
    }
    let ready: usize = o.services.iter().map(|s| s.ready).sum();
    let total: usize = o.services.iter().map(|s| s.instances.len()).sum();
    table(
        &mut out,
        &format!("SERVICES  {ready}/{total} instances ready"),
        &[
            "SERVICE", "ID", "STATE", "PID", "UPTIME", "RESTARTS", "CPU", "MEMORY",
        ],
        rows,
    );

    let rows = o
        .routes
        .iter()
        .map(|r| {
            vec![
                r.route.clone(),
                r.upstream.clone(),
                rate(r.rps),
                ms(r.p50_ms),
                ms(r.p99_ms),
                rate(r.error_rps),
                r.requests.to_string(),
                r.errors.to_string(),
                r.retries.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        "ROUTES",
        &[
            "ROUTE", "UPSTREAM", "REQ/S", "P50", "P99", "5XX/S", "REQUESTS", "5XX", "RETRIES",
        ],
        rows,
    );

    let rows = o
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.upstream.clone(),
                e.endpoint.clone(),
                e.breaker.clone(),
                match e.healthy {
                    None => "-".into(),
                    Some(true) => "healthy".into(),
                    Some(false) => "unhealthy".into(),
                },
                rate(e.attempts_rps),
                e.failures.to_string(),
                e.ejections.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        "ENDPOINTS",
        &[
            "UPSTREAM",
            "ENDPOINT",
            "BREAKER",
            "HEALTH",
            "ATTEMPTS/S",
            "FAILURES",
            "EJECTIONS",
        ],
        rows,
    );

    let rows = o
        .publishers
        .iter()
        .map(|p| {
            vec![
                p.pubsub.clone(),
                rate(p.rps),
                p.published.to_string(),
                p.errors.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        "PUBLISHING",
        &["PUBSUB", "PUBLISH/S", "PUBLISHED", "ERRORS"],
        rows,
    );

    let rows = o
        .subscriptions
        .iter()
        .map(|s| {
            vec![
                s.pubsub.clone(),
                s.topic.clone(),
                s.app.clone(),
                rate(s.rps),
                s.in_flight.to_string(),
                s.delivered.to_string(),
                s.retries.to_string(),
                s.dead_letters.to_string(),
                s.dropped.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        "SUBSCRIPTIONS",
        &[
            "PUBSUB",
            "TOPIC",
            "APP",
            "DELIVERIES/S",
            "IN FLIGHT",
            "DELIVERED",
            "RETRIES",
            "DEAD LETTERS",
            "DROPPED",
        ],
        rows,
    );

    let rows = o
        .stores
        .iter()
        .map(|s| {
            vec![
                s.kind.clone(),
                s.store.clone(),
                rate(s.rps),
                ms(s.p50_ms),
                ms(s.p99_ms),
                s.requests.to_string(),
                s.errors.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        "STATE, LOCKS AND INVOCATION",
        &[
            "KIND",
            "STORE/APP",
            "REQ/S",
            "P50",
            "P99",
            "REQUESTS",
            "ERRORS",
        ],
        rows,
    );

    let rows = o
        .traces
        .iter()
        .take(10)
        .map(|t| {
            vec![
                clock(t.time_ms, true),
                t.source.clone(),
                t.target.clone(),
                t.status.to_string(),
                ms(Some(t.latency_ms)),
                t.trace_id.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &mut out,
        "RECENT REQUESTS",
        &["TIME", "SOURCE", "TARGET", "STATUS", "LATENCY", "TRACE"],
        rows,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_telemetry::overview::{InstanceView, RouteView, ServiceView};

    #[test]
    fn sections_show_the_overview_values() {
        let o = Overview {
            time_ms: 3_723_004,
            interval_secs: 1.0,
            services: vec![ServiceView {
                name: "web".into(),
                listen: None,
                ready: 1,
                instances: vec![InstanceView {
                    id: 0,
                    pid: Some(42),
                    port: None,
                    state: "ready".into(),
                    uptime_ms: Some(5_000),
                    restarts: 3,
                    cpu_percent: 1.5,
                    memory_bytes: 2_000_000,
                }],
            }],
            routes: vec![RouteView {
                route: "route[0]".into(),
                upstream: "web".into(),
                requests: 1234,
                rps: 12.5,
                p50_ms: Some(0.25),
                p99_ms: None,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&o);
        assert!(text.starts_with("herd  01:02:03 UTC"), "{text}");
        assert!(text.contains("SERVICES  1/1 instances ready"), "{text}");
        let service = text.lines().find(|l| l.starts_with("  web ")).unwrap();
        for v in ["ready", "42", "5s", "3", "1.5%", "2.0 MB"] {
            assert!(service.contains(v), "{v} in {service}");
        }
        let route = text.lines().find(|l| l.contains("route[0]")).unwrap();
        for v in ["12.5", "0.25ms", "1234"] {
            assert!(route.contains(v), "{v} in {route}");
        }
        assert!(text.contains("SUBSCRIPTIONS\n  (none)"), "{text}");
    }
}
