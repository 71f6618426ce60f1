//! W3C trace context on OpenTelemetry's types (read and written through `traceparent.rs`), and
//! the spans of herd's own hops: the sidecar API's server spans, a publish's producer span, a
//! delivery's consumer span.
//!
//! A [`Traced`] is one hop. With export installed ([`crate::otlp::tracer`]) it is a recording
//! OpenTelemetry span, a child of its parent context; without, it is only a span context: the
//! parent's trace id (or a new one) and a new span id, so ids still flow to the next hop and
//! into log lines at the cost of two random numbers. Work runs inside it with
//! [`Traced::wrap`]: the OpenTelemetry context becomes current for every poll (so
//! [`current_traceparent`] and child hops see it), so every log line written meanwhile names
//! the trace (`logs.rs`). JSON lines read the trace id from that context; for the text format a
//! `tracing` span carrying `trace_id` is entered as well, at ERROR level so that it exists
//! whenever anything at all is logged.

use std::borrow::Cow;
use std::future::Future;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use tracing::Instrument as _;

use crate::otlp::tracer;
use crate::traceparent::{Traceparent, new_span_id, new_trace_id};

/// The span context of a valid `traceparent` (see [`crate::traceparent`]) with `tracestate`,
/// as a remote parent.
pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let tp = Traceparent::parse(traceparent.trim().as_bytes())?;
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(tp.span_context(state))
}

/// A context whose parent is `parent`, or an empty one (a new trace starts there).
pub fn remote(parent: Option<SpanContext>) -> Context {
    match parent {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// The `traceparent` naming `sc` as the parent.
pub fn traceparent(sc: &SpanContext) -> String {
    let tp = Traceparent::of(sc).to_bytes();
    std::str::from_utf8(&tp).expect("hex digits").to_string()
}

/// The `tracestate` of `sc`, if it has any entries.
pub fn tracestate(sc: &SpanContext) -> Option<String> {
    Some(sc.trace_state().header()).filter(|s| !s.is_empty())
}

/// The `traceparent` of the hop the current task runs in (inside [`Traced::wrap`]), to
/// send to the next hop: a sidecar API handler calling another app passes this on.
pub fn current_traceparent() -> Option<String> {
    Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| traceparent(sc))
    })
}

/// The context of the hop the current task runs in: the parent of a hop started from here.
pub fn current() -> Context {
    Context::current()
}

/// One hop of a trace: a span (recording when spans are exported) and its context.
pub struct Traced {
    cx: Context,
    sc: SpanContext,
}

impl Traced {
    /// Starts a hop of `kind` named `name` as a child of `parent`. `attributes` is called only
    /// when the span records.
    pub fn start(
        kind: SpanKind,
        name: impl Into<Cow<'static, str>>,
        parent: &Context,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        let cx = match tracer() {
            Some(t) => {
                let span = t
                    .span_builder(name)
                    .with_kind(kind)
                    .with_attributes(attributes())
                    .start_with_context(t, parent);
                parent.with_span(span)
            }
            None => {
                let parent_span = parent.span();
                let p = parent_span.span_context();
                let (trace_id, flags) = if p.is_valid() {
                    (p.trace_id(), p.trace_flags())
                } else {
                    (TraceId::from(new_trace_id()), TraceFlags::SAMPLED)
                };
                let sc = SpanContext::new(
                    trace_id,
                    SpanId::from(new_span_id()),
                    flags,
                    false,
                    p.trace_state().clone(),
                );
                parent.with_remote_span_context(sc)
            }
        };
        let sc = cx.span().span_context().clone();
        Self { cx, sc }
    }

    /// The hop's span context.
    pub fn span_context(&self) -> &SpanContext {
        &self.sc
    }

    /// The hop's context, the parent of hops it starts.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// The `traceparent` naming this hop as the parent.
    pub fn traceparent(&self) -> String {
        traceparent(&self.sc)
    }

    /// The `tracestate` to send on, if any.
    pub fn tracestate(&self) -> Option<String> {
        tracestate(&self.sc)
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        self.sc.trace_id().to_string()
    }

    /// Whether the span records (spans are exported); attributes need computing only then.
    pub fn is_recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    /// Adds an attribute to a recording span.
    pub fn set_attribute(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Marks the span as failed with `description`.
    pub fn set_error(&self, description: impl Into<Cow<'static, str>>) {
        self.cx.span().set_status(Status::error(description));
    }

    /// Runs `work` inside this hop: its context current, log lines carrying its trace id.
    pub fn wrap<F: Future>(&self, work: F) -> impl Future<Output = F::Output> + use<F> {
        let log = if crate::logs::spanless() {
            tracing::Span::none()
        } else {
            tracing::error_span!("trace", trace_id = %self.sc.trace_id())
        };
        opentelemetry::context::FutureExt::with_context(work.instrument(log), self.cx.clone())
    }

    /// Ends the span (now).
    pub fn end(self) {
        self.cx.span().end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_refused() {
        let sc = parse(TP, Some("k=v")).unwrap();
        assert!(sc.is_remote());
        assert_eq!(traceparent(&sc), TP);
        assert_eq!(tracestate(&sc).as_deref(), Some("k=v"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-02",
            "garbage",
        ] {
            assert!(parse(bad, None).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_export_a_hop_continues_the_trace_with_a_new_span() {
        let parent = remote(parse(TP, None));
        let hop = Traced::start(SpanKind::Server, "GET", &parent, Vec::new);
        assert!(!hop.is_recording());
        assert_eq!(hop.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let tp = hop.traceparent();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"));
        assert_ne!(tp, TP);
        let root = Traced::start(SpanKind::Server, "GET", &Context::new(), Vec::new);
        assert!(root.span_context().is_valid());
        assert_ne!(root.trace_id(), hop.trace_id());
    }

    #[tokio::test]
    async fn work_inside_a_hop_sees_its_traceparent() {
        let hop = Traced::start(SpanKind::Consumer, "process", &Context::new(), Vec::new);
        let expected = hop.traceparent();
        let seen = hop.wrap(async { current_traceparent() }).await;
        assert_eq!(seen, Some(expected));
        assert_eq!(current_traceparent(), None);
    }
}
