//! Test support for herd: checking that what concurrent clients observed is linearizable.
//!
//! A robustness test records every operation its clients issue in a [`History`] (call time,
//! input, answer and return time, or an unknown outcome when a request timed out), then checks
//! the history against a sequential [`Model`] of the object under test with [`check`]. The
//! history is linearizable if each operation can be given one instant between its call and
//! return at which it took effect so that the model, run in that order, gives exactly the
//! recorded answers. [`Register`] is the model for one key of a key/value store with ETag
//! optimistic concurrency; its module documentation explains how ETags map onto values.
//!
//! ```
//! use herd_testkit::{History, Register, RegisterInput, RegisterOutput};
//!
//! let history = History::new();
//! let read = history.call(0, RegisterInput::Read);
//! read.ret(RegisterOutput::Value(0u64));
//! let save = history.call(0, RegisterInput::CompareAndSet { expected: 0, new: 1 });
//! save.ret(RegisterOutput::Ok);
//! let lost = history.call(1, RegisterInput::CompareAndSet { expected: 1, new: 2 });
//! drop(lost); // timed out: it may or may not have taken effect
//! history.check(&Register::new(0)).assert_linearizable();
//! ```
//!
//! [`crash`] makes the images of a file that a crash during a commit can leave (torn, truncated,
//! flipped), for the embedded stores' crash tests, with helpers to capture their log lines and
//! every panic.

#![forbid(unsafe_code)]

pub mod crash;
pub mod history;
pub mod linearize;
pub mod register;

pub use history::{History, Pending};
pub use linearize::{
    CheckResult, DEFAULT_BUDGET, Model, Operation, Outcome, Violation, check, check_with_budget,
};
pub use register::{Register, RegisterInput, RegisterOutput};
