//! Key/value state for herd's sidecar API: the [`StateStore`] contract (`store.rs`) and its
//! backends, a folder each: `embedded` (redb, the default), `redis` and `postgres`.
//!
//! A component in herd.toml or a Dapr component file names a backend by Dapr type
//! (`state.redis`, …) and configures it with Dapr's metadata keys. [`configure`] turns that
//! into a [`Backend`] at start-up, so a bad value is a config error before anything runs;
//! [`open`] connects it, which may fail and is retried by the caller (`settings.rs`, which only
//! dispatches). Adding a backend means one folder implementing [`StateStore`] and one arm in each
//! of those two functions.
//!
//! A backend's folder: `<name>.rs` (the store and its [`StateStore`] impl), `<name>/settings.rs`
//! (its metadata → its settings, `configure`), and for the embedded store `embedded/commit.rs`
//! (the writer thread's commit path) and `embedded/tests.rs`. Only the `redis` and `postgres`
//! folders name their client crates, and each is a cargo feature of the same name (default: on);
//! a build without one still knows the component type and refuses it with a config error.

#![forbid(unsafe_code)]

mod embedded;
mod error;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod rules;
mod settings;
mod store;

pub use embedded::Embedded;
pub use error::StateError;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresSettings, PostgresStore};
#[cfg(feature = "redis")]
pub use redis::{RedisSettings, RedisStore};
pub use settings::{Backend, KINDS, configure, open};
pub use store::{
    Capabilities, Concurrency, Consistency, DeleteOp, Guard, LockOutcome, LockRequest, OutboxEntry,
    SetOp, StateStore, UnlockStatus, Versioned, WriteOp,
};
