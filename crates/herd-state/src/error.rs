//! [`StateError`]: what can go wrong in a state operation, classified so the API can pick the
//! status code (a condition that failed is the client's business, a backend that failed is not).

use thiserror::Error;

/// A state operation that did not happen.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The key's current ETag is not the one the request carried (or the key is missing, or a
    /// `first-write` without ETag found it present).
    #[error("possible etag mismatch for key {key:?}")]
    EtagMismatch {
        /// The key whose condition failed.
        key: String,
    },
    /// The ETag is not one this store could have issued.
    #[error("invalid etag {etag:?} for key {key:?}")]
    EtagInvalid {
        /// The key.
        key: String,
        /// What the client sent.
        etag: String,
    },
    /// The write carried a fencing token lower than one the key was already written with: its
    /// lease has expired and another holder has written since.
    #[error(
        "fencing token {token} is stale for key {key:?}: the key was written with token {seen}"
    )]
    Fenced {
        /// The key.
        key: String,
        /// The token the request carried.
        token: u64,
        /// The highest token the key was written with.
        seen: u64,
    },
    /// The backend does not offer this operation.
    #[error("{0} not supported by this state store")]
    Unsupported(&'static str),
    /// The backend could not be reached or answered with an error; the operation may be retried.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (corruption or a foreign format).
    #[error("state store error: {0}")]
    Internal(String),
}

impl StateError {
    /// True for failed conditions (ETag, fencing): the client must re-read before retrying.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StateError::EtagMismatch { .. } | StateError::Fenced { .. }
        )
    }
}
