//! A single register with read, write and compare-and-set: the model for one key of a key/value
//! store with ETag optimistic concurrency.
//!
//! # Mapping ETags to values
//!
//! A state store answers a read with a value and an opaque ETag, and a save that carries an ETag
//! (with first-write concurrency) succeeds only if the key still has that ETag, failing with a
//! conflict (HTTP 409) otherwise. The model has no ETags: it identifies a version by its value.
//! That is sound as long as **every successful write writes a value no earlier version had**, so
//! that the value read identifies the version read. Then a save with the ETag that was read
//! alongside value `v` succeeds exactly when the key still holds `v`, i.e. it is
//! `CompareAndSet { expected: v, new }`.
//!
//! A read-modify-write increment keeps values distinct by itself: every successful save changes
//! `v` to `v + 1` from the current version, so the value only ever grows. Tests that also write
//! unconditionally ([`RegisterInput::Write`], last-write concurrency) must make each written value
//! unique, for example by tagging it with the client id and a sequence number.
//!
//! How a client records one increment:
//!
//! | request | answer | recorded as |
//! |---|---|---|
//! | `GET` | 200 with value `v` | `Read` → `Value(v)` |
//! | `GET` | error or timeout | unknown outcome (a read has no effect, so this costs nothing) |
//! | save `v + 1` with the ETag read with `v` | 2xx | `CompareAndSet { expected: v, new: v + 1 }` → `Ok` |
//! | same | 409 ETag mismatch | same input → `Fail` |
//! | same | timeout, 5xx, reset | same input, unknown outcome |
//!
//! A key that does not exist yet has no value. Either seed it before the clients start (and
//! start the model from the seeded value), or model absence explicitly with `Option` values:
//! `Register::new(None)`, a read of a missing key answering `Value(None)`, and a save that must
//! create the key being `CompareAndSet { expected: None, new: Some(..) }`.

use std::fmt::Debug;
use std::hash::Hash;

use crate::linearize::Model;

/// A register holding one value of type `V`, starting from a given value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Register<V> {
    initial: V,
}

impl<V> Register<V> {
    /// A register that holds `initial` before any operation.
    pub fn new(initial: V) -> Self {
        Self { initial }
    }
}

/// An operation on a [`Register`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput<V> {
    /// Read the value; answered with [`RegisterOutput::Value`].
    Read,
    /// Overwrite the value unconditionally (last-write wins); answered with [`RegisterOutput::Ok`].
    Write(V),
    /// Write `new` if the register holds `expected`; answered with [`RegisterOutput::Ok`] if it
    /// did and [`RegisterOutput::Fail`] if it did not.
    CompareAndSet {
        /// The value the register must hold.
        expected: V,
        /// The value to write.
        new: V,
    },
}

/// An answer from a [`Register`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput<V> {
    /// The value read.
    Value(V),
    /// The write or compare-and-set took effect.
    Ok,
    /// The compare-and-set found another value and changed nothing.
    Fail,
}

impl<V: Clone + Eq + Hash + Debug> Model for Register<V> {
    type State = V;
    type Input = RegisterInput<V>;
    type Output = RegisterOutput<V>;

    fn init(&self) -> V {
        self.initial.clone()
    }

    fn step(
        &self,
        state: &V,
        input: &RegisterInput<V>,
        output: &RegisterOutput<V>,
    ) -> impl IntoIterator<Item = V> {
        match (input, output) {
            (RegisterInput::Read, RegisterOutput::Value(v)) => (v == state).then(|| state.clone()),
            (RegisterInput::Write(new), RegisterOutput::Ok) => Some(new.clone()),
            (RegisterInput::CompareAndSet { expected, new }, RegisterOutput::Ok) => {
                (expected == state).then(|| new.clone())
            }
            (RegisterInput::CompareAndSet { expected, .. }, RegisterOutput::Fail) => {
                (expected != state).then(|| state.clone())
            }
            // An answer of the wrong kind is never possible.
            _ => None,
        }
    }

    fn step_unknown(&self, state: &V, input: &RegisterInput<V>) -> impl IntoIterator<Item = V> {
        // The register is deterministic: whatever the lost answer was, the effect follows from
        // the state.
        let next = match input {
            RegisterInput::Read => state.clone(),
            RegisterInput::Write(new) => new.clone(),
            RegisterInput::CompareAndSet { expected, new } if expected == state => new.clone(),
            RegisterInput::CompareAndSet { .. } => state.clone(),
        };
        Some(next)
    }
}
