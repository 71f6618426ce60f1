//! The state operations both front ends call (HTTP in `state.rs`, gRPC in `grpc/state.rs`):
//! the store resolved for the app, every option checked before the store is touched, the call
//! under the component's outbound resiliency policy, metrics recorded, errors as Dapr names
//! them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use herd_resilience::RunError;
use herd_state::{
    Concurrency, Consistency, DeleteOp, Guard, SetOp, StateError, StateStore, Versioned, WriteOp,
};

use super::metrics::Op;
use crate::Shared;
use crate::components::{Block, Component};
use crate::error::ApiError;
use crate::resilience::{Reuse, state_error, state_outcome};

/// One item to save or delete, whichever front end it came from.
#[derive(Debug, Default, Clone)]
pub(crate) struct Item {
    /// The key as the app sees it.
    pub(crate) key: String,
    /// The bytes to store (`None`: JSON `null`).
    pub(crate) value: Option<Bytes>,
    /// The ETag the write is conditional on.
    pub(crate) etag: Option<String>,
    /// Item metadata (`ttlInSeconds`, `fencingToken`, `contentType`, …).
    pub(crate) metadata: HashMap<String, String>,
    /// `first-write`, `last-write` or unset.
    pub(crate) concurrency: Option<String>,
    /// `eventual`, `strong` or unset.
    pub(crate) consistency: Option<String>,
}

/// One operation of a transaction: `upsert` or `delete`.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    /// `upsert` or `delete`.
    pub(crate) operation: String,
    /// What it writes.
    pub(crate) request: Item,
}

fn concurrency(v: Option<&str>) -> Result<Concurrency, ApiError> {
    match v {
        None | Some("") => Ok(Concurrency::Unspecified),
        Some("first-write") => Ok(Concurrency::FirstWrite),
        Some("last-write") => Ok(Concurrency::LastWrite),
        Some(other) => Err(ApiError::malformed(format!(
            "invalid concurrency {other:?}; use first-write or last-write"
        ))),
    }
}

/// Parses a consistency option.
pub(crate) fn consistency(v: Option<&str>) -> Result<Consistency, ApiError> {
    match v {
        None | Some("") | Some("eventual") => Ok(Consistency::Eventual),
        Some("strong") => Ok(Consistency::Strong),
        Some(other) => Err(ApiError::malformed(format!(
            "invalid consistency {other:?}; use eventual or strong"
        ))),
    }
}

fn fence(metadata: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    metadata
        .get("fencingToken")
        .map(|t| {
            t.parse()
                .map_err(|_| ApiError::malformed(format!("invalid fencingToken {t:?}")))
        })
        .transpose()
}

fn ttl(metadata: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
    match metadata.get("ttlInSeconds").map(String::as_str) {
        None | Some("-1") => Ok(None),
        Some(t) => match t.parse::<u64>() {
            Ok(s) if s > 0 => Ok(Some(Duration::from_secs(s))),
            _ => Err(ApiError::malformed(format!(
                "invalid ttlInSeconds {t:?}; use a positive number of seconds or -1"
            ))),
        },
    }
}

/// Resolves the state store `name` for `app`; `code` is the error code if it is not connected.
pub(crate) fn store<'a>(
    shared: &'a Shared,
    name: &str,
    app: &str,
    code: &'static str,
) -> Result<(&'a Component, &'a Arc<dyn StateStore>), ApiError> {
    if !shared
        .components
        .all()
        .iter()
        .any(|c| c.block == Block::State)
    {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_STATE_STORE_NOT_CONFIGURED",
            "state store is not configured",
        ));
    }
    let component = shared
        .components
        .find(name, app)
        .filter(|c| c.block == Block::State)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "ERR_STATE_STORE_NOT_FOUND",
                format!("state store {name} is not found"),
            )
        })?;
    let store = component
        .store()
        .map_err(|why| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, why))?;
    Ok((component, store))
}

/// The stored key and the conditions an item asks for: what saves and deletes share.
fn parts(component: &Component, app: &str, item: &Item) -> Result<(String, Guard), ApiError> {
    crate::limits::metadata(item.metadata.iter().map(|(k, v)| (k.as_str(), v.len())))?;
    let guard = Guard {
        etag: item.etag.clone().filter(|e| !e.is_empty()),
        concurrency: concurrency(item.concurrency.as_deref())?,
        fence: fence(&item.metadata)?,
        consistency: consistency(item.consistency.as_deref())?,
    };
    Ok((component.prefix.apply(app, &item.key)?, guard))
}

/// Turns a save item (or a transaction's upsert) into a [`SetOp`].
fn set_op(component: &Component, app: &str, item: Item) -> Result<SetOp, ApiError> {
    let (key, guard) = parts(component, app, &item)?;
    Ok(SetOp {
        key,
        value: item.value.unwrap_or_else(|| Bytes::from_static(b"null")),
        ttl: ttl(&item.metadata)?,
        guard,
    })
}

fn delete_op(component: &Component, app: &str, item: Item) -> Result<DeleteOp, ApiError> {
    let (key, guard) = parts(component, app, &item)?;
    Ok(DeleteOp { key, guard })
}

