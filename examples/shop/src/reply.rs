//! What the services' handlers share: JSON answers, error answers (`{"error": message}`), the
//! `traceparent` to pass on, and reading a JSON body whatever its content type says.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sidecar;

/// `status` with `value` as JSON.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    (status, Json(value)).into_response()
}

/// `status` with `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    json(status, &serde_json::json!({ "error": message }))
}

/// A failed sidecar call, answered 503 (the caller may try again).
pub fn unavailable(e: &sidecar::Error) -> Response {
    eprintln!("sidecar call failed: {e}");
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The request's `traceparent`, to pass on to the sidecar calls made for it.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The body as JSON of type `T`, or why not (for a 400). Content types are not checked:
/// `curl -d` sends form encoding, herd's deliveries `application/cloudevents+json`.
pub fn body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))
}

/// The `limit` query parameter: 1..=1000, default 100; or why not (for a 400).
pub fn limit(query: &std::collections::HashMap<String, String>) -> Result<usize, String> {
    match query.get("limit") {
        None => Ok(100),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(format!("limit {l:?} is not a number in 1..=1000")),
        },
    }
}
