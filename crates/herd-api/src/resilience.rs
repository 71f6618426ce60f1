//! Component calls under their outbound resiliency policy (`Policies::component_outbound`):
//! how state and pub/sub results are classified, and how a policy's own refusals are answered.
//!
//! A failed condition (ETag mismatch, stale fencing token, an ETag the store never issued) or
//! an invalid request is the client's business: returned at once, never retried, not a breaker
//! failure. A backend that cannot be reached or answers with an error is retried and counted.
//! A timed-out attempt is a backend failure; an open breaker is answered with the operation's
//! error code and status 500, as Dapr answers its `circuit breaker is open` error.

use axum::http::StatusCode;
use herd_pubsub::PubSubError;
use herd_resilience::{Outcome, Policy, RunError};
use herd_state::StateError;

use crate::error::ApiError;

/// How a state store's answer counts.
pub(crate) fn state_outcome<T>(result: &Result<T, StateError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(StateError::Unavailable(_) | StateError::Internal(_)) => Outcome::Failure,
        Err(_) => Outcome::Permanent,
    }
}

/// How a broker's answer counts.
pub(crate) fn pubsub_outcome<T>(result: &Result<T, PubSubError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(PubSubError::Invalid(_)) => Outcome::Permanent,
        Err(_) => Outcome::Failure,
    }
}

/// A state call that did not succeed under its policy, as the API answers it.
pub(crate) fn state_error(code: &'static str, context: &str, e: RunError<StateError>) -> ApiError {
    match e {
        RunError::Failed(e) => ApiError::state(code, context, &e),
        other => refused(code, context, &other),
    }
}

/// The answer for a policy's own refusal (timeout, open breaker) of operation `code`.
pub(crate) fn refused<E: std::fmt::Display>(
    code: &'static str,
    context: &str,
    e: &RunError<E>,
) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        code,
        format!("{context}: {e}"),
    )
}

/// A request's input, handed to every attempt: cloned when the policy may retry, moved into
/// the only attempt otherwise.
pub(crate) struct Reuse<T> {
    value: Option<T>,
    retries: bool,
}

impl<T: Clone> Reuse<T> {
    /// Holds `value` for the attempts `policy` makes.
    pub(crate) fn new(policy: &Policy, value: T) -> Self {
        Self {
            value: Some(value),
            retries: policy.retry().is_some(),
        }
    }

    /// The input of the next attempt.
    pub(crate) fn next(&mut self) -> T {
        if self.retries {
            self.value.clone().expect("kept for every attempt")
        } else {
            self.value
                .take()
                .expect("a policy without retries makes one attempt")
        }
    }
}
