//! `[telemetry]` and `[admin]` as serde reads them: herd's own logs and spans, and the admin
//! listener. Checked in `telemetry.rs`.

use serde::Deserialize;

/// `[telemetry]`: herd's own logs and traces.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP/HTTP collector spans are exported to, as its base URL:
    /// `"http://127.0.0.1:4318"` (herd posts protobuf to `<url>/v1/traces`). Unset: the
    /// standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` variables
    /// apply, and without them no spans are exported. Only `http://`: keep a collector or an
    /// agent near herd.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of herd's spans. `OTEL_SERVICE_NAME` takes precedence. Default:
    /// `"herd"`.
    pub service_name: Option<String>,
    /// herd's log lines on stderr: `"json"` (one object per line, with `trace_id` inside a
    /// request) or `"text"`. `HERD_LOG_FORMAT` takes precedence. Default: text when stderr is
    /// a terminal, JSON otherwise.
    pub log_format: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener, e.g. `"127.0.0.1:9901"`; none when unset. Keep it on
    /// loopback: it is unauthenticated.
    pub listen: Option<String>,
}