/// Saves `items` in store `name`, all or none.
pub(crate) async fn save(
    shared: &Shared,
    app: &str,
    name: &str,
    items: Vec<Item>,
) -> Result<(), ApiError> {
    let started = Instant::now();
    let (component, store) = store(shared, name, app, "ERR_STATE_SAVE")?;
    let ops = items
        .into_iter()
        .map(|item| set_op(component, app, item).map(WriteOp::Set))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = shared.policies.component_outbound(app, name);
    let mut ops = Reuse::new(&policy, ops);
    let result = policy
        .run(|_| store.transact(ops.next()), state_outcome)
        .await;
    component
        .state_metrics
        .observe(name, Op::Save, started, result.is_ok());
    result.map_err(|e| {
        state_error(
            "ERR_STATE_SAVE",
            &format!("failed saving state in state store {name}"),
            e,
        )
    })
}

/// The stored value of `key`, if any.
pub(crate) async fn get(
    shared: &Shared,
    app: &str,
    name: &str,
    key: &str,
    level: Option<&str>,
) -> Result<Option<Versioned>, ApiError> {
    let started = Instant::now();
    let (component, store) = store(shared, name, app, "ERR_STATE_GET")?;
    let full = component.prefix.apply(app, key)?;
    let level = consistency(level)?;
    let policy = shared.policies.component_outbound(app, name);
    let result = policy.run(|_| store.get(&full, level), state_outcome).await;
    component
        .state_metrics
        .observe(name, Op::Get, started, result.is_ok());
    result.map_err(|e| {
        state_error(
            "ERR_STATE_GET",
            &format!("fail to get {key} from state store {name}"),
            e,
        )
    })
}

/// The stored values of `keys`, in order.
pub(crate) async fn bulk_get(
    shared: &Shared,
    app: &str,
    name: &str,
    keys: &[String],
) -> Result<Vec<Option<Versioned>>, ApiError> {
    let started = Instant::now();
    let (component, store) = store(shared, name, app, "ERR_STATE_BULK_GET")?;
    let full = keys
        .iter()
        .map(|k| component.prefix.apply(app, k))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = shared.policies.component_outbound(app, name);
    let result = policy.run(|_| store.bulk_get(&full), state_outcome).await;
    component
        .state_metrics
        .observe(name, Op::BulkGet, started, result.is_ok());
    result.map_err(|e| {
        state_error(
            "ERR_STATE_BULK_GET",
            &format!("failed bulk get from state store {name}"),
            e,
        )
    })
}

/// Deletes `item.key` (conditionally, per the item).
pub(crate) async fn delete(
    shared: &Shared,
    app: &str,
    name: &str,
    item: Item,
) -> Result<(), ApiError> {
    let started = Instant::now();
    let (component, store) = store(shared, name, app, "ERR_STATE_DELETE")?;
    let key = item.key.clone();
    let op = delete_op(component, app, item)?;
    let policy = shared.policies.component_outbound(app, name);
    let mut op = Reuse::new(&policy, op);
    let result = policy.run(|_| store.delete(op.next()), state_outcome).await;
    component
        .state_metrics
        .observe(name, Op::Delete, started, result.is_ok());
    result.map_err(|e| {
        state_error(
            "ERR_STATE_DELETE",
            &format!("failed deleting state with key {key}"),
            e,
        )
    })
}

/// Runs upserts and deletes all or nothing, with the store's outbox if it has one.
pub(crate) async fn transact(
    shared: &Shared,
    app: &str,
    name: &str,
    mut operations: Vec<Operation>,
) -> Result<(), ApiError> {
    let started = Instant::now();
    let (component, store) = store(shared, name, app, "ERR_STATE_TRANSACTION")?;
    // The outbox's events are built from the request as written (projections are taken out of
    // the operations here), before the operations become the store's.
    let outbox = match &component.outbox {
        None => None,
        Some((pubsub, topic)) => Some(
            crate::outbox::messages(app, pubsub, topic, &mut operations)
                .map_err(ApiError::malformed)?,
        ),
    };
    let mut ops = Vec::with_capacity(operations.len());
    for op in operations {
        ops.push(match op.operation.as_str() {
            "upsert" => WriteOp::Set(set_op(component, app, op.request)?),
            "delete" => WriteOp::Delete(delete_op(component, app, op.request)?),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    format!("operation type {other} not supported"),
                ));
            }
        });
    }
    let policy = shared.policies.component_outbound(app, name);
    let result = match outbox {
        None => {
            let mut ops = Reuse::new(&policy, ops);
            policy
                .run(|_| store.transact(ops.next()), state_outcome)
                .await
        }
        Some(messages) => {
            let mut input = Reuse::new(&policy, (ops, messages));
            let result = policy
                .run(
                    |_| {
                        let (ops, messages) = input.next();
                        store.transact_with_outbox(ops, messages)
                    },
                    state_outcome,
                )
                .await;
            if result.is_ok() {
                shared.outbox_ready.notify_one();
            }
            result
        }
    };
    component
        .state_metrics
        .observe(name, Op::Transaction, started, result.is_ok());
    result.map_err(|e: RunError<StateError>| {
        state_error(
            "ERR_STATE_TRANSACTION",
            "error while executing state transaction",
            e,
        )
    })
}

/// When a value expires, as RFC 3339 (Dapr's `ttlExpireTime`).
pub(crate) fn expire_time(v: &Versioned) -> Option<String> {
    v.expires_at
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
}
