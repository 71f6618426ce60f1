//! W3C trace context and request ids at the gateway.
//!
//! A request arriving with a valid `traceparent` keeps its trace id; the gateway is one hop of
//! the trace, so it forwards a new parent (span) id. A request without one starts a new trace.
//! `x-request-id` is kept when the client sent a sane one, otherwise it is the trace id, and it
//! is returned to the client either way.
//!
//! This runs for every proxied request, so ids live in fixed-size byte arrays, are hex-encoded
//! by table lookup rather than through `fmt`, and the request id is kept as the header value it
//! arrived as (cloning one shares its bytes) instead of being copied into a `String`.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `00-` + 32 hex digits + `-` + 16 hex digits + `-` + 2 hex digits.
const TRACEPARENT_LEN: usize = 55;

/// The trace context of one proxied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    trace_id: [u8; 32],
    /// Trace flags, 2 lower-case hex digits (`01` sampled).
    flags: [u8; 2],
    /// The request id returned to the client and passed upstream.
    request_id: HeaderValue,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `n` as lower-case hex digits filling `out`, most significant digit first.
fn hex_into(mut n: u128, out: &mut [u8]) {
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Random trace and span ids, never all zeros (W3C forbids those). Drawing over the full range
/// needs no modulo, unlike a draw from `1..`.
fn new_trace_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

fn all_hex(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_hexdigit)
}

fn not_all_zero(s: &[u8]) -> bool {
    s.iter().any(|&b| b != b'0')
}

/// A header value that owns `bytes`; clones of it share them.
fn shared_value<const N: usize>(bytes: [u8; N]) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from_owner(bytes)).expect("hex digits and dashes")
}

/// The trace id and flags of a valid `traceparent`: exactly four `-`-separated fields, a
/// version of 2 hex digits other than `ff`, a non-zero trace id of 32 and parent id of 16 hex
/// digits, and 2 hex digits of flags (surrounding whitespace ignored).
fn parse_traceparent(value: &HeaderValue) -> Option<([u8; 32], [u8; 2])> {
    let tp = value.as_bytes().trim_ascii();
    // Fixed field lengths make the four fields sit at fixed places; every other byte must be a
    // hex digit, so no fifth field can hide in them.
    if tp.len() != TRACEPARENT_LEN || tp[2] != b'-' || tp[35] != b'-' || tp[52] != b'-' {
        return None;
    }
    let (version, trace, parent, flags) = (&tp[0..2], &tp[3..35], &tp[36..52], &tp[53..55]);
    let valid = all_hex(version)
        && version != b"ff"
        && all_hex(trace)
        && not_all_zero(trace)
        && all_hex(parent)
        && not_all_zero(parent)
        && all_hex(flags);
    if !valid {
        return None;
    }
    let mut t = [0u8; 32];
    t.copy_from_slice(trace);
    t.make_ascii_lowercase();
    let mut f = [0u8; 2];
    f.copy_from_slice(flags);
    f.make_ascii_lowercase();
    Some((t, f))
}

impl TraceContext {
    /// The context for a request with `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let (trace_id, flags) = headers
            .get(TRACEPARENT)
            .and_then(parse_traceparent)
            .unwrap_or_else(|| {
                let mut t = [0u8; 32];
                hex_into(new_trace_id(), &mut t);
                (t, *b"01")
            });
        let request_id = headers
            .get(X_REQUEST_ID)
            .filter(|id| {
                let b = id.as_bytes();
                !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic)
            })
            .cloned()
            .unwrap_or_else(|| shared_value(trace_id));
        Self {
            trace_id,
            flags,
            request_id,
        }
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

    /// The `traceparent` to send upstream: same trace, a new span id for this hop.
    pub fn child_traceparent(&self) -> HeaderValue {
        let mut tp = [0u8; TRACEPARENT_LEN];
        tp[..3].copy_from_slice(b"00-");
        tp[3..35].copy_from_slice(&self.trace_id);
        tp[35] = b'-';
        hex_into(u128::from(new_span_id()), &mut tp[36..52]);
        tp[52] = b'-';
        tp[53..].copy_from_slice(&self.flags);
        shared_value(tp)
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
}
