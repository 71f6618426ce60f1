//! The state API: `/v1.0/state/{store}` save, get, bulk get, delete and transaction, as in Dapr's
//! API reference, over the component's [`StateStore`](herd_state::StateStore).
//!
//! Values are stored as the JSON text the client sent and returned as it is. Options are
//! checked before the store is touched: an unknown `concurrency` or `consistency`, a bad
//! `ttlInSeconds` or `fencingToken`, or a key with `||` is a 400 and nothing is written. The
//! operations themselves (`ops.rs`) are shared with the gRPC API; this file only reads and
//! writes HTTP. Every store call runs under the component's outbound resiliency policy
//! (`resilience.rs`).

pub(crate) mod metrics;
pub(crate) mod ops;

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::{AppId, Shared, parse_body};
pub(crate) use ops::{Item, Operation};

/// `options` of an item.
#[derive(Debug, Default, Deserialize)]
struct Options {
    concurrency: Option<String>,
    consistency: Option<String>,
}

/// One item of a save request, or the `request` of a transaction operation, as JSON; the value
/// is borrowed from the request body.
#[derive(Debug, Deserialize)]
struct WireItem<'a> {
    key: String,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    etag: Option<serde_json::Value>,
    #[serde(default)]
    metadata: HashMap<String, serde_json::Value>,
    #[serde(default)]
    options: Options,
}

impl WireItem<'_> {
    /// The item with its value as the JSON text sent (a slice of `body`, the request body the
    /// item was read from) and its metadata as strings.
    fn into_item(self, body: &Bytes) -> Item {
        Item {
            key: self.key,
            value: self.value.map(|v| body.slice_ref(v.get().as_bytes())),
            etag: self.etag.as_ref().map(text),
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect(),
            concurrency: self.options.concurrency,
            consistency: self.options.consistency,
        }
    }
}

#[derive(Debug, Deserialize)]
struct BulkRequest {
    keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Transaction<'a> {
    #[serde(borrow)]
    operations: Vec<WireOperation<'a>>,
}

#[derive(Debug, Deserialize)]
struct WireOperation<'a> {
    operation: String,
    #[serde(borrow)]
    request: WireItem<'a>,
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
    ops::store(&shared, &name, &app.0, "ERR_STATE_SAVE")?;
    let items: Vec<WireItem> = parse_body(&body)?;
    let shared_metadata = crate::query_metadata(&query)?;
    let items = items
        .into_iter()
        .map(|item| {
            let mut item = item.into_item(&body);
            item.metadata.extend(shared_metadata.clone());
            item
        })
        .collect();
    ops::save(&shared, &app.0, &name, items).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1.0/state/{store}/{key}`: the value with its `ETag`, or 204.
pub async fn get(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path((name, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let level = query.get("consistency").map(String::as_str);
    let Some(v) = ops::get(&shared, &app.0, &name, &key, level).await? else {
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
    if let Some(at) = ops::expire_time(&v).and_then(|t| HeaderValue::from_str(&t).ok()) {
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
    ops::store(&shared, &name, &app.0, "ERR_STATE_BULK_GET")?;
    let request: BulkRequest = parse_body(&body)?;
    let found = ops::bulk_get(&shared, &app.0, &name, &request.keys).await?;
    let mut out = Vec::with_capacity(found.len());
    for (key, v) in request.keys.iter().zip(found) {
        let mut entry = serde_json::Map::new();
        entry.insert("key".into(), key.clone().into());
        if let Some(v) = v {
            // Stored values are JSON text; anything else (written by another client of the
            // backend, or over gRPC) is returned as a JSON string.
            let data = serde_json::from_slice(&v.value).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&v.value).into_owned())
            });
            entry.insert("data".into(), data);
            entry.insert("etag".into(), v.etag.clone().into());
            if let Some(at) = ops::expire_time(&v) {
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
    ops::store(&shared, &name, &app.0, "ERR_STATE_DELETE")?;
    let etag = headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .map(|s| s.trim_matches('"').to_string())
                .map_err(|_| ApiError::malformed("If-Match is not text"))
        })
        .transpose()?;
    let item = Item {
        key,
        value: None,
        etag,
        metadata: crate::query_metadata(&query)?,
        concurrency: query.get("concurrency").cloned(),
        consistency: query.get("consistency").cloned(),
    };
    ops::delete(&shared, &app.0, &name, item).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST|PUT /v1.0/state/{store}/transaction`: upserts and deletes, all or nothing.
pub async fn transaction(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    ops::store(&shared, &name, &app.0, "ERR_STATE_TRANSACTION")?;
    let tx: Transaction = parse_body(&body)?;
    let operations = tx
        .operations
        .into_iter()
        .map(|op| Operation {
            operation: op.operation,
            request: op.request.into_item(&body),
        })
        .collect();
    ops::transact(&shared, &app.0, &name, operations).await?;
    Ok(StatusCode::NO_CONTENT)
}
