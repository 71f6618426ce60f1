//! Validation of `[telemetry]` (the OTLP endpoint, the service name of herd's spans and the
//! format of its log lines) and of `[admin]`, the listener of `/metrics` and the dashboard.

use std::net::SocketAddr;

use crate::check::Checker;
use crate::model::{LogFormat, TelemetrySpec};
use crate::raw::{RawAdmin, RawTelemetry};
use crate::source::KeyPath;

/// Why `url` is not a collector base URL, if it is not.
fn endpoint_problem(url: &str) -> Option<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Some(if url.starts_with("https://") {
            format!("{url:?}: only http:// is supported; run a collector or agent near herd")
        } else {
            format!("{url:?} is not an http:// URL (e.g. \"http://127.0.0.1:4318\")")
        });
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Some(format!("{url:?} has no valid host"));
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Some(format!(
            "{url:?}: port {port:?} is not a number up to 65535"
        ));
    }
    if !path.is_empty() {
        return Some(format!(
            "{url:?}: give the collector's base URL; herd adds /v1/traces itself"
        ));
    }
    None
}

/// `[admin]`: the admin listener's address, if it has one.
pub(crate) fn admin(c: &mut Checker<'_>, raw: RawAdmin) -> Option<SocketAddr> {
    let at = KeyPath::default().key("admin").key("listen");
    raw.listen.as_deref().and_then(|text| c.address(&at, text))
}

/// `[telemetry]`, checked.
pub(crate) fn check(c: &mut Checker<'_>, raw: RawTelemetry) -> TelemetrySpec {
    let at = KeyPath::default().key("telemetry");
    let otlp_endpoint = raw.otlp_endpoint.and_then(|url| {
        let url = url.trim_end_matches('/').to_string();
        match endpoint_problem(&url) {
            Some(why) => {
                c.err(&at.key("otlp_endpoint"), why);
                None
            }
            None => Some(url),
        }
    });
    if raw
        .service_name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty())
    {
        c.err(&at.key("service_name"), "must not be empty");
    }
    let log_format = raw.log_format.and_then(|f| match f.as_str() {
        "json" => Some(LogFormat::Json),
        "text" => Some(LogFormat::Text),
        other => {
            c.err(
                &at.key("log_format"),
                format!("{other:?} is not a log format; use \"json\" or \"text\""),
            );
            None
        }
    });
    TelemetrySpec {
        otlp_endpoint,
        service_name: raw.service_name,
        log_format,
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_problem;

    #[test]
    fn endpoints_are_base_http_urls() {
        assert_eq!(endpoint_problem("http://127.0.0.1:4318"), None);
        assert_eq!(endpoint_problem("http://collector"), None);
        assert_eq!(endpoint_problem("http://[::1]:4318"), None);
        for bad in [
            "https://collector:4318",
            "127.0.0.1:4318",
            "http://",
            "http://host:port",
            "http://host:4318/v1/traces",
        ] {
            assert!(endpoint_problem(bad).is_some(), "{bad}");
        }
    }
}
