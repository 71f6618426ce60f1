//! One delivery POST: the CloudEvent sent to a route of one instance with the headers Dapr sets
//! (`content-type`, `pubsubname`, `traceparent`), and the answer read as a [`Verdict`]; for a
//! gRPC app, the `OnTopicEvent` call instead.

use std::net::SocketAddr;

use bytes::Bytes;
use herd_config::SubscriptionSpec;
use herd_telemetry::traceparent::TRACEPARENT;
use http_body_util::{BodyExt, Full};

use super::{App, DELIVERY_TIMEOUT, Verdict, verdict};

/// The delivery request for an event (serialised as `body`, of `content_type`), with Dapr's
/// headers; `traceparent` is the event's own context.
pub(super) fn delivery_request(
    addr: SocketAddr,
    path: &str,
    pubsub: &str,
    content_type: &'static str,
    traceparent: Option<&str>,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, content_type)
        .header("pubsubname", pubsub);
    // Inside a delivery's span, that span is the app's parent; else the event's context.
    let current = herd_telemetry::current_traceparent();
    if let Some(tp) = current.as_deref().or(traceparent) {
        request = request.header(TRACEPARENT, tp);
    }
    request.body(Full::new(body))
}

/// POSTs `request` and reads the answer; `None` on a transport failure or timeout.
pub(super) async fn exchange(
    app: &App,
    request: http::Request<Full<Bytes>>,
) -> Option<(http::StatusCode, Bytes)> {
    tokio::time::timeout(DELIVERY_TIMEOUT, async {
        let response = app.client.request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    })
    .await
    .ok()
    .flatten()
}

/// POSTs the event; any transport failure or timeout is a retry.
pub(super) async fn post(
    app: &App,
    addr: SocketAddr,
    path: &str,
    pubsub: &str,
    traceparent: Option<&str>,
    body: Bytes,
) -> Verdict {
    let content_type = "application/cloudevents+json";
    let Ok(request) = delivery_request(addr, path, pubsub, content_type, traceparent, body) else {
        return Verdict::Drop;
    };
    match exchange(app, request).await {
        Some((status, body)) => verdict(status, &body),
        None => Verdict::Retry,
    }
}

/// What `OnTopicEvent` sends: the event read whole, as it came (`body`), and its trace context.
pub(super) struct Call<'a> {
    pub event: &'a serde_json::Value,
    pub body: &'a [u8],
    pub traceparent: Option<&'a str>,
}

/// `OnTopicEvent` to a gRPC app: its status read as Dapr reads it; an error is a retry.
pub(super) async fn over_grpc(
    channels: &crate::grpc::callback::Channels,
    addr: SocketAddr,
    path: &str,
    sub: &SubscriptionSpec,
    call: Call<'_>,
) -> Verdict {
    // The topic is the subscription's, as daprd sends it: a dead-lettered event still names
    // the topic it was first published to.
    let request =
        crate::grpc::callback::topic_event(call.event, call.body, &sub.pubsub, &sub.topic, path);
    // Inside a delivery's span, that span is the app's parent; else the event's context.
    let current = herd_telemetry::current_traceparent();
    let traceparent = current.as_deref().or(call.traceparent);
    let answer = tokio::time::timeout(
        DELIVERY_TIMEOUT,
        channels.topic_event(addr, request, traceparent),
    )
    .await;
    match answer {
        Ok(Ok(0)) => Verdict::Ack,
        Ok(Ok(2)) => Verdict::Drop,
        Ok(Ok(_)) => Verdict::Retry,
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %addr, "OnTopicEvent failed: {e}");
            Verdict::Retry
        }
        Err(_) => Verdict::Retry,
    }
}
