//! Resilience policies: `[resiliency]` of herd.toml and Dapr `kind: Resiliency` files, checked
//! into [`Resiliency`] documents (`herd-resilience` types, resolved per target at run time by
//! `herd_resilience::Policies`).
//!
//! Both sources share the serde structs of `raw/resiliency.rs` and one check, [`build`], which
//! reports problems by key path under the document's root (`resiliency` in herd.toml, `spec` in
//! a YAML document); each source turns a path into its own file, line and key. A target naming a
//! policy that does not exist, a bad duration, a bad `trip` expression or a bad `maxRetries` is
//! an error and herd refuses to start.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use herd_resilience::{
    Backoff, BreakerConfig, ComponentTargets, Resiliency, Retry, TargetPolicies, Trip,
};

use serde::Deserialize;

use crate::check::Checker;
use crate::raw::{RawPolicyBreaker, RawPolicyRetry, RawResiliency, RawTarget};
use crate::source::{ConfigError, KeyPath};

/// Reports a problem at a key path (segments under the document's root).
pub(crate) type Report<'a> = dyn FnMut(&[&str], String) + 'a;

fn duration(report: &mut Report<'_>, at: &[&str], text: &str) -> Option<Duration> {
    match crate::duration::parse(text) {
        Ok(d) => Some(d),
        Err(e) => {
            report(
                at,
                format!("not a duration: {text:?} ({e}); write e.g. \"500ms\" or \"5s\""),
            );
            None
        }
    }
}

fn retry(report: &mut Report<'_>, name: &str, raw: &RawPolicyRetry) -> Retry {
    let at = |key: &'static str| ["policies", "retries", name, key];
    let exponential = match raw.policy.as_deref() {
        None | Some("constant") => false,
        Some("exponential") => true,
        Some(other) => {
            report(
                &at("policy"),
                format!("unknown retry policy {other:?}: use \"constant\" or \"exponential\""),
            );
            false
        }
    };
    let first_default = if exponential {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let first = raw
        .duration
        .as_deref()
        .and_then(|d| duration(report, &at("duration"), d))
        .unwrap_or(first_default);
    let max = raw
        .max_interval
        .as_deref()
        .and_then(|d| duration(report, &at("maxInterval"), d))
        .unwrap_or(Duration::from_secs(60));
    if raw.max_interval.is_some() && !exponential {
        report(
            &at("maxInterval"),
            "only used with policy = \"exponential\"".into(),
        );
    }
    if exponential && first > max {
        report(
            &at("duration"),
            "must not be longer than maxInterval".into(),
        );
    }
    let max_retries = match raw.max_retries {
        None | Some(-1) => None,
        Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
        Some(n) => {
            report(
                &at("maxRetries"),
                format!("must be -1 (retry forever) or at least 0, got {n}"),
            );
            None
        }
    };
    Retry {
        backoff: if exponential {
            Backoff::Exponential {
                initial: first,
                max,
            }
        } else {
            Backoff::Constant(first)
        },
        max_retries,
    }
}

fn breaker(report: &mut Report<'_>, name: &str, raw: &RawPolicyBreaker) -> BreakerConfig {
    let at = |key: &'static str| ["policies", "circuitBreakers", name, key];
    let trip = match raw.trip.as_deref().map(Trip::parse) {
        None => Trip::parse("consecutiveFailures > 5").expect("valid expression"),
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            report(&at("trip"), e.to_string());
            Trip::consecutive_failures(6)
        }
    };
    let max_requests = raw.max_requests.unwrap_or(1);
    if max_requests == 0 {
        report(&at("maxRequests"), "must be at least 1".into());
    }
    BreakerConfig {
        trip,
        interval: raw
            .interval
            .as_deref()
            .and_then(|d| duration(report, &at("interval"), d))
            .unwrap_or(Duration::ZERO),
        timeout: raw
            .timeout
            .as_deref()
            .and_then(|d| duration(report, &at("timeout"), d))
            .unwrap_or(Duration::from_secs(60)),
        max_requests: max_requests.max(1),
    }
}

/// The names a target uses, each checked against the document's policies.
fn target(
    report: &mut Report<'_>,
    doc: &Resiliency,
    at: &[&str],
    raw: Option<&RawTarget>,
) -> TargetPolicies {
    let Some(raw) = raw else {
        return TargetPolicies::default();
    };
    let mut check = |key: &str, name: &Option<String>, known: bool, kind: &str| {
        if let Some(name) = name
            && !known
        {
            let mut path = at.to_vec();
            path.push(key);
            report(
                &path,
                format!("no {kind} policy named {name:?} in policies.{kind}"),
            );
        }
    };
    let has = |name: &Option<String>, f: &dyn Fn(&str) -> bool| name.as_deref().is_none_or(f);
    check(
        "timeout",
        &raw.timeout,
        has(&raw.timeout, &|n| doc.timeouts.contains_key(n)),
        "timeouts",
    );
    check(
        "retry",
        &raw.retry,
        has(&raw.retry, &|n| doc.retries.contains_key(n)),
        "retries",
    );
    check(
        "circuitBreaker",
        &raw.circuit_breaker,
        has(&raw.circuit_breaker, &|n| {
            doc.circuit_breakers.contains_key(n)
        }),
        "circuitBreakers",
    );
    TargetPolicies {
        timeout: raw.timeout.clone(),
        retry: raw.retry.clone(),
        circuit_breaker: raw.circuit_breaker.clone(),
    }
}

