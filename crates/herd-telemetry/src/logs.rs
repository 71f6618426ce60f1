//! herd's own log lines: JSON lines for machines, or `tracing`'s text format for people.
//!
//! The format is `HERD_LOG_FORMAT` (`json` or `text`) when set, else `[telemetry] log_format`,
//! else text when stderr is a terminal and JSON otherwise (a service manager's journal, `herd
//! up -d`'s `herd.log`). `HERD_LOG` is the filter (`info` by default).
//!
//! A JSON line is one object: `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, the
//! event's own fields, and `trace_id` when the event was written inside a span that has one
//! (every request of the sidecar API, every delivery: see `context.rs`). The gateway's access
//! line is a JSON object of its own (`traceId`, `requestId`, `status`...); in JSON mode its
//! fields are written at the top level of the line rather than as a quoted message.
//!
//! The trace id is found through [`TraceIdLayer`], which keeps the `trace_id` field of a span
//! in the span's extensions when the span is created, so formatting a line reads it without
//! parsing the span's formatted fields; failing that, a JSON line takes it from the current
//! OpenTelemetry context (the hop [`crate::Traced::wrap`] runs its work in). With the JSON format
//! installed, `wrap` therefore enters no `tracing` span at all ([`spanless`]): creating one per
//! request (a registry slot, the id formatted twice, the filter consulted on every poll) cost
//! about as much as the rest of a sidecar API request's telemetry. The text format prints the
//! span's fields, so there `wrap` keeps the span.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TraceContextExt as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The variable naming the log format.
pub const FORMAT_VAR: &str = "HERD_LOG_FORMAT";
/// The variable holding the log filter: a default level and `target=level` pairs separated by
/// commas (`info,herd_api=debug`), as `tracing_subscriber::filter::Targets` reads them.
pub const FILTER_VAR: &str = "HERD_LOG";
/// The target of the gateway's access lines.
pub const ACCESS_TARGET: &str = "herd::access";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `tracing`'s human-readable lines, coloured on a terminal.
    Text,
}

impl LogFormat {
    /// `json` or `text`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "text" => Some(Self::Text),
            _ => None,
        }
    }

    /// The format to use: `HERD_LOG_FORMAT`, else `configured`, else text on a terminal and
    /// JSON otherwise. A bad `HERD_LOG_FORMAT` is returned as an error message.
    pub fn choose(configured: Option<Self>) -> Result<Self, String> {
        if let Some(v) = std::env::var_os(FORMAT_VAR).filter(|v| !v.is_empty()) {
            let v = v.to_string_lossy();
            return Self::parse(&v)
                .ok_or_else(|| format!("{FORMAT_VAR}={v:?}: expected \"json\" or \"text\""));
        }
        Ok(configured.unwrap_or(if std::io::stderr().is_terminal() {
            Self::Text
        } else {
            Self::Json
        }))
    }
}

/// Set when the JSON format is installed: its lines find the trace id in the OpenTelemetry
/// context, so hops need no `tracing` span to carry it.
static SPANLESS: AtomicBool = AtomicBool::new(false);

/// Whether log lines take the trace id from the OpenTelemetry context, so that
/// [`crate::Traced::wrap`] can leave out the `tracing` span.
pub fn spanless() -> bool {
    SPANLESS.load(Ordering::Relaxed)
}

/// Installs the process-wide subscriber writing to stderr in `format`, filtered by `HERD_LOG`.
pub fn init(format: LogFormat) {
    SPANLESS.store(format == LogFormat::Json, Ordering::Relaxed);
    let filter = filter(std::env::var(FILTER_VAR).ok().as_deref());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(TraceIdLayer);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .event_format(JsonLines),
            )
            .init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .init(),
    }
}

/// The filter `HERD_LOG` names, `info` when it is unset or empty. A value that does not parse
/// is reported on stderr (the log is not set up yet) and `info` is used.
///
/// `Targets` rather than `EnvFilter`: herd's directives name targets and levels only, and
/// `EnvFilter`'s span and field matching pulls a regex engine into the binary.
fn filter(value: Option<&str>) -> Targets {
    let info = || Targets::new().with_default(tracing::Level::INFO);
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => info(),
        Some(v) => v.parse().unwrap_or_else(|e| {
            eprintln!("herd: {FILTER_VAR}={v:?} is not a log filter ({e}); logging at info");
            info()
        }),
    }
}

/// A span's trace id, kept in its extensions.
struct TraceId(String);

