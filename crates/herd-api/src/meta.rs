//! Health and metadata: `/v1.0/healthz`, `/v1.0/healthz/outbound`, `/v1.0/metadata` and
//! `PUT /v1.0/metadata/{key}`; the views here are what gRPC's `GetMetadata` answers too.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use crate::components::Block;
use crate::error::ApiError;
use crate::{AppId, Shared};

/// `GET /v1.0/healthz`: herd answers, so it is up.
pub async fn healthz() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /v1.0/healthz/outbound`: 204 once every component is connected (SDKs wait for this
/// before their first call), 500 before.
pub async fn outbound(State(shared): State<Arc<Shared>>) -> Result<StatusCode, ApiError> {
    if shared.components.all().iter().all(|c| c.ready()) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_HEALTH_NOT_READY",
            "dapr outbound is not ready",
        ))
    }
}

/// A component as metadata lists it.
pub(crate) struct ComponentView {
    /// Its name.
    pub(crate) name: String,
    /// Dapr's type.
    pub(crate) kind: String,
    /// `ETAG`, `TRANSACTIONAL`, `TTL`, `LOCK`.
    pub(crate) capabilities: Vec<&'static str>,
}

/// A subscription as metadata lists it.
pub(crate) struct SubscriptionView {
    /// The pub/sub component.
    pub(crate) pubsub: String,
    /// The topic.
    pub(crate) topic: String,
    /// `(match, path)` rules, the default route last with an empty match.
    pub(crate) rules: Vec<(String, String)>,
    /// The dead-letter topic, or empty.
    pub(crate) dead_letter_topic: String,
    /// The subscribing app.
    pub(crate) app: String,
}

/// The components `app` can use.
pub(crate) fn components(shared: &Shared, app: &str) -> Vec<ComponentView> {
    shared
        .components
        .all()
        .iter()
        .filter(|c| c.visible_to(app))
        .map(|c| {
            let mut capabilities = Vec::new();
            if c.block == Block::State {
                capabilities.extend(["ETAG", "TRANSACTIONAL", "TTL"]);
            }
            if c.locks {
                capabilities.push("LOCK");
            }
            ComponentView {
                name: c.name.clone(),
                kind: c.kind.clone(),
                capabilities,
            }
        })
        .collect()
}

/// The subscriptions of `app` (every app's on the shared listener).
pub(crate) fn subscriptions(shared: &Shared, app: &str) -> Vec<SubscriptionView> {
    shared
        .components
        .subscriptions()
        .into_iter()
        .filter(|s| *s.app == *app || *app == *shared.shared_app)
        .map(|s| SubscriptionView {
            rules: s
                .rules
                .iter()
                .map(|(kind, path)| (format!("event.type == \"{kind}\""), path.to_string()))
                .chain(std::iter::once((String::new(), s.route.to_string())))
                .collect(),
            pubsub: s.pubsub.to_string(),
            topic: s.topic.to_string(),
            dead_letter_topic: s
                .dead_letter_topic
                .map(|t| t.to_string())
                .unwrap_or_default(),
            app: s.app.to_string(),
        })
        .collect()
}

/// Attributes `app` set with `PUT /v1.0/metadata/{key}` (or gRPC `SetMetadata`), with herd's
/// `runtime` entry.
pub(crate) fn extended(shared: &Shared, app: &str) -> BTreeMap<String, String> {
    let mut out = shared
        .extended
        .lock()
        .expect("extended metadata poisoned")
        .get(app)
        .cloned()
        .unwrap_or_default();
    out.insert("runtime".into(), "herd".into());
    out
}

/// Sets attribute `key` of `app`'s metadata.
pub(crate) fn set_extended(shared: &Shared, app: &str, key: String, value: String) {
    shared
        .extended
        .lock()
        .expect("extended metadata poisoned")
        .entry(app.to_string())
        .or_default()
        .insert(key, value);
}

/// The runtime version metadata reports.
pub(crate) const RUNTIME_VERSION: &str = concat!("herd-", env!("CARGO_PKG_VERSION"));

/// `PUT /v1.0/metadata/{key}`: the body is the value.
pub async fn set(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    set_extended(
        &shared,
        &app.0,
        key,
        String::from_utf8_lossy(&body).into_owned(),
    );
    StatusCode::NO_CONTENT
}

/// `GET /v1.0/metadata`: the caller's app id and the components it can use.
pub async fn metadata(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<AppId>,
) -> Json<serde_json::Value> {
    let components: Vec<_> = components(&shared, &app.0)
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "version": "v1",
                "capabilities": c.capabilities,
            })
        })
        .collect();
    let subscriptions: Vec<_> = subscriptions(&shared, &app.0)
        .into_iter()
        .map(|s| {
            let rules: Vec<_> = s
                .rules
                .iter()
                .map(|(m, path)| json!({ "match": m, "path": path }))
                .collect();
            json!({
                "pubsubname": s.pubsub,
                "topic": s.topic,
                "rules": rules,
                "deadLetterTopic": s.dead_letter_topic,
                "app": s.app,
            })
        })
        .collect();
    Json(json!({
        "id": &*app.0,
        "runtimeVersion": RUNTIME_VERSION,
        "enabledFeatures": [],
        "actors": [],
        "components": components,
        "subscriptions": subscriptions,
        "httpEndpoints": [],
        "extended": extended(&shared, &app.0),
    }))
}
