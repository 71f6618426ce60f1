//! Errors as Dapr's gRPC API reports them: the code daprd uses for the HTTP status the HTTP API
//! answers (400 → INVALID_ARGUMENT, 404 → NOT_FOUND, 409 → ABORTED (ETag mismatch), 413 →
//! RESOURCE_EXHAUSTED, 500 → INTERNAL, 503 → UNAVAILABLE, 504 → DEADLINE_EXCEEDED), the same
//! message, and a `google.rpc.ErrorInfo` detail (domain `dapr.io`) whose reason the SDKs read
//! (e.g. `DAPR_STATE_ETAG_MISMATCH`), with Dapr's `ERR_*` code in its metadata.

use std::collections::HashMap;

use axum::http::StatusCode;
use prost::Message;
use tonic::{Code, Status};

use crate::error::ApiError;

/// `google.rpc.ErrorInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: HashMap<String, String>,
}

/// The gRPC code for an HTTP API status.
pub(crate) fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 | 412 => Code::Aborted,
        413 => Code::ResourceExhausted,
        429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// The `ErrorInfo` reason for an error, as Dapr's richer error model names it.
fn reason(e: &ApiError) -> String {
    match (e.code, e.status.as_u16()) {
        (_, 409) if e.message.contains("fencing") => "DAPR_STATE_FENCED".into(),
        (_, 409) => "DAPR_STATE_ETAG_MISMATCH".into(),
        ("ERR_STATE_STORE_NOT_FOUND", _) => "DAPR_STATE_NOT_FOUND".into(),
        ("ERR_STATE_STORE_NOT_CONFIGURED", _) => "DAPR_STATE_NOT_CONFIGURED".into(),
        ("ERR_PUBSUB_NOT_FOUND", _) => "DAPR_PUBSUB_NOT_FOUND".into(),
        ("ERR_LOCK_STORE_NOT_FOUND", _) => "DAPR_LOCK_NOT_FOUND".into(),
        ("ERR_MALFORMED_REQUEST", _) if e.message.contains("'||'") => {
            "DAPR_STATE_ILLEGAL_KEY".into()
        }
        (code, _) => code.replacen("ERR_", "DAPR_", 1),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = code_of(e.status);
        let info = ErrorInfo {
            reason: reason(&e),
            domain: "dapr.io".into(),
            metadata: HashMap::from([("errorCode".to_string(), e.code.to_string())]),
        };
        let details = dapr::google::rpc::Status {
            code: code as i32,
            message: e.message.clone(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        Status::with_details(code, e.message, details.encode_to_vec().into())
    }
}

/// A request field the method requires.
pub(crate) fn required(what: &str) -> Status {
    Status::invalid_argument(format!("{what} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_aborted_with_the_reason_sdks_read() {
        let e = ApiError::new(StatusCode::CONFLICT, "ERR_STATE_SAVE", "etag mismatch");
        let s = Status::from(e);
        assert_eq!(s.code(), Code::Aborted);
        let details = dapr::google::rpc::Status::decode(s.details()).unwrap();
        let info = ErrorInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(info.reason, "DAPR_STATE_ETAG_MISMATCH");
        assert_eq!(info.metadata["errorCode"], "ERR_STATE_SAVE");
        let bad = Status::from(ApiError::malformed("key is empty"));
        assert_eq!(bad.code(), Code::InvalidArgument);
    }
}
