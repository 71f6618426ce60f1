//! `[telemetry]`, validated: herd's log format and span export.

/// How herd writes its own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// `[telemetry]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySpec {
    /// The collector's base URL (`http://host:port`), without a trailing `/`.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of herd's spans.
    pub service_name: Option<String>,
    /// The log format, when the file sets one.
    pub log_format: Option<LogFormat>,
}