/// Keeps the `trace_id` field of every new span in the span's extensions.
pub struct TraceIdLayer;

/// Finds the `trace_id` field among a span's fields.
#[derive(Default)]
struct FindTraceId(Option<String>);

impl Visit for FindTraceId {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_id" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "trace_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for TraceIdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut found = FindTraceId::default();
        attrs.record(&mut found);
        if let (Some(trace_id), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().insert(TraceId(trace_id));
        }
    }
}

/// An event's fields as JSON values.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

/// The JSON line format.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() == ACCESS_TARGET
            && let Some(written) = access_line(ctx, &mut writer, event)
        {
            return written;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        if let Some(t) = trace_id_of(ctx) {
            line.insert("trace_id".into(), Value::from(t));
        }
        // The access line's message is itself a JSON object: its fields go to the top level.
        let spliced = match fields.0.get("message") {
            Some(Value::String(m))
                if meta.target() == ACCESS_TARGET && m.starts_with('{') && m.len() > 2 =>
            {
                Some(fields.0.remove("message").expect("just seen"))
            }
            _ => None,
        };
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        let head = Value::Object(line).to_string();
        match spliced {
            Some(Value::String(access)) => writeln!(
                writer,
                "{},{}",
                head.strip_suffix('}').unwrap_or(&head),
                &access[1..]
            ),
            _ => writeln!(writer, "{head}"),
        }
    }
}

/// The trace id of the innermost span around the event that has one, else that of the current
/// OpenTelemetry context.
fn trace_id_of<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    ctx.event_scope()
        .and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<TraceId>().map(|t| t.0.clone()))
        })
        .or_else(|| {
            opentelemetry::Context::map_current(|cx| {
                let span = cx.span();
                let sc = span.span_context();
                sc.is_valid().then(|| sc.trace_id().to_string())
            })
        })
}

thread_local! {
    /// The message of the access line being written, reused from line to line.
    static ACCESS_MESSAGE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Takes an event's message when it has no other field.
struct OnlyMessage<'b> {
    message: &'b mut String,
    other: bool,
}

impl Visit for OnlyMessage<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            let _ = write!(self.message, "{value:?}");
        } else {
            self.other = true;
        }
    }
}

