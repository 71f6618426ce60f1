//! The publish API: `POST /v1.0/publish/{pubsub}/{topic}` and Dapr's alpha bulk publish, with
//! the payload wrapped in a CloudEvents 1.0 envelope (`cloudevent.rs`).
//!
//! A publish is answered 204 only once the broker holds the message durably (the embedded log
//! has fsynced it; a broker has confirmed it). Request metadata comes from `metadata.*` query
//! parameters: `ttlInSeconds`, `rawPayload` (send the body as it is), and herd's
//! `idempotencyKey` (a second publish with the same key within the broker's window is accepted
//! but not delivered again). Every publish runs under the component's outbound resiliency
//! policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use herd_pubsub::{Message, PubSub};
use herd_telemetry::Traced;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use serde::Deserialize;
use serde_json::json;

use crate::cloudevent::{self, Envelope};
use crate::components::{Block, Component};
use crate::error::ApiError;
use crate::resilience::{Reuse, pubsub_outcome};
use crate::{AppId, Shared, parse_body, query_metadata};

/// Resolves the pub/sub component `name` for `app`.
pub(crate) fn broker<'a>(
    shared: &'a Shared,
    name: &str,
    app: &str,
) -> Result<(&'a Component, &'a Arc<dyn PubSub>), ApiError> {
    let component = shared
        .components
        .find(name, app)
        .filter(|c| c.block == Block::PubSub)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ERR_PUBSUB_NOT_FOUND",
                format!("pubsub {name} not found"),
            )
        })?;
    let broker = component.broker().map_err(|why| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            why,
        )
    })?;
    Ok((component, broker))
}

/// Builds the message for one publish.
fn message(
    envelope: Envelope<'_>,
    metadata: &HashMap<String, String>,
) -> Result<Message, ApiError> {
    let ttl = match metadata.get("ttlInSeconds") {
        None => None,
        Some(t) => match t.parse::<u64>() {
            Ok(s) if s > 0 => Some(Duration::from_secs(s)),
            _ => {
                return Err(ApiError::malformed(format!(
                    "invalid ttlInSeconds {t:?}; use a positive number of seconds"
                )));
            }
        },
    };
    let raw = metadata.get("rawPayload").is_some_and(|v| v == "true");
    let data = if raw {
        Bytes::copy_from_slice(envelope.body)
    } else {
        // `metadata.cloudevent.<attribute>` sets that attribute of the envelope, as in Dapr.
        let attributes: Vec<(&str, &str)> = metadata
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("cloudevent.")?, v.as_str())))
            .collect();
        let envelope = Envelope {
            attributes: &attributes,
            ..envelope
        };
        cloudevent::wrap(&envelope).map_err(ApiError::malformed)?
    };
    Ok(Message {
        data,
        id: metadata.get("idempotencyKey").cloned(),
        ttl,
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// The PRODUCER span of one publish, a child of the request's span; its context is what the
/// CloudEvent carries.
fn producer(pubsub: &str, topic: &str) -> Traced {
    Traced::start(
        SpanKind::Producer,
        crate::delivery::span_name("publish", topic),
        &herd_telemetry::context::current(),
        || {
            vec![
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "publish"),
                KeyValue::new("messaging.destination.name", topic.to_string()),
                KeyValue::new("herd.pubsub", pubsub.to_string()),
            ]
        },
    )
}

/// Ends a publish's span, failed when `error` says so.
fn produced(span: Traced, error: Option<&str>) {
    if let Some(e) = error {
        span.set_error(e.to_string());
    }
    span.end();
}

fn observe(pubsub: &str, started: Instant, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("herd_pubsub_publish_total", "pubsub" => pubsub.to_string(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("herd_pubsub_publish_seconds", "pubsub" => pubsub.to_string())
        .record(started.elapsed().as_secs_f64());
}

fn check_topic(topic: &str, name: &str) -> Result<(), ApiError> {
    if topic.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ERR_TOPIC_EMPTY",
            format!("topic is empty in pubsub {name}"),
        ));
    }
    Ok(())
}

