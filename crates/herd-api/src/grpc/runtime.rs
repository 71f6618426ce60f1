//! Locks, metadata and shutdown over gRPC.

use std::sync::Arc;

use dapr::dapr::proto::runtime::v1 as pb;
use tonic::Status;

use super::Ctx;
use crate::{lock, meta};

/// `TryLockAlpha1`. The protobuf answer has no field for the fencing token the HTTP API
/// returns.
pub(super) async fn try_lock(
    ctx: Arc<Ctx>,
    req: pb::TryLockRequest,
) -> Result<pb::TryLockResponse, Status> {
    let granted = lock::try_lock(
        &ctx.shared,
        &ctx.app,
        &req.store_name,
        &req.resource_id,
        req.lock_owner,
        i64::from(req.expiry_in_seconds),
    )
    .await?;
    Ok(pb::TryLockResponse {
        success: granted.is_some(),
    })
}

/// `UnlockAlpha1`: `SUCCESS`, `LOCK_DOES_NOT_EXIST` or `LOCK_BELONGS_TO_OTHERS`.
pub(super) async fn unlock(
    ctx: Arc<Ctx>,
    req: pb::UnlockRequest,
) -> Result<pb::UnlockResponse, Status> {
    let status = lock::release(
        &ctx.shared,
        &ctx.app,
        &req.store_name,
        &req.resource_id,
        &req.lock_owner,
    )
    .await?;
    Ok(pb::UnlockResponse { status })
}

/// `GetMetadata`: what `GET /v1.0/metadata` shows.
pub(super) async fn metadata(
    ctx: Arc<Ctx>,
    _req: pb::GetMetadataRequest,
) -> Result<pb::GetMetadataResponse, Status> {
    let registered_components = meta::components(&ctx.shared, &ctx.app)
        .into_iter()
        .map(|c| pb::RegisteredComponents {
            name: c.name,
            r#type: c.kind,
            version: "v1".into(),
            capabilities: c.capabilities.into_iter().map(String::from).collect(),
        })
        .collect();
    let subscriptions = meta::subscriptions(&ctx.shared, &ctx.app)
        .into_iter()
        .map(|s| pb::PubsubSubscription {
            pubsub_name: s.pubsub,
            topic: s.topic,
            rules: Some(pb::PubsubSubscriptionRules {
                rules: s
                    .rules
                    .into_iter()
                    .map(|(m, path)| pb::PubsubSubscriptionRule { r#match: m, path })
                    .collect(),
            }),
            dead_letter_topic: s.dead_letter_topic,
            ..Default::default()
        })
        .collect();
    Ok(pb::GetMetadataResponse {
        id: ctx.app.to_string(),
        registered_components,
        extended_metadata: meta::extended(&ctx.shared, &ctx.app).into_iter().collect(),
        subscriptions,
        runtime_version: meta::RUNTIME_VERSION.into(),
        ..Default::default()
    })
}

/// `SetMetadata`: an attribute of the app's metadata.
pub(super) async fn set_metadata(ctx: Arc<Ctx>, req: pb::SetMetadataRequest) -> Result<(), Status> {
    if req.key.is_empty() {
        return Err(super::status::required("key"));
    }
    meta::set_extended(&ctx.shared, &ctx.app, req.key, req.value);
    Ok(())
}

/// `Shutdown`: acknowledged. One herd serves every service, so an app asking its sidecar to
/// stop does not stop herd; `herd stop` (or SIGTERM) does.
pub(super) async fn shutdown(ctx: Arc<Ctx>, _req: pb::ShutdownRequest) -> Result<(), Status> {
    tracing::info!(app = %ctx.app, "an app asked its sidecar to shut down; herd keeps running");
    Ok(())
}
