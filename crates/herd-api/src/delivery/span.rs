//! Each delivery runs in its CONSUMER span, a child of the `traceparent` its CloudEvent
//! carries (OpenTelemetry's messaging conventions), so log lines carry the trace id and the
//! POST to the app names this span as its parent. A bulk delivery runs in one CONSUMER span for
//! its batch, a child of the first entry's context.

use std::borrow::Cow;
use std::sync::Arc;

use herd_config::SubscriptionSpec;
use herd_pubsub::{Delivery, PubSub};
use herd_resilience::Policy;
use herd_telemetry::{Traced, context};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio_util::sync::CancellationToken;

use super::event::EventHead;
use super::subscription::Subscription;
use super::{App, deliver};

/// A span's name, `"{operation} {topic}"`: written only when spans are exported (otherwise
/// nobody reads it, and a message should not pay for formatting it).
pub(crate) fn span_name(operation: &'static str, topic: &str) -> Cow<'static, str> {
    if herd_telemetry::tracer().is_some() {
        Cow::Owned(format!("{operation} {topic}"))
    } else {
        Cow::Borrowed(operation)
    }
}

/// One delivery attempt inside its CONSUMER span, a child of the event's `traceparent`: log
/// lines carry the trace id, and the POST to the app names this span as its parent.
pub(super) async fn traced(
    app: App,
    sub: Arc<Subscription>,
    broker: Arc<dyn PubSub>,
    policy: Arc<Policy>,
    delivery: Box<dyn Delivery>,
    stop: CancellationToken,
) {
    let event = EventHead::read(delivery.data());
    let parent = event
        .traceparent
        .as_deref()
        .and_then(|tp| context::parse(tp, event.tracestate.as_deref()));
    let hop = Traced::start(
        SpanKind::Consumer,
        span_name("process", &sub.topic),
        &context::remote(parent),
        || {
            let mut a = vec![
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", sub.topic.clone()),
                KeyValue::new("messaging.consumer.group.name", app.service.clone()),
                KeyValue::new("herd.pubsub", sub.pubsub.clone()),
                KeyValue::new("herd.delivery.attempt", i64::from(delivery.attempt())),
            ];
            if let Some(id) = event.id.clone() {
                a.push(KeyValue::new("messaging.message.id", id));
            }
            a
        },
    );
    hop.wrap(deliver(app, sub, broker, policy, delivery, event, stop))
        .await;
    hop.end();
}

/// A batch's CONSUMER span: a child of `parent` (the first entry's context).
pub(super) fn batch(
    sub: &SubscriptionSpec,
    app: &App,
    parent: Option<&EventHead>,
    n: usize,
) -> Traced {
    let parent =
        parent.and_then(|e| context::parse(e.traceparent.as_deref()?, e.tracestate.as_deref()));
    Traced::start(
        SpanKind::Consumer,
        span_name("process", &sub.topic),
        &context::remote(parent),
        || {
            vec![
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", sub.topic.clone()),
                KeyValue::new("messaging.consumer.group.name", app.service.clone()),
                KeyValue::new("messaging.batch.message_count", n as i64),
                KeyValue::new("herd.pubsub", sub.pubsub.clone()),
            ]
        },
    )
}
