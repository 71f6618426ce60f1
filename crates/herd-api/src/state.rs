//! The state API: `/v1.0/state/{store}` save, get, bulk get, delete and transaction, as in Dapr's
//! API reference, over the component's [`StateStore`](herd_state::StateStore).
//!
//! Values are stored as the JSON text the client sent and returned as it is. Options are
//! checked before the store is touched: an unknown `concurrency` or `consistency`, a bad
//! `ttlInSeconds` or `fencingToken`, or a key with `||` is a 400 and nothing is written. Every
//! store call runs under the component's outbound resiliency policy (`resilience.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herd_resilience::RunError;
use herd_state::{
    Concurrency, Consistency, DeleteOp, Guard, SetOp, StateError, StateStore, Versioned, WriteOp,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::components::{Block, Component};
use crate::error::ApiError;
use crate::resilience::{Reuse, state_error, state_outcome};
use crate::{AppId, Shared, parse_body};

/// `options` of an item.
#[derive(Debug, Default, Deserialize)]
struct Options {
    concurrency: Option<String>,
    consistency: Option<String>,
}

/// One item of a save request, or the `request` of a transaction operation.
#[derive(Debug, Deserialize)]
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) value: Option<Box<RawValue>>,
    etag: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) metadata: HashMap<String, serde_json::Value>,
    #[serde(default)]
    options: Options,
}