/// Checks one document, reporting every problem; `name` and `scopes` are its own.
pub(crate) fn build(
    raw: &RawResiliency,
    name: String,
    scopes: Vec<String>,
    report: &mut Report<'_>,
) -> Resiliency {
    let mut doc = Resiliency {
        name,
        scopes,
        ..Resiliency::default()
    };
    for (name, text) in &raw.policies.timeouts {
        if let Some(d) = duration(report, &["policies", "timeouts", name], text) {
            doc.timeouts.insert(name.clone(), d);
        }
    }
    for (name, r) in &raw.policies.retries {
        doc.retries.insert(name.clone(), retry(report, name, r));
    }
    for (name, b) in &raw.policies.circuit_breakers {
        doc.circuit_breakers
            .insert(name.clone(), breaker(report, name, b));
    }
    let mut apps = BTreeMap::new();
    for (id, t) in &raw.targets.apps {
        let at = ["targets", "apps", id.as_str()];
        apps.insert(id.clone(), target(report, &doc, &at, Some(t)));
    }
    let mut components = BTreeMap::new();
    for (name, t) in &raw.targets.components {
        let out = ["targets", "components", name.as_str(), "outbound"];
        let inb = ["targets", "components", name.as_str(), "inbound"];
        components.insert(
            name.clone(),
            ComponentTargets {
                outbound: target(report, &doc, &out, t.outbound.as_ref()),
                inbound: target(report, &doc, &inb, t.inbound.as_ref()),
            },
        );
    }
    doc.apps = apps;
    doc.components = components;
    doc
}

/// `[resiliency]` of herd.toml, checked; errors name `resiliency.<path>` and its line.
pub(crate) fn check(c: &mut Checker<'_>, raw: Option<RawResiliency>) -> Vec<Resiliency> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    let file = c.source().path.display().to_string();
    let mut report = |path: &[&str], message: String| {
        let mut at = KeyPath::default().key("resiliency");
        for p in path {
            at = at.key(p);
        }
        c.err(&at, message);
    };
    vec![build(&raw, file, Vec::new(), &mut report)]
}

#[derive(Debug, Deserialize)]
struct Resource {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    spec: RawResiliency,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    name: Option<String>,
}

/// A Dapr `kind: Resiliency` document (text `doc`, starting at line `first` of `file`):
/// checked, its `scopes` checked against `apps`, and added to `out`.
pub(crate) fn from_yaml(
    file: &Path,
    first: usize,
    doc: &str,
    apps: &[String],
    out: &mut Vec<Resiliency>,
    errors: &mut Vec<ConfigError>,
) {
    let resource = match serde_norway::from_str::<Resource>(doc) {
        Ok(r) => r,
        Err(e) => {
            errors.push(crate::source::yaml_error(file, doc, first, &e));
            return;
        }
    };
    let name = resource
        .metadata
        .name
        .unwrap_or_else(|| file.display().to_string());
    for scope in &resource.scopes {
        if !apps.contains(scope) {
            errors.push(ConfigError {
                file: file.to_path_buf(),
                line: yaml_line(doc, first, &["scopes"]).or(Some(first)),
                column: None,
                key: Some(format!("{name}: scopes")),
                message: format!("no app named {scope:?}"),
            });
        }
    }
    let mut report = |path: &[&str], message: String| {
        let mut full = vec!["spec"];
        full.extend_from_slice(path);
        errors.push(ConfigError {
            file: file.to_path_buf(),
            line: yaml_line(doc, first, &full).or(Some(first)),
            column: None,
            key: Some(format!("{name}: {}", full.join("."))),
            message,
        });
    };
    let built = build(&resource.spec, name.clone(), resource.scopes, &mut report);
    out.push(built);
}

/// The line of the key at `path` in a YAML document starting at line `first`: each segment is
/// looked for after the previous one, more indented than it, before the block ends.
pub(crate) fn yaml_line(doc: &str, first: usize, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut from = 0;
    let mut indent: Option<usize> = None;
    let mut found = None;
    for seg in path {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let depth = line.len() - trimmed.len();
            if indent.is_some_and(|d| depth <= d) {
                break;
            }
            let key = trimmed.trim_start_matches("- ");
            let matches = [
                format!("{seg}:"),
                format!("\"{seg}\":"),
                format!("'{seg}':"),
            ]
            .iter()
            .any(|k| key.starts_with(k.as_str()));
            if matches {
                hit = Some((i, depth));
                break;
            }
        }
        let (i, depth) = hit?;
        found = Some(first + i);
        from = i + 1;
        indent = Some(depth);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_keys_are_found_below_their_parents() {
        let doc = "kind: Resiliency\nspec:\n  policies:\n    retries:\n      fast:\n        duration: 1s\n  targets:\n    components:\n      fast:\n        outbound:\n          retry: fast\n";
        assert_eq!(
            yaml_line(
                doc,
                10,
                &["spec", "policies", "retries", "fast", "duration"]
            ),
            Some(15)
        );
        assert_eq!(
            yaml_line(
                doc,
                10,
                &["spec", "targets", "components", "fast", "outbound", "retry"]
            ),
            Some(20)
        );
        assert_eq!(yaml_line(doc, 10, &["spec", "policies", "timeouts"]), None);
    }
}
