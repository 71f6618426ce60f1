//! W3C trace context and request ids at the gateway.
//!
//! A request arriving with a valid `traceparent` keeps its trace id; the gateway is one hop of
//! the trace, so it forwards a new parent (span) id. A request without one starts a new trace.
//! `x-request-id` is kept when the client sent a sane one, otherwise it is the trace id, and it
//! is returned to the client either way.
//!
//! This runs for every proxied request, so ids live in fixed-size byte arrays, read and written
//! by `herd_telemetry::traceparent` without allocating, and the request id is kept as the header
//! value it arrived as (cloning one shares its bytes) instead of being copied into a `String`.
//! The `traceparent` sent upstream is built once with the context, and a request id that is the
//! trace id is a slice of it: one allocation for both.
//!
//! When spans are exported, [`TraceContext::start_span`] starts the request's SERVER span (a
//! child of the incoming `traceparent`, or a new root) and takes its ids, so the `traceparent`
//! sent upstream names that span as the parent and a new root's trace id is the span's. Without
//! export none of this runs: the request path pays one check of an `Option`.

use std::net::SocketAddr;

use bytes::Bytes;
use herd_telemetry::traceparent::{
    TRACEPARENT, Traceparent, header_value, hex_into, new_span_id, new_trace_id,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt as _, TraceState, Tracer};
use opentelemetry::{Context, KeyValue};

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The trace context of one proxied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    trace_id: [u8; 32],
    /// Trace flags, 2 lower-case hex digits (`01` sampled).
    flags: [u8; 2],
    /// The incoming parent span id, 16 hex digits, when the request carried a valid one.
    parent: Option<[u8; 16]>,
    /// This hop's span id once a span was started; otherwise the upstream `traceparent` names a
    /// fresh one.
    span: Option<[u8; 16]>,
    /// The `traceparent` sent upstream while no span was started: this trace, a fresh span id.
    upstream: Option<HeaderValue>,
    /// The request id returned to the client and passed upstream.
    request_id: HeaderValue,
    /// Whether the request id is the trace id (the client sent none).
    request_id_is_trace: bool,
}

impl TraceContext {
    /// The context for a request with `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let incoming = headers
            .get(TRACEPARENT)
            .and_then(|v| Traceparent::parse(v.as_bytes()));
        let (trace_id, parent, flags) = match incoming {
            Some(tp) => (tp.trace_id, Some(tp.parent_id), tp.flags),
            None => {
                let mut t = [0u8; 32];
                hex_into(new_trace_id(), &mut t);
                (t, None, *b"01")
            }
        };
        let mut span_id = [0u8; 16];
        hex_into(u128::from(new_span_id()), &mut span_id);
        let upstream = Bytes::from_owner(
            Traceparent {
                trace_id,
                parent_id: span_id,
                flags,
            }
            .to_bytes(),
        );
        let mut request_id_is_trace = false;
        let request_id = headers
            .get(X_REQUEST_ID)
            .filter(|id| {
                let b = id.as_bytes();
                !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic)
            })
            .cloned()
            .unwrap_or_else(|| {
                request_id_is_trace = true;
                // The trace id digits of the upstream `traceparent` (`00-<trace id>-...`).
                HeaderValue::from_maybe_shared(upstream.slice(3..35)).expect("hex digits")
            });
        Self {
            trace_id,
            flags,
            parent,
            span: None,
            upstream: Some(
                HeaderValue::from_maybe_shared(upstream).expect("hex digits and dashes"),
            ),
            request_id,
            request_id_is_trace,
        }
    }

    /// Starts the request's SERVER span with `tracer` and makes its ids this hop's: the trace
    /// id (a new root's comes from the span) and the span id every upstream `traceparent`
    /// names as the parent.
    pub fn start_span<T: Tracer>(
        &mut self,
        tracer: &T,
        method: &Method,
        uri: &Uri,
        client: SocketAddr,
        https: bool,
        listener: &str,
    ) -> T::Span {
        let parent = match self.parent {
            Some(parent_id) => Context::new().with_remote_span_context(
                Traceparent {
                    trace_id: self.trace_id,
                    parent_id,
                    flags: self.flags,
                }
                .span_context(TraceState::default()),
            ),
            None => Context::new(),
        };
        let span = tracer
            .span_builder(method.as_str().to_string())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.as_str().to_string()),
                KeyValue::new("url.path", uri.path().to_string()),
                KeyValue::new("url.scheme", if https { "https" } else { "http" }),
                KeyValue::new("client.address", client.ip().to_string()),
                KeyValue::new("herd.listener", listener.to_string()),
            ])
            .start_with_context(tracer, &parent);
        let ids = Traceparent::of(span.span_context());
        self.trace_id = ids.trace_id;
        self.span = Some(ids.parent_id);
        self.flags = ids.flags;
        self.upstream = None;
        if self.request_id_is_trace {
            self.request_id = header_value(self.trace_id);
        }
        span
    }

    /// The trace id: 32 lower-case hex digits.
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).expect("hex digits")
    }

    /// The request id, as the header value sent upstream and returned to the client.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The request id as text (printable ASCII, checked when it was taken).
    pub fn request_id_str(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The `traceparent` to send upstream: same trace, this hop's span id (a fresh one, the same
    /// on every call, while no span was started).
    pub fn child_traceparent(&self) -> HeaderValue {
        if let Some(tp) = &self.upstream {
            return tp.clone();
        }
        let parent_id = self.span.unwrap_or_else(|| {
            let mut id = [0u8; 16];
            hex_into(u128::from(new_span_id()), &mut id);
            id
        });
        let tp = Traceparent {
            trace_id: self.trace_id,
            parent_id,
            flags: self.flags,
        };
        header_value(tp.to_bytes())
    }
}

