//! [`ApiError`]: a failed API call as Dapr reports it, a status code and
//! `{"errorCode": …, "message": …}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herd_state::StateError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Dapr's error code, e.g. `ERR_STATE_SAVE`.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400 ERR_MALFORMED_REQUEST`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", message)
    }

    /// A backend failure of operation `code`: conditions that failed are 409 (400 for an ETag
    /// the store could not have issued), everything else 500.
    pub fn state(code: &'static str, context: &str, e: &StateError) -> Self {
        let status = match e {
            StateError::EtagMismatch { .. } | StateError::Fenced { .. } => StatusCode::CONFLICT,
            StateError::EtagInvalid { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, code, format!("{context}: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errorCode": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}
