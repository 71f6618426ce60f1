//! W3C trace context and request ids at the gateway.
//!
//! A request arriving with a valid `traceparent` keeps its trace id; the gateway is one hop of
//! the trace, so it forwards a new parent (span) id. A request without one starts a new trace.
//! `x-request-id` is kept when the client sent a sane one, otherwise it is the trace id, and it
//! is returned to the client either way.

use http::HeaderMap;

/// The trace context of one proxied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// Trace flags (`01` sampled).
    pub flags: String,
    /// The request id returned to the client and passed upstream.
    pub request_id: String,
}

fn hex(len: usize, s: &str) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl TraceContext {
    /// The context for a request with `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let incoming = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|tp| {
                let parts: Vec<&str> = tp.trim().split('-').collect();
                match parts.as_slice() {
                    [version, trace, parent, flags]
                        if hex(2, version)
                            && *version != "ff"
                            && hex(32, trace)
                            && trace.bytes().any(|b| b != b'0')
                            && hex(16, parent)
                            && parent.bytes().any(|b| b != b'0')
                            && hex(2, flags) =>
                    {
                        Some((trace.to_ascii_lowercase(), flags.to_ascii_lowercase()))
                    }
                    _ => None,
                }
            });
        let (trace_id, flags) =
            incoming.unwrap_or_else(|| (format!("{:032x}", fastrand::u128(1..)), "01".into()));
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .map_or_else(|| trace_id.clone(), str::to_string);
        Self {
            trace_id,
            flags,
            request_id,
        }
    }

    /// The `traceparent` to send upstream: same trace, a new span id for this hop.
    pub fn child_traceparent(&self) -> String {
        format!(
            "00-{}-{:016x}-{}",
            self.trace_id,
            fastrand::u64(1..),
            self.flags
        )
    }
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

    #[test]
    fn keeps_an_incoming_trace_and_makes_a_new_span() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::from_headers(&headers(&[("traceparent", tp)]));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.request_id, t.trace_id);
        let child = t.child_traceparent();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert_ne!(child, tp);
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let t = TraceContext::from_headers(&headers(&[("traceparent", bad)]));
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(hex(32, &t.trace_id));
        }
    }

    #[test]
    fn request_id_is_kept_when_sane() {
        let t = TraceContext::from_headers(&headers(&[("x-request-id", "abc-123")]));
        assert_eq!(t.request_id, "abc-123");
        let t = TraceContext::from_headers(&headers(&[("x-request-id", "has space")]));
        assert_eq!(t.request_id, t.trace_id);
    }
}
