//! The state methods: protobuf in, `state::ops` called, protobuf out. Values are stored as the
//! bytes sent, so a value saved over gRPC reads back unchanged over either API.

use std::collections::HashMap;
use std::sync::Arc;

use dapr::dapr::proto::common::v1::StateItem;
use dapr::dapr::proto::runtime::v1 as pb;
use tonic::Status;

use super::Ctx;
use super::status::required;
use crate::state::ops::{self, Item, Operation};

fn concurrency(v: i32) -> Option<String> {
    match v {
        1 => Some("first-write".into()),
        2 => Some("last-write".into()),
        _ => None,
    }
}

fn consistency(v: i32) -> Option<String> {
    match v {
        1 => Some("eventual".into()),
        2 => Some("strong".into()),
        _ => None,
    }
}

/// A protobuf state item as the operations take it.
fn item(state: StateItem) -> Item {
    let options = state.options.unwrap_or_default();
    Item {
        key: state.key,
        value: Some(state.value.into()),
        etag: state.etag.map(|e| e.value),
        metadata: state.metadata,
        concurrency: concurrency(options.concurrency),
        consistency: consistency(options.consistency),
    }
}

fn store_name(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(required("store_name"));
    }
    Ok(())
}

/// The metadata Dapr returns with a value.
fn value_metadata(v: &herd_state::Versioned) -> HashMap<String, String> {
    ops::expire_time(v)
        .map(|t| HashMap::from([("ttlExpireTime".to_string(), t)]))
        .unwrap_or_default()
}

/// `GetState`: empty data and ETag for a missing key, as daprd answers.
pub(super) async fn get(
    ctx: Arc<Ctx>,
    req: pb::GetStateRequest,
) -> Result<pb::GetStateResponse, Status> {
    store_name(&req.store_name)?;
    let level = consistency(req.consistency);
    let found = ops::get(
        &ctx.shared,
        &ctx.app,
        &req.store_name,
        &req.key,
        level.as_deref(),
    )
    .await?;
    Ok(match found {
        None => pb::GetStateResponse::default(),
        Some(v) => pb::GetStateResponse {
            metadata: value_metadata(&v),
            data: v.value.to_vec(),
            etag: v.etag,
        },
    })
}

/// `GetBulkState`: one item per key, in order; a missing key has no data.
pub(super) async fn bulk_get(
    ctx: Arc<Ctx>,
    req: pb::GetBulkStateRequest,
) -> Result<pb::GetBulkStateResponse, Status> {
    store_name(&req.store_name)?;
    let found = ops::bulk_get(&ctx.shared, &ctx.app, &req.store_name, &req.keys).await?;
    let items = req
        .keys
        .into_iter()
        .zip(found)
        .map(|(key, v)| match v {
            None => pb::BulkStateItem {
                key,
                ..Default::default()
            },
            Some(v) => pb::BulkStateItem {
                key,
                metadata: value_metadata(&v),
                data: v.value.to_vec(),
                etag: v.etag,
                error: String::new(),
            },
        })
        .collect();
    Ok(pb::GetBulkStateResponse { items })
}

/// `SaveState`: every item, all or none.
pub(super) async fn save(ctx: Arc<Ctx>, req: pb::SaveStateRequest) -> Result<(), Status> {
    store_name(&req.store_name)?;
    let items = req.states.into_iter().map(item).collect();
    ops::save(&ctx.shared, &ctx.app, &req.store_name, items).await?;
    Ok(())
}

/// `DeleteState`.
pub(super) async fn delete(ctx: Arc<Ctx>, req: pb::DeleteStateRequest) -> Result<(), Status> {
    store_name(&req.store_name)?;
    let options = req.options.unwrap_or_default();
    let item = Item {
        key: req.key,
        value: None,
        etag: req.etag.map(|e| e.value),
        metadata: req.metadata,
        concurrency: concurrency(options.concurrency),
        consistency: consistency(options.consistency),
    };
    ops::delete(&ctx.shared, &ctx.app, &req.store_name, item).await?;
    Ok(())
}

/// `DeleteBulkState`: every key in one transaction (all or none).
pub(super) async fn delete_bulk(
    ctx: Arc<Ctx>,
    req: pb::DeleteBulkStateRequest,
) -> Result<(), Status> {
    store_name(&req.store_name)?;
    let operations = req
        .states
        .into_iter()
        .map(|s| Operation {
            operation: "delete".into(),
            request: Item {
                value: None,
                ..item(s)
            },
        })
        .collect();
    ops::transact(&ctx.shared, &ctx.app, &req.store_name, operations).await?;
    Ok(())
}

/// `ExecuteStateTransaction`: request metadata applies to every operation, under the
/// operation's own.
pub(super) async fn transaction(
    ctx: Arc<Ctx>,
    req: pb::ExecuteStateTransactionRequest,
) -> Result<(), Status> {
    store_name(&req.store_name)?;
    let mut operations = Vec::with_capacity(req.operations.len());
    for op in req.operations {
        let Some(state) = op.request else {
            return Err(required("request of a transaction operation"));
        };
        let mut request = item(state);
        for (k, v) in &req.metadata {
            request
                .metadata
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        operations.push(Operation {
            operation: op.operation_type,
            request,
        });
    }
    ops::transact(&ctx.shared, &ctx.app, &req.store_name, operations).await?;
    Ok(())
}
