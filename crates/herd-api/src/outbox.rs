//! The transactional outbox: a state transaction that also publishes, atomically.
//!
//! A state component with Dapr's `outboxPublishPubsub` and `outboxPublishTopic` metadata (only
//! `state.embedded`, where state and outbox share one storage transaction) turns every upsert of
//! a `/transaction` request into a CloudEvent written to the store's outbox in the same commit as
//! the state: both are durable or neither is. The relay (`run`) then publishes outbox entries
//! in order to the topic and removes them once the broker holds them; a crash in between
//! publishes an entry again (at-least-once), never loses it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herd_pubsub::Message;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cloudevent::{self, Envelope};
use crate::components::{Block, Component, Components};
use crate::state::Operation;

/// Operation metadata the store reads, not copied into the event.
const STORE_KEYS: &[&str] = &["ttlInSeconds", "fencingToken", "contentType", PROJECTION];
/// Marks an upsert as the event to publish for the upsert of the same key, not to be stored.
const PROJECTION: &str = "outbox.projection";

/// The CloudEvents a transaction publishes, as Dapr's outbox builds them: one per upsert, its
/// value as the data, with the upsert's metadata as attributes of the event (`type`, `subject`,
/// …; not the keys the store reads, nor `data` or `id`). An upsert whose metadata has
/// `outbox.projection: "true"` is taken out of `operations`: it is published in place of the
/// upsert of the same key and never stored; one without such an upsert fails the transaction.
/// The events carry the context of one PRODUCER span, a child of the transaction's request.
pub(crate) fn messages(
    app: &str,
    pubsub: &str,
    topic: &str,
    operations: &mut Vec<Operation>,
) -> Result<Vec<Bytes>, String> {
    let is_projection = |op: &Operation| {
        op.operation == "upsert"
            && op
                .request
                .metadata
                .get(PROJECTION)
                .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "t"))
    };
    let (projections, kept): (Vec<Operation>, Vec<Operation>) = std::mem::take(operations)
        .into_iter()
        .partition(is_projection);
    *operations = kept;
    for p in &projections {
        let stored = operations
            .iter()
            .any(|op| op.operation == "upsert" && op.request.key == p.request.key);
        if !stored {
            return Err(format!(
                "the outbox projection of key {} has no upsert of that key",
                p.request.key
            ));
        }
    }
    let span = herd_telemetry::Traced::start(
        opentelemetry::trace::SpanKind::Producer,
        format!("publish {topic}"),
        &herd_telemetry::context::current(),
        || {
            vec![
                opentelemetry::KeyValue::new("messaging.operation.type", "create"),
                opentelemetry::KeyValue::new("messaging.destination.name", topic.to_string()),
                opentelemetry::KeyValue::new("herd.pubsub", pubsub.to_string()),
            ]
        },
    );
    let (traceparent, tracestate) = (span.traceparent(), span.tracestate());
    span.end();
    operations
        .iter()
        .filter(|op| op.operation == "upsert")
        .map(|op| {
            let published = projections
                .iter()
                .find(|p| p.request.key == op.request.key)
                .map_or(&op.request, |p| &p.request);
            let content_type = published
                .metadata
                .get("contentType")
                .map_or("application/json", String::as_str);
            let value: &[u8] = published.value.as_deref().unwrap_or(b"null");
            // A JSON string published as text is its characters, not its quoted form.
            let unquoted;
            let body = match serde_json::from_slice::<serde_json::Value>(value) {
                Ok(serde_json::Value::String(s)) if !content_type.contains("json") => {
                    unquoted = s;
                    unquoted.as_bytes()
                }
                _ => value,
            };
            let attributes: Vec<(&str, &str)> = op
                .request
                .metadata
                .iter()
                .filter(|(k, _)| {
                    !STORE_KEYS.contains(&k.as_str()) && !matches!(k.as_str(), "data" | "id")
                })
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            cloudevent::wrap(&Envelope {
                app,
                pubsub,
                topic,
                content_type,
                body,
                traceparent: &traceparent,
                tracestate: tracestate.as_deref(),
                attributes: &attributes,
            })
        })
        .collect()
}

/// How often the relay looks without being woken (entries left by an earlier run, retries).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Entries published per round.
const BATCH: usize = 256;

/// Starts one relay per state component with an outbox.
pub fn start(
    components: Arc<Components>,
    wake: Arc<Notify>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) {
    for c in components.all() {
        if c.outbox.is_some() {
            tracker.spawn(run(
                c.clone(),
                components.clone(),
                wake.clone(),
                stop.clone(),
            ));
        }
    }
}

async fn run(
    component: Arc<Component>,
    components: Arc<Components>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let Some((pubsub, topic)) = component.outbox.clone() else {
        return;
    };
    loop {
        let published = relay_once(&component, &components, &pubsub, &topic).await;
        if published == BATCH {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// Publishes up to `BATCH` entries in order; returns how many went out.
async fn relay_once(
    component: &Component,
    components: &Components,
    pubsub: &str,
    topic: &str,
) -> usize {
    let (Ok(store), Some(Ok(broker))) = (
        component.store(),
        components
            .all()
            .iter()
            .find(|c| c.name == pubsub && c.block == Block::PubSub)
            .map(|c| c.broker()),
    ) else {
        return 0;
    };
    let entries = match store.outbox_peek(BATCH).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("outbox of {}: {e}", component.name);
            return 0;
        }
    };
    let mut done = Vec::with_capacity(entries.len());
    for entry in entries {
        let message = Message {
            data: entry.data,
            id: None,
            ttl: None,
            metadata: Default::default(),
        };
        if let Err(e) = broker.publish(topic, message).await {
            tracing::warn!("outbox of {}: publishing to {topic}: {e}", component.name);
            break;
        }
        done.push(entry.id);
    }
    let n = done.len();
    if n > 0 {
        if let Err(e) = store.outbox_remove(done).await {
            tracing::warn!("outbox of {}: {e}", component.name);
        }
        metrics::counter!("herd_outbox_published_total", "store" => component.name.clone())
            .increment(n as u64);
    }
    n
}
