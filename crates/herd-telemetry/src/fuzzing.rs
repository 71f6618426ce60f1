//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: W3C trace context
//! headers as herd reads them. Not part of the API.
//!
//! What must hold: parsing never panics, and what herd sends on for a parent it accepted names
//! the same trace, parent and flags, and the same `tracestate`.

use crate::context;
use crate::traceparent::Traceparent;

/// `traceparent \n tracestate`.
pub fn trace_context(data: &[u8]) {
    let (tp, ts) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    if let Some(parsed) = Traceparent::parse(tp) {
        let text = parsed.to_bytes();
        assert_eq!(Traceparent::parse(&text), Some(parsed));
        let sc = parsed.span_context(Default::default());
        assert_eq!(Traceparent::of(&sc), parsed);
    }
    let (Ok(tp), ts) = (
        std::str::from_utf8(tp),
        ts.map(std::str::from_utf8).and_then(Result::ok),
    ) else {
        return;
    };
    if let Some(sc) = context::parse(tp, ts) {
        let sent = context::traceparent(&sc);
        let state = context::tracestate(&sc);
        let again = context::parse(&sent, state.as_deref()).expect("herd's own header parses");
        assert_eq!(again.trace_id(), sc.trace_id());
        assert_eq!(again.span_id(), sc.span_id());
        assert_eq!(again.trace_flags(), sc.trace_flags());
        assert_eq!(again.trace_state().header(), sc.trace_state().header());
    }
}