#[derive(Debug, Deserialize)]
struct BulkRequest {
    keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Transaction {
    operations: Vec<Operation>,
}

/// One operation of a transaction request.
#[derive(Debug, Deserialize)]
pub(crate) struct Operation {
    pub(crate) operation: String,
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

fn consistency(v: Option<&str>) -> Result<Consistency, ApiError> {
    match v {
        None | Some("") | Some("eventual") => Ok(Consistency::Eventual),
        Some("strong") => Ok(Consistency::Strong),
        Some(other) => Err(ApiError::malformed(format!(
            "invalid consistency {other:?}; use eventual or strong"
        ))),
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
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
fn store<'a>(
    shared: &'a Shared,
    name: &str,
    app: &str,
    code: &'static str,
) -> Result<(&'a Component, &'a std::sync::Arc<dyn StateStore>), ApiError> {
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

/// Records one operation's outcome and latency.
fn observe(store: &str, op: &'static str, started: Instant, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("herd_state_requests_total", "store" => store.to_string(), "op" => op, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("herd_state_request_seconds", "store" => store.to_string(), "op" => op)
        .record(started.elapsed().as_secs_f64());
}

/// The stored key, the metadata (as strings) and the conditions an item asks for: what saves
/// and deletes share.
fn parts(
    component: &Component,
    app: &str,
    item: &Item,
) -> Result<(String, HashMap<String, String>, Guard), ApiError> {
    let metadata: HashMap<String, String> = item
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    crate::limits::metadata(metadata.iter().map(|(k, v)| (k.as_str(), v.len())))?;
    let guard = Guard {
        etag: item.etag.as_ref().map(text).filter(|e| !e.is_empty()),
        concurrency: concurrency(item.options.concurrency.as_deref())?,
        fence: fence(&metadata)?,
        consistency: consistency(item.options.consistency.as_deref())?,
    };
    Ok((component.prefix.apply(app, &item.key)?, metadata, guard))
}

/// Turns a save item (or a transaction's upsert) into a [`SetOp`].
fn set_op(component: &Component, app: &str, item: Item) -> Result<SetOp, ApiError> {
    let (key, metadata, guard) = parts(component, app, &item)?;
    let value = item.value.map_or_else(
        || bytes::Bytes::from_static(b"null"),
        |v| bytes::Bytes::copy_from_slice(v.get().as_bytes()),
    );
    Ok(SetOp {
        key,
        value,
        ttl: ttl(&metadata)?,
        guard,
    })
}

fn delete_op(component: &Component, app: &str, item: Item) -> Result<DeleteOp, ApiError> {
    let (key, _, guard) = parts(component, app, &item)?;
    Ok(DeleteOp { key, guard })
}

/// The request-level metadata of the query string, as item metadata values.
fn query_values(
    query: &HashMap<String, String>,
) -> Result<HashMap<String, serde_json::Value>, ApiError> {
    Ok(crate::query_metadata(query)?
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect())
}

/// `POST|PUT /v1.0/state/{store}`: saves an array of items, all or none. `metadata.<name>`
/// query parameters apply to every item and win over the item's own metadata, as in Dapr (the
/// JavaScript SDK sends `save`'s `options.metadata`, e.g. `ttlInSeconds`, this way).
pub async fn save(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let started = Instant::now();
    let (component, store) = store(&shared, &name, &app.0, "ERR_STATE_SAVE")?;
    let items: Vec<Item> = parse_body(&body)?;
    let shared_metadata = query_values(&query)?;
    let ops = items
        .into_iter()
        .map(|mut item| {
            item.metadata.extend(shared_metadata.clone());
            set_op(component, &app.0, item).map(WriteOp::Set)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = shared.policies.component_outbound(&app.0, &name);
    let mut ops = Reuse::new(&policy, ops);
    let result = policy
        .run(|_| store.transact(ops.next()), state_outcome)
        .await;
    observe(&name, "save", started, result.is_ok());
    result.map_err(|e| {
        state_error(
            "ERR_STATE_SAVE",
            &format!("failed saving state in state store {name}"),
            e,
        )
    })?;
    Ok(StatusCode::NO_CONTENT)
}

fn expire_time(v: &Versioned) -> Option<String> {
    v.expires_at
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

/// `GET /v1.0/state/{store}/{key}`: the value with its `ETag`, or 204.
pub async fn get(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path((name, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (component, store) = store(&shared, &name, &app.0, "ERR_STATE_GET")?;
    let full = component.prefix.apply(&app.0, &key)?;
    let level = consistency(query.get("consistency").map(String::as_str))?;
    let policy = shared.policies.component_outbound(&app.0, &name);
    let result = policy.run(|_| store.get(&full, level), state_outcome).await;
    observe(&name, "get", started, result.is_ok());
    let found = result.map_err(|e| {
        state_error(
            "ERR_STATE_GET",
            &format!("fail to get {key} from state store {name}"),
            e,
        )
    })?;
    let Some(v) = found else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(etag) = HeaderValue::from_str(&v.etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(at) = expire_time(&v).and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("metadata.ttlExpireTime", at);
    }
    Ok((StatusCode::OK, headers, v.value).into_response())
}

/// `POST|PUT /v1.0/state/{store}/bulk`: `[{key, data, etag}]`, `{key}` alone for a missing key.
pub async fn bulk(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (component, store) = store(&shared, &name, &app.0, "ERR_STATE_BULK_GET")?;
    let request: BulkRequest = parse_body(&body)?;
    let full = request
        .keys
        .iter()
        .map(|k| component.prefix.apply(&app.0, k))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = shared.policies.component_outbound(&app.0, &name);
    let result = policy.run(|_| store.bulk_get(&full), state_outcome).await;
    observe(&name, "bulk_get", started, result.is_ok());
    let found = result.map_err(|e| {
        state_error(
            "ERR_STATE_BULK_GET",
            &format!("failed bulk get from state store {name}"),
            e,
        )
    })?;
    let mut out = Vec::with_capacity(found.len());
    for (key, v) in request.keys.iter().zip(found) {
        let mut entry = serde_json::Map::new();
        entry.insert("key".into(), key.clone().into());
        if let Some(v) = v {
            // Stored values are JSON text; anything else (written by another client of the
            // backend) is returned as a JSON string.
            let data = serde_json::from_slice(&v.value).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&v.value).into_owned())
            });
            entry.insert("data".into(), data);
            entry.insert("etag".into(), v.etag.clone().into());
            if let Some(at) = expire_time(&v) {
                entry.insert(
                    "metadata".into(),
                    serde_json::json!({ "ttlExpireTime": at }),
                );
            }
        }
        out.push(serde_json::Value::Object(entry));
    }
    Ok(axum::Json(out).into_response())
}

/// `DELETE /v1.0/state/{store}/{key}`, with the ETag in `If-Match`.
pub async fn delete(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path((name, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let started = Instant::now();
    let (component, store) = store(&shared, &name, &app.0, "ERR_STATE_DELETE")?;
    let etag = headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .map(|s| s.trim_matches('"').to_string())
                .map_err(|_| ApiError::malformed("If-Match is not text"))
        })
        .transpose()?;
    let item = Item {
        key: key.clone(),
        value: None,
        etag: etag.map(Into::into),
        metadata: query_values(&query)?,
        options: Options {
            concurrency: query.get("concurrency").cloned(),
            consistency: query.get("consistency").cloned(),
        },
    };
    let op = delete_op(component, &app.0, item)?;
    let policy = shared.policies.component_outbound(&app.0, &name);
    let mut op = Reuse::new(&policy, op);
    let result = policy.run(|_| store.delete(op.next()), state_outcome).await;
    observe(&name, "delete", started, result.is_ok());
    result.map_err(|e| {
        state_error(
            "ERR_STATE_DELETE",
            &format!("failed deleting state with key {key}"),
            e,
        )
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST|PUT /v1.0/state/{store}/transaction`: upserts and deletes, all or nothing.
pub async fn transaction(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let started = Instant::now();
    let (component, store) = store(&shared, &name, &app.0, "ERR_STATE_TRANSACTION")?;
    let mut tx: Transaction = parse_body(&body)?;
    // The outbox's events are built from the request as written (projections are taken out of
    // the operations here), before the operations become the store's.
    let outbox = match &component.outbox {
        None => None,
        Some((pubsub, topic)) => Some(
            crate::outbox::messages(&app.0, pubsub, topic, &mut tx.operations)
                .map_err(ApiError::malformed)?,
        ),
    };
    let mut ops = Vec::with_capacity(tx.operations.len());
    for op in tx.operations {
        ops.push(match op.operation.as_str() {
            "upsert" => WriteOp::Set(set_op(component, &app.0, op.request)?),
            "delete" => WriteOp::Delete(delete_op(component, &app.0, op.request)?),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    format!("operation type {other} not supported"),
                ));
            }
        });
    }
    let policy = shared.policies.component_outbound(&app.0, &name);
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
    observe(&name, "transaction", started, result.is_ok());
    result.map_err(|e: RunError<StateError>| {
        state_error(
            "ERR_STATE_TRANSACTION",
            "error while executing state transaction",
            e,
        )
    })?;
    Ok(StatusCode::NO_CONTENT)
}
