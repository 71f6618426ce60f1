//! The W3C `traceparent` header at the byte level: parsing, formatting and new ids.
//!
//! The gateway runs this for every proxied request, so it works on fixed-size byte arrays: no
//! allocation, hex digits written by table lookup rather than through `fmt`. The ids stay the
//! lower-case hex digits they travel as; [`Traceparent::span_context`] and
//! [`Traceparent::of`] convert to and from OpenTelemetry's `SpanContext` (`context.rs`).
//!
//! A valid `traceparent` has exactly four `-`-separated fields: a version of 2 hex digits other
//! than `ff`, a trace id of 32 and a parent id of 16 hex digits, neither all zeros, and 2 hex
//! digits of flags; surrounding ASCII whitespace is ignored. Upper-case digits are accepted and
//! kept in lower case.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-` + 32 hex digits + `-` + 16 hex digits + `-` + 2 hex digits.
pub const LEN: usize = 55;

/// The fields of a `traceparent`, as lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// The trace id, 32 digits.
    pub trace_id: [u8; 32],
    /// The parent (span) id, 16 digits.
    pub parent_id: [u8; 16],
    /// The trace flags, 2 digits (`01` sampled).
    pub flags: [u8; 2],
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `n` as lower-case hex digits filling `out`, most significant digit first.
pub fn hex_into(mut n: u128, out: &mut [u8]) {
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The value of hex digits (at most 32), already checked to be hex.
pub fn from_hex(digits: &[u8]) -> u128 {
    digits.iter().fold(0, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            _ => d.to_ascii_lowercase() - b'a' + 10,
        };
        (n << 4) | u128::from(v)
    })
}

/// A random trace id, never zero (W3C forbids it). Drawing over the full range needs no
/// modulo, unlike a draw from `1..`.
pub fn new_trace_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

/// A random span id, never zero.
pub fn new_span_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

/// A header value that owns `bytes`; clones of it share them. For ids and `traceparent`s,
/// which are hex digits and dashes.
pub fn header_value<const N: usize>(bytes: [u8; N]) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from_owner(bytes)).expect("hex digits and dashes")
}

fn all_hex(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_hexdigit)
}

fn not_all_zero(s: &[u8]) -> bool {
    s.iter().any(|&b| b != b'0')
}

/// `digits` in lower case, as an array of their length.
fn lower<const N: usize>(digits: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(digits);
    out.make_ascii_lowercase();
    out
}

impl Traceparent {
    /// The fields of `value` when it is a valid `traceparent`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let tp = value.trim_ascii();
        // Fixed field lengths make the four fields sit at fixed places; every other byte must
        // be a hex digit, so no fifth field can hide in them.
        if tp.len() != LEN || tp[2] != b'-' || tp[35] != b'-' || tp[52] != b'-' {
            return None;
        }
        let (version, trace, parent, flags) = (&tp[0..2], &tp[3..35], &tp[36..52], &tp[53..55]);
        let valid = all_hex(version)
            && !version.eq_ignore_ascii_case(b"ff")
            && all_hex(trace)
            && not_all_zero(trace)
            && all_hex(parent)
            && not_all_zero(parent)
            && all_hex(flags);
        valid.then(|| Self {
            trace_id: lower(trace),
            parent_id: lower(parent),
            flags: lower(flags),
        })
    }

    /// What a hop that has no span of its own sends on: the trace and flags of `incoming` with a
    /// new parent id, or without one a new trace, sampled.
    pub fn next_hop(incoming: Option<Self>) -> Self {
        let mut tp = incoming.unwrap_or_else(|| {
            let mut trace_id = [0u8; 32];
            hex_into(new_trace_id(), &mut trace_id);
            Self {
                trace_id,
                parent_id: [0; 16],
                flags: *b"01",
            }
        });
        hex_into(u128::from(new_span_id()), &mut tp.parent_id);
        tp
    }

    /// The header's text: version `00` and the fields.
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut tp = [0u8; LEN];
        tp[..3].copy_from_slice(b"00-");
        tp[3..35].copy_from_slice(&self.trace_id);
        tp[35] = b'-';
        tp[36..52].copy_from_slice(&self.parent_id);
        tp[52] = b'-';
        tp[53..].copy_from_slice(&self.flags);
        tp
    }

    /// The `traceparent` naming `sc` as the parent.
    pub fn of(sc: &SpanContext) -> Self {
        let mut tp = Self {
            trace_id: [0; 32],
            parent_id: [0; 16],
            flags: [0; 2],
        };
        hex_into(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            &mut tp.trace_id,
        );
        hex_into(
            u128::from(u64::from_be_bytes(sc.span_id().to_bytes())),
            &mut tp.parent_id,
        );
        hex_into(u128::from(sc.trace_flags().to_u8()), &mut tp.flags);
        tp
    }

    /// The parent it names, as the span context of a remote span with `state`.
    pub fn span_context(&self, state: TraceState) -> SpanContext {
        SpanContext::new(
            TraceId::from(from_hex(&self.trace_id)),
            SpanId::from(from_hex(&self.parent_id) as u64),
            TraceFlags::new(from_hex(&self.flags) as u8),
            true,
            state,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_and_written_back() {
        let tp = Traceparent::parse(TP).unwrap();
        assert_eq!(&tp.trace_id, b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&tp.parent_id, b"00f067aa0ba902b7");
        assert_eq!(&tp.flags, b"01");
        assert_eq!(&tp.to_bytes()[..], TP);
        let sc = tp.span_context(TraceState::default());
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(Traceparent::of(&sc), tp);
    }

    #[test]
    fn upper_case_digits_are_kept_in_lower_case_and_whitespace_is_ignored() {
        let tp = Traceparent::parse(b" 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-0A ")
            .unwrap();
        assert_eq!(&tp.trace_id, b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&tp.parent_id, b"00f067aa0ba902b7");
        assert_eq!(&tp.flags, b"0a");
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "FF-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-02",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
            "",
        ] {
            assert!(Traceparent::parse(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_next_hop_continues_a_trace_or_starts_one() {
        let incoming = Traceparent::parse(TP).unwrap();
        let next = Traceparent::next_hop(Some(incoming));
        assert_eq!(
            (next.trace_id, next.flags),
            (incoming.trace_id, incoming.flags)
        );
        assert_ne!(next.parent_id, incoming.parent_id);
        assert!(Traceparent::parse(&next.to_bytes()).is_some());
        let root = Traceparent::next_hop(None);
        assert_ne!(root.trace_id, incoming.trace_id);
        assert_eq!(&root.flags, b"01");
        assert!(Traceparent::parse(&root.to_bytes()).is_some());
    }

    #[test]
    fn ids_are_hex_of_their_value() {
        let mut out = [0u8; 16];
        hex_into(0x00f0_67aa_0ba9_02b7, &mut out);
        assert_eq!(&out, b"00f067aa0ba902b7");
        assert_eq!(from_hex(b"00F067aa0ba902b7"), 0x00f0_67aa_0ba9_02b7);
        assert_ne!(new_trace_id(), new_trace_id());
        assert_ne!(new_span_id(), 0);
        assert_eq!(header_value(*b"ab-01"), "ab-01");
    }
}
