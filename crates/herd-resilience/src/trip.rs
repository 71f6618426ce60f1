//! When a circuit breaker trips: Dapr's `trip` expressions, in the subset herd evaluates.
//!
//! Dapr writes trip conditions in CEL, e.g. `consecutiveFailures >= 5`. herd accepts comparisons
//! joined by `&&` over four counters of the breaker's current window, which covers both classic
//! rules: `consecutiveFailures > 5`, and a failure rate with a minimum volume,
//! `requests >= 20 && failureRate > 0.5`.

use std::fmt;

/// Counters of the closed state's current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls finished in the window.
    pub requests: u32,
    /// Failed calls in the window.
    pub total_failures: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Successes since the last failure.
    pub consecutive_successes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Var {
    Requests,
    TotalFailures,
    ConsecutiveFailures,
    FailureRate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Comparison {
    var: Var,
    op: Op,
    value: f64,
}

/// A parsed trip condition: every comparison must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    all: Vec<Comparison>,
    source: String,
}

/// A trip expression herd cannot evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trip expression {expr:?}: {reason}")]
pub struct TripError {
    expr: String,
    reason: String,
}

impl Trip {
    /// Parses `expr`, e.g. `consecutiveFailures >= 5` or `requests >= 20 && failureRate > 0.5`.
    pub fn parse(expr: &str) -> Result<Self, TripError> {
        let err = |reason: String| TripError {
            expr: expr.to_string(),
            reason,
        };
        let mut all = Vec::new();
        for part in expr.split("&&") {
            let part = part.trim();
            let (name, op, rest) = [
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("==", Op::Eq),
                (">", Op::Gt),
                ("<", Op::Lt),
            ]
            .iter()
            .find_map(|(sym, op)| part.split_once(sym).map(|(l, r)| (l.trim(), *op, r.trim())))
            .ok_or_else(|| err(format!("{part:?} is not a comparison")))?;
            let var = match name {
                "requests" => Var::Requests,
                "totalFailures" => Var::TotalFailures,
                "consecutiveFailures" => Var::ConsecutiveFailures,
                "failureRate" => Var::FailureRate,
                other => {
                    return Err(err(format!(
                        "unknown counter {other:?}; use requests, totalFailures, consecutiveFailures or failureRate"
                    )));
                }
            };
            let value: f64 = rest
                .parse()
                .map_err(|_| err(format!("{rest:?} is not a number")))?;
            all.push(Comparison { var, op, value });
        }
        Ok(Self {
            all,
            source: expr.trim().to_string(),
        })
    }

    /// Trips after `n` consecutive failures (`consecutiveFailures >= n`).
    pub fn consecutive_failures(n: u32) -> Self {
        Self::parse(&format!("consecutiveFailures >= {n}")).expect("valid expression")
    }

    /// Whether the breaker trips with `counts`.
    pub fn holds(&self, c: &Counts) -> bool {
        self.all.iter().all(|cmp| {
            let v = match cmp.var {
                Var::Requests => c.requests as f64,
                Var::TotalFailures => c.total_failures as f64,
                Var::ConsecutiveFailures => c.consecutive_failures as f64,
                Var::FailureRate if c.requests == 0 => 0.0,
                Var::FailureRate => c.total_failures as f64 / c.requests as f64,
            };
            match cmp.op {
                Op::Gt => v > cmp.value,
                Op::Ge => v >= cmp.value,
                Op::Lt => v < cmp.value,
                Op::Le => v <= cmp.value,
                Op::Eq => v == cmp.value,
            }
        })
    }
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures() {
        let t = Trip::parse("consecutiveFailures > 2").unwrap();
        let mut c = Counts {
            consecutive_failures: 2,
            ..Counts::default()
        };
        assert!(!t.holds(&c));
        c.consecutive_failures = 3;
        assert!(t.holds(&c));
    }

    #[test]
    fn failure_rate_needs_the_minimum_volume() {
        let t = Trip::parse("requests >= 10 && failureRate > 0.5").unwrap();
        let c = |requests, total_failures| Counts {
            requests,
            total_failures,
            ..Counts::default()
        };
        assert!(!t.holds(&c(4, 4)), "too few requests");
        assert!(!t.holds(&c(10, 5)), "exactly half");
        assert!(t.holds(&c(10, 6)));
        assert_eq!(t.to_string(), "requests >= 10 && failureRate > 0.5");
    }

    #[test]
    fn bad_expressions_say_why() {
        let e = Trip::parse("errors > 3").unwrap_err().to_string();
        assert!(e.contains("unknown counter \"errors\""), "{e}");
        let e = Trip::parse("consecutiveFailures > many")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number"), "{e}");
        let e = Trip::parse("consecutiveFailures").unwrap_err().to_string();
        assert!(e.contains("not a comparison"), "{e}");
    }
}
