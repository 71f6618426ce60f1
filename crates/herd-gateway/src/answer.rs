//! herd's own answers, when the gateway answers a request itself rather than an endpoint: a
//! short JSON body naming the error, the upstream and the request id (404 no route, 413 body too
//! large, 429 rate limited, 503 no endpoint or at the concurrency limit, 502 upstream failure,
//! 504 timeout, and the 400/405/501 to a refused head, which closes the connection); and which send failures are the client's fault rather than the endpoint's.

use bytes::Bytes;
use herd_upstream::inbound::Fault;
use herd_upstream::{ClientBody, NoEndpoint, Pool};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::{Either, Full, LengthLimitError};

use crate::trace::{TraceContext, X_REQUEST_ID};

/// What goes back to the client: the upstream's body, or herd's own answer.
pub type DownBody = Either<ClientBody, Full<Bytes>>;

/// Whether `e` or anything that caused it satisfies `test`.
fn caused_by(
    e: &(dyn std::error::Error + 'static),
    test: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if test(err) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Why sending failed when the fault lies with the client's body rather than the upstream:
/// over the size limit (413), or malformed, e.g. bad chunking (400).
pub fn client_body_fault(
    e: &(dyn std::error::Error + 'static),
) -> Option<(StatusCode, &'static str)> {
    if caused_by(e, |err| err.is::<LengthLimitError>()) {
        return Some((StatusCode::PAYLOAD_TOO_LARGE, "request body too large"));
    }
    // hyper reports an error from the body it was given to send as a "user" error.
    if caused_by(e, |err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_user())
    }) {
        return Some((StatusCode::BAD_REQUEST, "malformed request body"));
    }
    None
}

/// herd's own answer: `{"error": ..., "upstream": ..., "requestId": ...}`.
pub fn answer(
    status: StatusCode,
    error: &str,
    upstream: Option<&str>,
    trace: &TraceContext,
) -> Response<DownBody> {
    let body = serde_json::json!({
        "error": error,
        "upstream": upstream,
        "requestId": trace.request_id_str(),
    });
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(X_REQUEST_ID, trace.request_id().clone());
    r
}

/// Finishes herd's answer to a refused head (`inbound.rs`): `Allow` on a 405, and the
/// connection closed after it.
pub fn refused(response: &mut Response<DownBody>, version: Version) {
    let allow = response.status() == StatusCode::METHOD_NOT_ALLOWED;
    let h = response.headers_mut();
    if allow {
        h.insert(header::ALLOW, Fault::ALLOW);
    }
    if let Some(close) = Fault::close(version) {
        h.insert(header::CONNECTION, close);
    }
}

/// The answer when no endpoint can take the request.
pub fn no_endpoint(why: NoEndpoint, pool: &Pool, trace: &TraceContext) -> Response<DownBody> {
    match why {
        NoEndpoint::Empty => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ready endpoint",
            Some(&pool.name),
            trace,
        ),
        NoEndpoint::BreakersOpen => {
            let mut r = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "every endpoint's circuit breaker is open",
                Some(&pool.name),
                trace,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        NoEndpoint::Ejected => {
            let mut r = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "every endpoint is ejected as an outlier",
                Some(&pool.name),
                trace,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        NoEndpoint::AllTried => answer(
            StatusCode::BAD_GATEWAY,
            "every endpoint refused the connection",
            Some(&pool.name),
            trace,
        ),
    }
}