/// What the end of a proxied request adds to its SERVER span.
pub struct SpanEnd<'a> {
    /// The status answered.
    pub status: StatusCode,
    /// The upstream the route led to.
    pub upstream: Option<&'a str>,
    /// The endpoint of the last attempt.
    pub endpoint: Option<SocketAddr>,
    /// Attempts made.
    pub tries: usize,
}

/// Ends a request's SERVER span with what became of the request (OpenTelemetry's HTTP
/// conventions: a 5xx answer is an error of the server span, a 4xx is not).
pub fn end_span<S: Span>(mut span: S, end: SpanEnd<'_>) {
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(end.status.as_u16()),
    ));
    if let Some(u) = end.upstream {
        span.set_attribute(KeyValue::new("herd.upstream", u.to_string()));
    }
    if let Some(e) = end.endpoint {
        span.set_attribute(KeyValue::new("network.peer.address", e.ip().to_string()));
        span.set_attribute(KeyValue::new("network.peer.port", i64::from(e.port())));
    }
    if end.tries > 1 {
        span.set_attribute(KeyValue::new(
            "http.request.resend_count",
            end.tries as i64 - 1,
        ));
    }
    if end.status.is_server_error() {
        span.set_attribute(KeyValue::new("error.type", end.status.as_u16().to_string()));
        span.set_status(Status::error(""));
    }
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn is_hex(len: usize, s: &str) -> bool {
        s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
    }

    #[test]
    fn keeps_an_incoming_trace_and_makes_a_new_span() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::from_headers(&headers(&[("traceparent", tp)]));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.request_id_str(), t.trace_id());
        let child = t.child_traceparent();
        let child = child.to_str().unwrap();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert!(is_hex(16, &child[36..52]), "{child}");
        assert_ne!(child, tp);
    }

    #[test]
    fn an_upper_case_trace_is_kept_in_lower_case() {
        let tp = " 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-0A ";
        let t = TraceContext::from_headers(&headers(&[("traceparent", tp)]));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.child_traceparent().to_str().unwrap().ends_with("-0a"));
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-02",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let t = TraceContext::from_headers(&headers(&[("traceparent", bad)]));
            assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(is_hex(32, t.trace_id()));
            assert_eq!(t.request_id_str(), t.trace_id());
        }
    }

    #[test]
    fn new_traces_differ() {
        let a = TraceContext::from_headers(&HeaderMap::new());
        let b = TraceContext::from_headers(&HeaderMap::new());
        assert_ne!(a.trace_id(), b.trace_id());
        assert!(a.child_traceparent().to_str().unwrap().ends_with("-01"));
    }

    #[test]
    fn a_new_request_id_is_the_trace_id_the_upstream_traceparent_carries() {
        let t = TraceContext::from_headers(&HeaderMap::new());
        let tp = t.child_traceparent();
        let tp = tp.to_str().unwrap();
        assert_eq!(&tp[3..35], t.trace_id());
        assert_eq!(t.request_id_str(), t.trace_id());
        assert!(is_hex(16, &tp[36..52]), "{tp}");
        assert_eq!(t.child_traceparent(), tp, "one span id per hop");

        // A client's request id is kept; the traceparent still carries the trace.
        let t = TraceContext::from_headers(&headers(&[("x-request-id", "abc-123")]));
        assert_eq!(t.request_id_str(), "abc-123");
        assert!(t.child_traceparent().to_str().unwrap()[3..35] == *t.trace_id());
    }

    #[test]
    fn request_id_is_kept_when_sane() {
        let t = TraceContext::from_headers(&headers(&[("x-request-id", "abc-123")]));
        assert_eq!(t.request_id_str(), "abc-123");
        let t = TraceContext::from_headers(&headers(&[("x-request-id", "has space")]));
        assert_eq!(t.request_id_str(), t.trace_id());
        let long = "x".repeat(129);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", long.parse().unwrap());
        let t = TraceContext::from_headers(&h);
        assert_eq!(t.request_id_str(), t.trace_id());
    }

    #[test]
    fn a_server_span_is_the_parent_named_upstream() {
        use opentelemetry::trace::TracerProvider as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let client: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut t = TraceContext::from_headers(&headers(&[("traceparent", tp)]));
        let span = t.start_span(
            &tracer,
            &Method::GET,
            &"/a".parse().unwrap(),
            client,
            false,
            "main",
        );
        let sc = span.span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let child = t.child_traceparent();
        assert_eq!(
            child.to_str().unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", sc.span_id())
        );
        // Every attempt names the same span.
        assert_eq!(t.child_traceparent(), child);

        // A new root: the trace id (and the request id made from it) are the span's.
        let mut t = TraceContext::from_headers(&HeaderMap::new());
        let span = t.start_span(
            &tracer,
            &Method::POST,
            &"/".parse().unwrap(),
            client,
            true,
            "main",
        );
        let root = span.span_context().trace_id().to_string();
        assert_eq!(t.trace_id(), root);
        assert_eq!(t.request_id_str(), root);
        assert!(
            t.child_traceparent()
                .to_str()
                .unwrap()
                .starts_with(&format!("00-{root}-"))
        );
    }
}
