//! `InvokeService` over gRPC: the message becomes the request the HTTP API's invocation takes
//! (`POST /v1.0/invoke/{id}/method/{method}`, verb and query from the HTTP extension), so
//! resiliency, balancing, peers and AppCallback delivery are the same; the answer's body and
//! content type come back in an `InvokeResponse`, a non-2xx answer as an error status.

use std::sync::Arc;

use axum::body::Body;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use http::{Method, Request, header};
use tonic::Status;

use super::Ctx;
use super::status::{code_of, required};

/// The HTTP method of a `HTTPExtension.Verb`; POST when unset, as daprd.
fn verb(extension: Option<&common::HttpExtension>) -> Method {
    match extension.map_or(0, |e| e.verb) {
        1 => Method::GET,
        2 => Method::HEAD,
        4 => Method::PUT,
        5 => Method::DELETE,
        6 => Method::CONNECT,
        7 => Method::OPTIONS,
        8 => Method::TRACE,
        9 => Method::PATCH,
        _ => Method::POST,
    }
}

/// `InvokeService`.
pub(super) async fn invoke(
    ctx: Arc<Ctx>,
    req: pb::InvokeServiceRequest,
) -> Result<common::InvokeResponse, Status> {
    if req.id.is_empty() {
        return Err(required("id"));
    }
    let message = req.message.ok_or_else(|| required("message"))?;
    let mut uri = format!(
        "{}{}/method/{}",
        crate::invoke::PREFIX,
        req.id,
        message.method.trim_start_matches('/')
    );
    if let Some(q) = message
        .http_extension
        .as_ref()
        .map(|e| e.querystring.as_str())
        .filter(|q| !q.is_empty())
    {
        uri.push('?');
        uri.push_str(q);
    }
    let mut builder = Request::builder()
        .method(verb(message.http_extension.as_ref()))
        .uri(&uri);
    if !message.content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, &message.content_type);
    }
    let body = message.data.map(|a| a.value).unwrap_or_default();
    let request = builder
        .body(Body::from(body))
        .map_err(|e| Status::invalid_argument(format!("cannot invoke {uri}: {e}")))?;
    let response = crate::invoke::call_from(&ctx.shared, &ctx.app, request).await;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), ctx.max_body)
        .await
        .map_err(|e| Status::internal(format!("reading the answer of {}: {e}", req.id)))?;
    if !status.is_success() {
        return Err(Status::new(
            code_of(status),
            format!(
                "invoking {} returned {status}: {}",
                req.id,
                String::from_utf8_lossy(&body)
            ),
        ));
    }
    Ok(common::InvokeResponse {
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: body.to_vec(),
        }),
        content_type,
    })
}
