//! `PublishEvent` and bulk publish over gRPC: the same publish functions as the HTTP API, with
//! the request metadata as it came (`rawPayload`, `ttlInSeconds`, `cloudevent.*`, …).

use std::sync::Arc;

use dapr::dapr::proto::runtime::v1 as pb;
use tonic::Status;

use super::Ctx;
use crate::publish::{self, Entry};

fn content_type(t: &str) -> &str {
    if t.is_empty() { "application/json" } else { t }
}

/// `PublishEvent`: answered once the broker holds the message.
pub(super) async fn publish(ctx: Arc<Ctx>, req: pb::PublishEventRequest) -> Result<(), Status> {
    publish::publish_event(
        &ctx.shared,
        &ctx.app,
        &req.pubsub_name,
        &req.topic,
        content_type(&req.data_content_type),
        &req.data,
        &req.metadata,
    )
    .await?;
    Ok(())
}

/// `BulkPublishEventAlpha1` (and `BulkPublishEvent`): every entry on its own; the failed ones
/// are listed.
pub(super) async fn bulk(
    ctx: Arc<Ctx>,
    req: pb::BulkPublishRequest,
) -> Result<pb::BulkPublishResponse, Status> {
    let entries = req
        .entries
        .into_iter()
        .map(|e| Entry {
            id: e.entry_id,
            payload: e.event,
            content_type: (!e.content_type.is_empty()).then_some(e.content_type),
            metadata: e.metadata,
        })
        .collect();
    let failed = publish::publish_bulk(
        &ctx.shared,
        &ctx.app,
        &req.pubsub_name,
        &req.topic,
        entries,
        &req.metadata,
    )
    .await?;
    Ok(pb::BulkPublishResponse {
        failed_entries: failed
            .into_iter()
            .map(|(entry_id, error)| pb::BulkPublishResponseFailedEntry { entry_id, error })
            .collect(),
    })
}
