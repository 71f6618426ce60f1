//! Dapr's gRPC API (`dapr.proto.runtime.v1.Dapr`), so the SDKs that speak gRPC (Python, Go,
//! Java, .NET, JavaScript in gRPC mode) work against herd unchanged.
//!
//! Each listener is plain h2c served by axum; one handler reads the method from the path, tonic's
//! server (`tonic::server::Grpc`) takes the message off its gRPC frame, and prost decodes it into
//! the message types the `dapr` crate ships. tonic runs with a codec that passes bytes through,
//! so its framing code is in the binary once rather than once per message type. The methods call the same building-block functions as the HTTP API
//! (`state::ops`, `publish`, `lock`, `invoke`, `meta`), so validation, resiliency policies
//! and metrics exist once; this module only converts messages and errors:
//!
//! - `state.rs`: GetState, GetBulkState, SaveState, DeleteState, DeleteBulkState,
//!   ExecuteStateTransaction (QueryStateAlpha1 is UNIMPLEMENTED: herd has no state query);
//! - `publish.rs`: PublishEvent, BulkPublishEventAlpha1 (and BulkPublishEvent);
//! - `invoke.rs`: InvokeService;
//! - `runtime.rs`: TryLockAlpha1, UnlockAlpha1, GetMetadata, SetMetadata, Shutdown;
//! - `status.rs`: [`ApiError`](crate::ApiError) → gRPC status with Dapr's error details;
//! - `callback.rs`: the client side, herd calling an app's `AppCallback` service.
//!
//! As over HTTP: the `dapr-api-token` metadata is checked when a token is set
//! (UNAUTHENTICATED otherwise), a message larger than `[api] max_body` is RESOURCE_EXHAUSTED,
//! every call runs in a SERVER span whose parent comes from `traceparent` or `grpc-trace-bin`
//! and is listed in the dashboard's recent requests (`gRPC <Method>`), and any other method
//! answers UNIMPLEMENTED naming it.

pub mod callback;
mod invoke;
mod publish;
mod runtime;
mod state;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{Buf, BufMut, Bytes};
use herd_telemetry::recent;
use herd_telemetry::traceparent::{TRACEPARENT, TRACESTATE};
use herd_telemetry::{Traced, context};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use crate::{Listener, Shared};

/// The gRPC service path prefix of Dapr's runtime API.
const SERVICE: &str = "/dapr.proto.runtime.v1.Dapr/";

/// What one listener's calls share.
struct Ctx {
    shared: Arc<Shared>,
    app: Arc<str>,
    max_body: usize,
}

/// Serves Dapr's gRPC API on `listeners` until `stop`; open calls finish first.
pub fn serve(
    shared: Arc<Shared>,
    max_body: usize,
    listeners: Vec<Listener>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<()> {
    for listener in listeners {
        listener.socket.set_nonblocking(true)?;
        let socket = tokio::net::TcpListener::from_std(listener.socket)?;
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            app: listener.app_id.into(),
            max_body,
        });
        let app = axum::Router::new().fallback(handle).with_state(ctx);
        let stop = stop.clone();
        tracker.spawn(async move {
            let served = axum::serve(socket, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("sidecar gRPC listener failed: {e}");
            }
        });
    }
    Ok(())
}

/// A status as a trailers-only gRPC response.
fn answer(status: Status) -> Response {
    status.into_http::<axum::body::Body>()
}

/// Every call: token, span, then the method.
async fn handle(State(ctx): State<Arc<Ctx>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let Some(method) = path.strip_prefix(SERVICE) else {
        return answer(Status::unimplemented(format!(
            "unknown service or method {path}: herd serves dapr.proto.runtime.v1.Dapr"
        )));
    };
    if let Some(token) = &ctx.shared.token {
        let given = request
            .headers()
            .get("dapr-api-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !crate::constant_time_eq(given, token.as_bytes()) {
            return answer(Status::unauthenticated(
                "authentication error: api token mismatch",
            ));
        }
    }
    let parent = parent(request.headers());
    let method = method.to_string();
    let hop = Traced::start(
        SpanKind::Server,
        format!("{SERVICE}{method}")
            .trim_start_matches('/')
            .to_string(),
        &context::remote(parent),
        || {
            vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "dapr.proto.runtime.v1.Dapr"),
                KeyValue::new("rpc.method", method.clone()),
                KeyValue::new("herd.app_id", ctx.app.to_string()),
            ]
        },
    );
    let started = std::time::Instant::now();
    let trace_id = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| recent::trace_id_of(v.as_bytes()));
    let response = hop.wrap(dispatch(ctx.clone(), &method, request)).await;
    // An error is answered trailers-only, its status a header; otherwise it is OK so far (a
    // failure while the answer streams is rare for unary calls and not seen here).
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    if hop.is_recording() {
        hop.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    }
    hop.end();
    recent::push(recent::Finished::new(
        recent::Source::Api,
        format!("gRPC {method}").into(),
        trace_id,
        callback::http_status(tonic::Code::from(code)).as_u16(),
        started,
        started.elapsed(),
    ));
    response
}

/// The caller's span context: W3C `traceparent` (with `tracestate`), else the binary
/// `grpc-trace-bin` (OpenCensus format) that older gRPC SDKs send.
fn parent(headers: &http::HeaderMap) -> Option<opentelemetry::trace::SpanContext> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(tp) = header(TRACEPARENT.as_str()) {
        return context::parse(tp, header(TRACESTATE.as_str()));
    }
    let bin = header("grpc-trace-bin")?;
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(bin.trim_end_matches('='))
        .ok()?;
    context::parse(&trace_bin_to_traceparent(&raw)?, None)
}

