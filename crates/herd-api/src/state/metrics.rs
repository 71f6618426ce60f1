//! The state API's metrics, `herd_state_requests_total{store, op, outcome}` and
//! `herd_state_request_seconds{store, op}`, with their handles kept per component: a request
//! neither builds labels nor looks the series up in the recorder. A handle is registered on its
//! first use, so a series appears in `/metrics` once its operation ran, as before.

use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram};

/// A state operation, as the `op` label names it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Save,
    Get,
    BulkGet,
    Delete,
    Transaction,
}

impl Op {
    const ALL: usize = 5;

    fn label(self) -> &'static str {
        match self {
            Op::Save => "save",
            Op::Get => "get",
            Op::BulkGet => "bulk_get",
            Op::Delete => "delete",
            Op::Transaction => "transaction",
        }
    }
}

#[derive(Default)]
struct Handles {
    ok: OnceLock<Counter>,
    error: OnceLock<Counter>,
    seconds: OnceLock<Histogram>,
}

/// One state store's metric handles, by operation.
#[derive(Default)]
pub(crate) struct StateMetrics {
    ops: [Handles; Op::ALL],
}

impl StateMetrics {
    /// Records one operation of store `store`: its outcome and the time since `started`.
    pub(crate) fn observe(&self, store: &str, op: Op, started: Instant, ok: bool) {
        let handles = &self.ops[op as usize];
        let (cell, outcome) = if ok {
            (&handles.ok, "ok")
        } else {
            (&handles.error, "error")
        };
        cell.get_or_init(|| {
            metrics::counter!("herd_state_requests_total", "store" => store.to_string(), "op" => op.label(), "outcome" => outcome)
        })
        .increment(1);
        handles
            .seconds
            .get_or_init(|| {
                metrics::histogram!("herd_state_request_seconds", "store" => store.to_string(), "op" => op.label())
            })
            .record(started.elapsed().as_secs_f64());
    }
}

impl std::fmt::Debug for StateMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMetrics")
    }
}
