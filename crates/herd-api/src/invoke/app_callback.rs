//! Invocation of a gRPC app (`app_protocol = "grpc"`): `OnInvoke` on its instances through
//! `grpc/callback.rs`, with the same endpoint picking, reports and refused-connection retries as
//! the HTTP attempts in `invoke.rs`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use herd_telemetry::traceparent::TRACEPARENT;
use herd_upstream::{Attempt, Decisions, Pool};

use super::{Failure, MAX_TRIES, Template};

/// Calls `OnInvoke` on instances of a gRPC app: a refused connection moves on to the next
/// instance; an answer (or the app's error status, as an HTTP status) is the answer.
pub(super) async fn attempts(
    pool: &Pool,
    channels: &crate::grpc::callback::Channels,
    req: &Template,
    app: &str,
    caller: &str,
    deadline: tokio::time::Instant,
) -> Result<Response, Failure> {
    use crate::grpc::callback::{CallError, Invocation};
    let mut decisions = Decisions::default();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let path_and_query = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let traceparent = req.headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
    loop {
        let pick = pool
            .pick(&tried, &mut decisions)
            .map_err(Failure::NoEndpoint)?;
        let addr = pick.addr;
        let call = Invocation {
            method: &req.method,
            path_and_query,
            content_type,
            body: &req.body,
            caller,
            callee: app,
            traceparent,
        };
        match tokio::time::timeout_at(deadline, channels.invoke(addr, call)).await {
            Err(_) => {
                pick.report(Attempt::NoAnswer, &mut decisions);
                return Err(Failure::TimedOut);
            }
            Ok(Ok((status, content_type, body))) => {
                pick.report(Attempt::Answered(status.as_u16()), &mut decisions);
                let mut resp = Response::new(Body::from(body));
                *resp.status_mut() = status;
                if let Ok(v) = HeaderValue::from_str(&content_type) {
                    resp.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                return Ok(resp);
            }
            Ok(Err(CallError::Connect(e))) if tried.len() + 1 < MAX_TRIES => {
                tracing::debug!(endpoint = %addr, "app {app}: connect failed, trying another instance: {e}");
                pick.report(Attempt::NoAnswer, &mut decisions);
                tried.push(addr);
            }
            Ok(Err(e)) => {
                pick.report(Attempt::NoAnswer, &mut decisions);
                return Err(Failure::Grpc(e.to_string()));
            }
        }
    }
}