/// Writes an access line the short way: its message (a JSON object) formatted once into a
/// reused buffer and spliced after the line's own fields, with no map of fields built and no
/// string escaped. The bytes are those of the general path (keys in the same sorted order).
/// `None` when the event is not a lone JSON-object message; the general path writes it then.
fn access_line<S, N>(
    ctx: &FmtContext<'_, S, N>,
    writer: &mut Writer<'_>,
    event: &Event<'_>,
) -> Option<fmt::Result>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    ACCESS_MESSAGE.with(|buf| {
        let mut message = buf.try_borrow_mut().ok()?;
        message.clear();
        let mut visitor = OnlyMessage {
            message: &mut message,
            other: false,
        };
        event.record(&mut visitor);
        if visitor.other || !message.starts_with('{') || message.len() <= 2 {
            return None;
        }
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let level = event.metadata().level().as_str();
        let written = match trace_id_of(ctx) {
            Some(t) => writeln!(
                writer,
                "{{\"level\":\"{level}\",\"target\":\"{ACCESS_TARGET}\",\"timestamp\":\"{now}\",\"trace_id\":{},{}",
                Value::from(t),
                &message[1..]
            ),
            None => writeln!(
                writer,
                "{{\"level\":\"{level}\",\"target\":\"{ACCESS_TARGET}\",\"timestamp\":\"{now}\",{}",
                &message[1..]
            ),
        };
        Some(written)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::Level;

    #[test]
    fn the_filter_reads_a_default_and_per_target_levels() {
        let f = filter(Some("warn,herd_api=debug,herd::access=off"));
        assert!(f.would_enable("herd_api::state", &Level::DEBUG));
        assert!(!f.would_enable("herd_api::state", &Level::TRACE));
        assert!(!f.would_enable("herd_gateway", &Level::INFO));
        assert!(f.would_enable("herd_gateway", &Level::WARN));
        assert!(!f.would_enable(ACCESS_TARGET, &Level::ERROR));
        // Unset, empty or unreadable: info.
        for value in [None, Some(" "), Some("herd_api=loud")] {
            let f = filter(value);
            assert!(f.would_enable("herd", &Level::INFO), "{value:?}");
            assert!(!f.would_enable("herd", &Level::DEBUG), "{value:?}");
        }
    }

    /// A writer collecting what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<Value> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(TraceIdLayer).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .event_format(JsonLines),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    #[test]
    fn lines_in_a_span_carry_its_trace_id() {
        let out = lines(|| {
            tracing::info!(n = 1, "outside");
            let span = tracing::info_span!("trace", trace_id = "4bf92f3577b34da6a3ce929d0e0e4736");
            let _in = span.enter();
            let inner = tracing::info_span!("inner", other = 2);
            let _inner = inner.enter();
            tracing::warn!(key = "v", "inside \"quoted\"");
        });
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["message"], "outside");
        assert_eq!(out[0]["n"], 1);
        assert_eq!(out[0]["level"], "INFO");
        assert!(out[0].get("trace_id").is_none());
        assert_eq!(out[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(out[1]["message"], "inside \"quoted\"");
        assert_eq!(out[1]["key"], "v");
        assert_eq!(out[1]["level"], "WARN");
        assert!(out[1]["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn lines_inside_a_hop_without_a_span_carry_its_trace_id() {
        let hop = crate::Traced::start(
            opentelemetry::trace::SpanKind::Server,
            "",
            &opentelemetry::Context::new(),
            Vec::new,
        );
        let out = lines(|| {
            tracing::info!("before");
            let _current = hop.context().clone().attach();
            tracing::warn!("inside");
            let access = r#"{"status":200}"#;
            tracing::info!(target: ACCESS_TARGET, "{access}");
        });
        assert!(out[0].get("trace_id").is_none(), "{}", out[0]);
        assert_eq!(out[1]["trace_id"], hop.trace_id());
        assert_eq!(out[2]["trace_id"], hop.trace_id());
        assert_eq!(out[2]["status"], 200);
    }

    #[test]
    fn access_lines_are_spliced_into_the_line() {
        let out = lines(|| {
            let access =
                r#"{"requestId":"abc","status":200,"traceId":"0af7651916cd43dd8448eb211c80319c"}"#;
            tracing::info!(target: ACCESS_TARGET, "{access}");
            tracing::info!(target: "other", "{{\"not\":\"spliced\"}}");
        });
        assert_eq!(out[0]["requestId"], "abc");
        assert_eq!(out[0]["status"], 200);
        assert_eq!(out[0]["target"], ACCESS_TARGET);
        assert!(out[0].get("message").is_none());
        assert_eq!(out[1]["message"], "{\"not\":\"spliced\"}");
    }

    fn raw_lines(f: impl FnOnce()) -> Vec<String> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(TraceIdLayer).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .event_format(JsonLines),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn access_lines_keep_the_general_layout() {
        let access = r#"{"path":"/a\"b","status":200}"#;
        let out = raw_lines(|| {
            tracing::info!(target: ACCESS_TARGET, "{access}");
            let span = tracing::info_span!("t", trace_id = "4bf92f3577b34da6a3ce929d0e0e4736");
            let _in = span.enter();
            tracing::info!(target: ACCESS_TARGET, "{access}");
            // Not a lone JSON object: the general path, fields and message kept.
            tracing::info!(target: ACCESS_TARGET, n = 1, "{access}");
            tracing::info!(target: ACCESS_TARGET, "plain");
        });
        assert_eq!(out.len(), 4);
        // The same bytes as the general path: sorted keys, the access fields spliced after them.
        let ts = |l: &str| l.split("\"timestamp\":\"").nth(1).unwrap()[..27].to_string();
        assert_eq!(
            out[0],
            format!(
                r#"{{"level":"INFO","target":"herd::access","timestamp":"{}","path":"/a\"b","status":200}}"#,
                ts(&out[0])
            )
        );
        assert_eq!(
            out[1],
            format!(
                r#"{{"level":"INFO","target":"herd::access","timestamp":"{}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","path":"/a\"b","status":200}}"#,
                ts(&out[1])
            )
        );
        assert!(ts(&out[0]).ends_with('Z'));
        let general: Value = serde_json::from_str(&out[2]).unwrap();
        assert_eq!(general["n"], 1);
        assert_eq!(general["path"], "/a\"b");
        assert_eq!(general["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let plain: Value = serde_json::from_str(&out[3]).unwrap();
        assert_eq!(plain["message"], "plain");
    }

    #[test]
    fn formats_parse() {
        assert_eq!(LogFormat::parse("JSON"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse("xml"), None);
    }
}