/// `grpc-trace-bin` (version 0: field 0 trace id, field 1 span id, field 2 options) as a
/// `traceparent`.
fn trace_bin_to_traceparent(raw: &[u8]) -> Option<String> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    match raw {
        [
            0,
            0,
            trace @ ..,
            1,
            s0,
            s1,
            s2,
            s3,
            s4,
            s5,
            s6,
            s7,
            2,
            flags,
        ] if trace.len() == 16 => Some(format!(
            "00-{}-{}-{:02x}",
            hex(trace),
            hex(&[*s0, *s1, *s2, *s3, *s4, *s5, *s6, *s7]),
            flags & 1
        )),
        _ => None,
    }
}

/// A method's body once the gRPC framing is off: the request message's bytes in, the answer's
/// bytes out.
type Method = Box<
    dyn FnOnce(Arc<Ctx>, Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, Status>> + Send>>
        + Send,
>;

/// Runs one unary method: decodes `Req`, calls `f`, encodes the answer. Only the protobuf
/// conversion is per method; the framing, size limit and status handling ([`frame`]) exist
/// once in the binary rather than once per message type.
async fn unary<Req, Resp, F, Fut>(ctx: Arc<Ctx>, request: Request, f: F) -> Response
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Arc<Ctx>, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    let method: Method = Box::new(move |ctx, body| {
        Box::pin(async move {
            // What tonic's prost codec answers for a message that does not decode.
            let req = Req::decode(body).map_err(|e| Status::internal(e.to_string()))?;
            let resp = f(ctx, req).await?;
            Ok(Bytes::from(resp.encode_to_vec()))
        })
    });
    frame(ctx, request, method).await
}

/// The gRPC side of a unary call: reads the request message (at most `max_body` bytes) off its
/// frame, runs `method` on it and frames the answer.
async fn frame(ctx: Arc<Ctx>, request: Request, method: Method) -> Response {
    let max = ctx.max_body;
    let mut method = Some(method);
    let service = tower::service_fn(move |r: tonic::Request<Bytes>| {
        let call = method.take().map(|m| m(ctx.clone(), r.into_inner()));
        async move {
            match call {
                Some(call) => call.await.map(tonic::Response::new),
                None => Err(Status::internal("a unary method was called twice")),
            }
        }
    });
    let mut grpc =
        tonic::server::Grpc::new(RawCodec).apply_max_message_size_config(Some(max), None);
    let response = grpc.unary(service, request).await;
    // tonic refuses an oversize message with OUT_OF_RANGE; gRPC servers elsewhere (daprd's
    // grpc-go among them) say RESOURCE_EXHAUSTED, which is what clients expect.
    let status = response.headers().get("grpc-status").map(|v| v.as_bytes());
    if status == Some(b"11")
        && let Some(why) = Status::from_header_map(response.headers())
        && why.message().contains("message length too large")
    {
        return answer(Status::resource_exhausted(format!(
            "{} ([api] max_body)",
            why.message()
        )));
    }
    response.into_response()
}

/// A codec that passes a message's bytes through: the protobuf conversion happens in
/// [`unary`], outside tonic's generic code.
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Routes a method to its handler.
async fn dispatch(ctx: Arc<Ctx>, method: &str, request: Request) -> Response {
    match method {
        "GetState" => unary(ctx, request, state::get).await,
        "GetBulkState" => unary(ctx, request, state::bulk_get).await,
        "SaveState" => unary(ctx, request, state::save).await,
        "DeleteState" => unary(ctx, request, state::delete).await,
        "DeleteBulkState" => unary(ctx, request, state::delete_bulk).await,
        "ExecuteStateTransaction" => unary(ctx, request, state::transaction).await,
        "PublishEvent" => unary(ctx, request, publish::publish).await,
        "BulkPublishEventAlpha1" | "BulkPublishEvent" => unary(ctx, request, publish::bulk).await,
        "InvokeService" => unary(ctx, request, invoke::invoke).await,
        "TryLockAlpha1" => unary(ctx, request, runtime::try_lock).await,
        "UnlockAlpha1" => unary(ctx, request, runtime::unlock).await,
        "GetMetadata" => unary(ctx, request, runtime::metadata).await,
        "SetMetadata" => unary(ctx, request, runtime::set_metadata).await,
        "Shutdown" => unary(ctx, request, runtime::shutdown).await,
        "QueryStateAlpha1" => answer(Status::unimplemented(
            "QueryStateAlpha1 is not implemented: herd's state stores have no query API",
        )),
        other => answer(Status::unimplemented(format!(
            "method {other} of dapr.proto.runtime.v1.Dapr is not implemented by herd"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_trace_bin_becomes_a_traceparent() {
        let mut raw = vec![0u8, 0];
        raw.extend(1..=16u8);
        raw.push(1);
        raw.extend([0xaa; 8]);
        raw.extend([2, 1]);
        assert_eq!(
            trace_bin_to_traceparent(&raw).as_deref(),
            Some("00-0102030405060708090a0b0c0d0e0f10-aaaaaaaaaaaaaaaa-01")
        );
        assert_eq!(trace_bin_to_traceparent(&raw[..20]), None);
    }
}
