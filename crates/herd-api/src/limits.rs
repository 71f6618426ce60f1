//! Sizes the sidecar API accepts, and what it answers to requests it refuses before any
//! handler runs.
//!
//! Names and keys arrive from apps and end up in stores, broker subjects, metric labels and log
//! lines, so each has a bound (README, "Sidecar API limits"); past it the answer is a 400 with
//! Dapr's `{errorCode, message}` and nothing is stored or sent:
//!
//! | what                                   | limit                                 | code                    |
//! |----------------------------------------|---------------------------------------|-------------------------|
//! | state key, lock resource id            | 1024 bytes                            | `ERR_MALFORMED_REQUEST` |
//! | component name (state store, pub/sub)  | 128 bytes                             | `ERR_MALFORMED_REQUEST` |
//! | topic                                  | 255 bytes                             | `ERR_MALFORMED_REQUEST` |
//! | metadata (query `metadata.*` or body)  | 64 entries, names 256 B, values 4 KiB | `ERR_MALFORMED_REQUEST` |
//! | invoked app id                         | 64 bytes of `A-Z a-z 0-9 - _`         | `ERR_DIRECT_INVOKE`     |
//!
//! Route parameters are checked by the layer on every matched route ([`path_params`]); keys
//! where they are prefixed (`keys.rs`), metadata where it is read. [`refused_head`] answers
//! heads HTTP says to refuse (`herd_upstream::inbound`) as Dapr errors, and [`dapr_json`] turns the
//! framework's plain-text 400 and 413 answers (a body over `[api] max_body`, an unreadable query)
//! into Dapr JSON, leaving the answers of invoked apps alone.

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use herd_upstream::inbound::{Fault, head_fault};

use crate::error::ApiError;

/// Longest state key or lock resource id, in bytes.
pub const MAX_KEY: usize = 1024;
/// Longest component name, in bytes.
pub const MAX_NAME: usize = 128;
/// Longest topic, in bytes.
pub const MAX_TOPIC: usize = 255;
/// Longest app id, in bytes.
pub const MAX_APP_ID: usize = 64;
/// Most metadata entries of a request or item.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata name, in bytes.
pub const MAX_METADATA_NAME: usize = 256;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE: usize = 4096;

/// The start of `s` for an error message: at most 64 bytes, cut at a character boundary.
fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((end, _)) if end < s.len() => format!("{}…", &s[..end]),
        _ => s.to_string(),
    }
}

fn too_long(what: &str, value: &str, max: usize) -> ApiError {
    ApiError::malformed(format!(
        "{what} {:?} is {} bytes long; at most {max} are accepted",
        shown(value),
        value.len()
    ))
}

/// A state key or lock resource id.
pub fn key(key: &str) -> Result<(), ApiError> {
    if key.len() > MAX_KEY {
        return Err(too_long("key", key, MAX_KEY));
    }
    Ok(())
}

/// The metadata of a request or an item, as (name, value length) pairs.
pub fn metadata<'a>(
    entries: impl ExactSizeIterator<Item = (&'a str, usize)>,
) -> Result<(), ApiError> {
    if entries.len() > MAX_METADATA_ENTRIES {
        return Err(ApiError::malformed(format!(
            "{} metadata entries; at most {MAX_METADATA_ENTRIES} are accepted",
            entries.len()
        )));
    }
    for (name, value) in entries {
        if name.len() > MAX_METADATA_NAME {
            return Err(too_long("metadata name", name, MAX_METADATA_NAME));
        }
        if value > MAX_METADATA_VALUE {
            return Err(ApiError::malformed(format!(
                "metadata {:?} is {value} bytes long; at most {MAX_METADATA_VALUE} are accepted",
                shown(name)
            )));
        }
    }
    Ok(())
}

/// An app id to invoke: letters, digits, `-` and `_`, as herd's service names; anything else
/// (e.g. `%2e%2e%2fx`) names no app and is a 400 rather than a failed call.
pub fn app_id(id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_APP_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "ERR_DIRECT_INVOKE",
        format!(
            "invalid app id {:?}: use 1 to {MAX_APP_ID} letters, digits, '-' and '_'",
            shown(id)
        ),
    ))
}

/// `text` with every byte but letters, digits, `-`, `_` and `.` percent-encoded: an app id
/// from the `dapr-app-id` header as one path segment.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            escaped.push(char::from(b));
        } else {
            escaped.push('%');
            escaped.push_str(&format!("{b:02X}"));
        }
    }
    escaped
}