/// `POST /v1.0/publish/{pubsub}/{topic}`.
pub async fn publish(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path((name, topic)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let metadata = query_metadata(&query)?;
    publish_event(
        &shared,
        &app.0,
        &name,
        &topic,
        content_type,
        &body,
        &metadata,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Publishes `body` to `topic` on pub/sub `name` for `app` (wrapped in a CloudEvent unless
/// `rawPayload`), returning once the broker holds it: what both front ends call.
pub(crate) async fn publish_event(
    shared: &Shared,
    app: &str,
    name: &str,
    topic: &str,
    content_type: &str,
    body: &[u8],
    metadata: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let started = Instant::now();
    check_topic(topic, name)?;
    let (_, broker) = broker(shared, name, app)?;
    let span = producer(name, topic);
    let (traceparent, tracestate) = (span.traceparent(), span.tracestate());
    let envelope = Envelope {
        app,
        pubsub: name,
        topic,
        content_type,
        body,
        traceparent: &traceparent,
        tracestate: tracestate.as_deref(),
        attributes: &[],
    };
    let message = message(envelope, metadata)?;
    let policy = shared.policies.component_outbound(app, name);
    let mut message = Reuse::new(&policy, message);
    let result = policy
        .run(|_| broker.publish(topic, message.next()), pubsub_outcome)
        .await;
    observe(name, started, result.is_ok());
    produced(
        span,
        result.as_ref().err().map(|e| e.to_string()).as_deref(),
    );
    result.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            format!("error when publish to topic {topic} in pubsub {name}: {e}"),
        )
    })
}

/// One bulk publish entry. Dapr reads JSON field names case-insensitively, and the JavaScript
/// SDK sends `entryID`, so that spelling is accepted beside `entryId`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkEntry {
    #[serde(alias = "entryID")]
    entry_id: String,
    event: serde_json::Value,
    content_type: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// One entry of a bulk publish, whichever front end it came from.
pub(crate) struct Entry {
    /// The id failures are reported by.
    pub(crate) id: String,
    /// The payload as it is published.
    pub(crate) payload: Vec<u8>,
    /// Its content type; JSON when unset.
    pub(crate) content_type: Option<String>,
    /// Entry metadata, over the request's.
    pub(crate) metadata: HashMap<String, String>,
}

/// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`: every entry is published on its own;
/// the answer lists the entries that failed (200 when none did, 500 otherwise).
pub async fn bulk(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path((name, topic)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    check_topic(&topic, &name)?;
    broker(&shared, &name, &app.0)?;
    let entries: Vec<BulkEntry> = parse_body(&body)?;
    let entries = entries
        .into_iter()
        .map(|entry| {
            let json = entry
                .content_type
                .as_deref()
                .is_none_or(|t| t.contains("json"));
            let payload = match entry.event {
                serde_json::Value::String(s) if !json => s.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            Entry {
                id: entry.entry_id,
                payload,
                content_type: entry.content_type,
                metadata: entry.metadata,
            }
        })
        .collect();
    let failed = publish_bulk(
        &shared,
        &app.0,
        &name,
        &topic,
        entries,
        &query_metadata(&query)?,
    )
    .await?;
    let failed: Vec<_> = failed
        .into_iter()
        .map(|(id, error)| json!({ "entryId": id, "error": error }))
        .collect();
    if failed.is_empty() {
        return Ok((StatusCode::OK, Json(json!({ "failedEntries": [] }))));
    }
    Ok((
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "failedEntries": failed, "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE" })),
    ))
}

/// Publishes every entry on its own; returns `(entry id, error)` of those that failed.
pub(crate) async fn publish_bulk(
    shared: &Shared,
    app: &str,
    name: &str,
    topic: &str,
    entries: Vec<Entry>,
    request_metadata: &HashMap<String, String>,
) -> Result<Vec<(String, String)>, ApiError> {
    check_topic(topic, name)?;
    let (_, broker) = broker(shared, name, app)?;
    // Checked before any entry is published, so a refused request publishes nothing.
    for entry in &entries {
        crate::limits::metadata(entry.metadata.iter().map(|(k, v)| (k.as_str(), v.len())))?;
    }
    let policy = shared.policies.component_outbound(app, name);
    let mut failed = Vec::new();
    for entry in entries {
        let started = Instant::now();
        let mut metadata = request_metadata.clone();
        metadata.extend(entry.metadata);
        let content_type = entry.content_type.as_deref().unwrap_or("application/json");
        let span = producer(name, topic);
        let (traceparent, tracestate) = (span.traceparent(), span.tracestate());
        let envelope = Envelope {
            app,
            pubsub: name,
            topic,
            content_type,
            body: &entry.payload,
            traceparent: &traceparent,
            tracestate: tracestate.as_deref(),
            attributes: &[],
        };
        let outcome = match message(envelope, &metadata) {
            Ok(m) => {
                let mut m = Reuse::new(&policy, m);
                policy
                    .run(|_| broker.publish(topic, m.next()), pubsub_outcome)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.message),
        };
        observe(name, started, outcome.is_ok());
        produced(span, outcome.as_ref().err().map(String::as_str));
        if let Err(error) = outcome {
            failed.push((entry.id, error));
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_entries_take_either_spelling_of_the_entry_id() {
        let entries: Vec<BulkEntry> = serde_json::from_str(
            r#"[{"entryId": "a", "event": 1},
                {"entryID": "b", "event": "x", "contentType": "text/plain", "metadata": {}}]"#,
        )
        .unwrap();
        assert_eq!(entries[0].entry_id, "a");
        assert_eq!(entries[1].entry_id, "b");
        assert_eq!(entries[1].content_type.as_deref(), Some("text/plain"));
        assert!(serde_json::from_str::<Vec<BulkEntry>>(r#"[{"event": 1}]"#).is_err());
    }
}
