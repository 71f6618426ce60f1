//! Health and metadata: `/v1.0/healthz`, `/v1.0/healthz/outbound` and `/v1.0/metadata`.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
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

/// `GET /v1.0/metadata`: the caller's app id and the components it can use.
pub async fn metadata(
    State(shared): State<Arc<Shared>>,
    Extension(app): Extension<AppId>,
) -> Json<serde_json::Value> {
    let components: Vec<_> = shared
        .components
        .all()
        .iter()
        .filter(|c| c.visible_to(&app.0))
        .map(|c| {
            let mut capabilities = Vec::new();
            if c.block == Block::State {
                capabilities.extend(["ETAG", "TRANSACTIONAL", "TTL"]);
            }
            if c.locks {
                capabilities.push("LOCK");
            }
            json!({
                "name": c.name,
                "type": c.kind,
                "version": "v1",
                "capabilities": capabilities,
            })
        })
        .collect();
    let subscriptions: Vec<_> = shared
        .components
        .subscriptions()
        .into_iter()
        .filter(|s| *s.app == *app.0 || *app.0 == *shared.shared_app)
        .map(|s| {
            let rules: Vec<_> = s
                .rules
                .iter()
                .map(|(kind, path)| json!({ "match": format!("event.type == \"{kind}\""), "path": path }))
                .chain(std::iter::once(json!({ "match": "", "path": s.route })))
                .collect();
            json!({
                "pubsubname": s.pubsub,
                "topic": s.topic,
                "rules": rules,
                "deadLetterTopic": s.dead_letter_topic.unwrap_or_default(),
                "app": s.app,
            })
        })
        .collect();
    Json(json!({
        "id": &*app.0,
        "runtimeVersion": concat!("herd-", env!("CARGO_PKG_VERSION")),
        "enabledFeatures": [],
        "actors": [],
        "components": components,
        "subscriptions": subscriptions,
        "httpEndpoints": [],
        "extended": { "runtime": "herd" },
    }))
}