/// Checks the route's parameters: component names, topic and key. A parameter that is not
/// UTF-8 is axum's own rejection.
pub async fn path_params(request: Request) -> Result<Request, Response> {
    let (mut parts, body) = request.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map_err(IntoResponse::into_response)?;
    for (name, value) in &params {
        let checked = match name {
            "store" | "pubsub" if value.len() > MAX_NAME => {
                Err(too_long("component name", value, MAX_NAME))
            }
            "topic" if value.len() > MAX_TOPIC => Err(too_long("topic", value, MAX_TOPIC)),
            "key" => key(value),
            _ => Ok(()),
        };
        checked.map_err(IntoResponse::into_response)?;
    }
    Ok(Request::from_parts(parts, body))
}

/// The answer to a head herd refuses (no or two `Host`, `CONNECT`, an unimplemented transfer
/// coding): a Dapr error that closes an HTTP/1 connection; `None` for every other request.
pub fn refused_head(request: &Request) -> Option<Response> {
    let fault = head_fault(request.version(), request.method(), request.headers())?;
    let code = match fault.status {
        StatusCode::NOT_IMPLEMENTED => "ERR_API_UNIMPLEMENTED",
        _ => "ERR_BAD_REQUEST",
    };
    let mut r = ApiError::new(fault.status, code, fault.reason).into_response();
    if fault.status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut().insert(header::ALLOW, Fault::ALLOW);
    }
    if let Some(close) = Fault::close(request.version()) {
        r.headers_mut().insert(header::CONNECTION, close);
    }
    Some(r)
}

/// What axum itself answers (a path segment that is not UTF-8, a body over the limit, a method a
/// route does not take) is plain text; the Dapr API answers every error as `{errorCode,
/// message}`. `response` is the answer to a request that was (`invocation`) or was not an
/// invocation: invocations are left alone, as their answers are the invoked app's.
pub async fn dapr_json(response: Response, invocation: bool, max_body: usize) -> Response {
    let status = response.status();
    if invocation || !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut answer = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "ERR_BODY_TOO_LARGE",
            format!("request body too large: at most {max_body} bytes are accepted"),
        )
    } else {
        let text = axum::body::to_bytes(body, 64 * 1024)
            .await
            .unwrap_or_default();
        let code = match status {
            StatusCode::METHOD_NOT_ALLOWED => "ERR_METHOD_NOT_ALLOWED",
            s if s.is_server_error() => "ERR_INTERNAL",
            _ => "ERR_MALFORMED_REQUEST",
        };
        ApiError::new(status, code, String::from_utf8_lossy(&text).into_owned())
    }
    .into_response();
    // Keep what else axum said (`Allow` on a 405).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && !answer.headers().contains_key(name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_names() {
        assert!(app_id("orders").is_ok());
        assert!(app_id("order-service_2").is_ok());
        for bad in ["", "%2e%2e%2fx", "../x", "a b", "a/b", &"x".repeat(65)] {
            let e = app_id(bad).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "ERR_DIRECT_INVOKE")
            );
        }
    }

    #[test]
    fn header_app_ids_become_one_segment() {
        assert_eq!(escape("orders.prod"), "orders.prod");
        assert_eq!(escape("../x y"), "..%2Fx%20y");
    }

    #[test]
    fn keys_and_metadata_are_bounded() {
        assert!(key(&"k".repeat(MAX_KEY)).is_ok());
        let e = key(&"k".repeat(100_000)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.len() < 200,
            "the message quotes only the key's start"
        );
        let entries = |n: usize, name: &'static str, value: usize| {
            metadata(std::iter::repeat_n((name, value), n))
        };
        assert!(entries(MAX_METADATA_ENTRIES, "ttlInSeconds", 10).is_ok());
        assert!(entries(MAX_METADATA_ENTRIES + 1, "a", 1).is_err());
        assert!(entries(1, "a", MAX_METADATA_VALUE + 1).is_err());
        let long_name: &'static str = Box::leak("n".repeat(MAX_METADATA_NAME + 1).into_boxed_str());
        assert!(entries(1, long_name, 1).is_err());
    }

    #[test]
    fn messages_quote_a_bounded_start() {
        assert_eq!(shown("abc"), "abc");
        let long = "é".repeat(100);
        assert_eq!(shown(&long).chars().count(), 65);
    }
}
