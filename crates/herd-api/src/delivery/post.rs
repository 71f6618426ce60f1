//! One delivery POST: the CloudEvent sent to a route of one instance with the headers Dapr sets
//! (`content-type`, `pubsubname`, `traceparent`), and the answer read as a [`Verdict`]; for a
//! gRPC app, the `OnTopicEvent` call instead.

use std::net::SocketAddr;

use bytes::Bytes;
use herd_config::SubscriptionSpec;
use herd_telemetry::traceparent::TRACEPARENT;
use http_body_util::{BodyExt, Full};

use super::{App, DELIVERY_TIMEOUT, Verdict, verdict};

/// The delivery request for `event` (serialised as `body`), with Dapr's headers.
pub(super) fn delivery_request(
    addr: SocketAddr,
    path: &str,
    pubsub: &str,
    event: &serde_json::Value,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, "application/cloudevents+json")
        .header("pubsubname", pubsub);
    // Inside a delivery's span, that span is the app's parent; else the event's context.
    let current = herd_telemetry::current_traceparent();
    if let Some(tp) = current
        .as_deref()
        .or_else(|| event.get("traceparent").and_then(|t| t.as_str()))
    {
        request = request.header(TRACEPARENT, tp);
    }
    request.body(Full::new(body))
}

/// POSTs the event; any transport failure or timeout is a retry.
pub(super) async fn post(
    app: &App,
    addr: SocketAddr,
    path: &str,
    sub: &SubscriptionSpec,
    event: &serde_json::Value,
    body: Bytes,
) -> Verdict {
    let pubsub = sub.pubsub.as_str();
    if let Some(channels) = &app.grpc {
        return over_grpc(channels, addr, path, sub, event, &body).await;
    }
    let Ok(request) = delivery_request(addr, path, pubsub, event, body) else {
        return Verdict::Drop;
    };
    let answer = tokio::time::timeout(DELIVERY_TIMEOUT, async {
        let response = app.client.request(request).await.ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some(verdict(status, &body))
    })
    .await;
    match answer {
        Ok(Some(v)) => v,
        _ => Verdict::Retry,
    }
}

/// `OnTopicEvent` to a gRPC app: its status read as Dapr reads it; an error is a retry.
async fn over_grpc(
    channels: &crate::grpc::callback::Channels,
    addr: SocketAddr,
    path: &str,
    sub: &SubscriptionSpec,
    event: &serde_json::Value,
    body: &[u8],
) -> Verdict {
    // The topic is the subscription's, as daprd sends it: a dead-lettered event still names
    // the topic it was first published to.
    let request = crate::grpc::callback::topic_event(event, body, &sub.pubsub, &sub.topic, path);
    let current = herd_telemetry::current_traceparent();
    let traceparent = current
        .as_deref()
        .or_else(|| event.get("traceparent").and_then(|t| t.as_str()));
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
