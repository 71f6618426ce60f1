//! [`PubSubError`]: what went wrong, classified for the API's status codes.

use thiserror::Error;

/// A pub/sub operation that did not happen.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PubSubError {
    /// The request cannot be served as asked (bad topic name, unsupported option).
    #[error("{0}")]
    Invalid(String),
    /// The backend could not be reached or refused the operation; it may be retried.
    #[error("pub/sub backend unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("pub/sub backend error: {0}")]
    Internal(String),
}
