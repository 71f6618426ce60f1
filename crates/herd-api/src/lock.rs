//! The lock API (Dapr's alpha `/v1.0-alpha1/lock/{store}` and `/unlock/{store}`), with a fencing
//! token in every grant.
//!
//! A grant answers `{"success": true, "fencingToken": N}`; N is greater than every token the
//! store granted before. A state write carrying `metadata.fencingToken = N` is refused (409) if
//! the key was already written with a greater token, so a holder whose lease expired while it
//! was paused cannot overwrite the work of the next holder. Lock and unlock calls run under the
//! store's outbound resiliency policy.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use herd_resilience::RunError;
use herd_state::{LockOutcome, LockRequest, StateStore};
use serde::Deserialize;
use serde_json::json;

use crate::components::Component;
use crate::error::ApiError;
use crate::resilience::{Reuse, refused, state_outcome};
use crate::{AppId, Shared, parse_body};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TryLock {
    #[serde(default)]
    resource_id: String,
    #[serde(default)]
    lock_owner: String,
    #[serde(default)]
    expiry_in_seconds: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Unlock {
    #[serde(default)]
    resource_id: String,
    #[serde(default)]
    lock_owner: String,
}

fn lock_store<'a>(
    shared: &'a Shared,
    name: &str,
    app: &str,
    code: &'static str,
) -> Result<(&'a Component, &'a std::sync::Arc<dyn StateStore>), ApiError> {
    if !shared.components.all().iter().any(|c| c.locks) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_LOCK_STORE_NOT_CONFIGURED",
            "lock store is not configured",
        ));
    }
    let component = shared
        .components
        .find(name, app)
        .filter(|c| c.locks)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "ERR_LOCK_STORE_NOT_FOUND",
                format!("lock store {name} not found"),
            )
        })?;
    let store = component
        .store()
        .map_err(|why| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, why))?;
    Ok((component, store))
}

fn observe(store: &str, op: &'static str, started: Instant, outcome: &'static str) {
    metrics::counter!("herd_lock_requests_total", "store" => store.to_string(), "op" => op, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("herd_lock_request_seconds", "store" => store.to_string(), "op" => op)
        .record(started.elapsed().as_secs_f64());
}

/// Dapr's checks shared by lock and unlock (a resource and an owner are required), then the
/// resource as stored, with the component's key prefix.
fn resource(
    component: &Component,
    app: &str,
    store: &str,
    resource: &str,
    owner: &str,
) -> Result<String, ApiError> {
    if resource.is_empty() {
        return Err(ApiError::malformed(format!(
            "ResourceId is empty in lock store {store}"
        )));
    }
    if owner.is_empty() {
        return Err(ApiError::malformed(format!(
            "LockOwner is empty in lock store {store}"
        )));
    }
    component.prefix.apply(app, resource)
}

/// `POST /v1.0-alpha1/lock/{store}`.
pub async fn lock(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    lock_store(&shared, &name, &app.0, "ERR_TRY_LOCK")?;
    let request: TryLock = parse_body(&body)?;
    let granted = try_lock(
        &shared,
        &app.0,
        &name,
        &request.resource_id,
        request.lock_owner,
        request.expiry_in_seconds,
    )
    .await?;
    Ok(Json(match granted {
        Some(token) => json!({ "success": true, "fencingToken": token }),
        None => json!({ "success": false }),
    }))
}

/// Tries to take the lock on `resource` for `owner`: the fencing token when granted, `None`
/// when someone else holds it. What both front ends call.
pub(crate) async fn try_lock(
    shared: &Shared,
    app: &str,
    name: &str,
    resource_id: &str,
    owner: String,
    expiry_in_seconds: i64,
) -> Result<Option<u64>, ApiError> {
    let started = Instant::now();
    let (component, store) = lock_store(shared, name, app, "ERR_TRY_LOCK")?;
    let resource = resource(component, app, name, resource_id, &owner)?;
    if expiry_in_seconds <= 0 {
        return Err(ApiError::malformed(format!(
            "ExpiryInSeconds is not positive in lock store {name}"
        )));
    }
    let policy = shared.policies.component_outbound(app, name);
    let mut lock = Reuse::new(
        &policy,
        LockRequest {
            resource,
            owner,
            expiry: Duration::from_secs(expiry_in_seconds as u64),
        },
    );
    let result = policy.run(|_| store.lock(lock.next()), state_outcome).await;
    let outcome = match &result {
        Ok(LockOutcome::Granted(_)) => "granted",
        Ok(LockOutcome::Held) => "held",
        Err(_) => "error",
    };
    observe(name, "lock", started, outcome);
    match result {
        Ok(LockOutcome::Granted(token)) => Ok(Some(token)),
        Ok(LockOutcome::Held) => Ok(None),
        Err(RunError::Failed(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_TRY_LOCK",
            format!("failed to try acquiring lock: {e}"),
        )),
        Err(e) => Err(refused("ERR_TRY_LOCK", "failed to try acquiring lock", &e)),
    }
}

/// `POST /v1.0-alpha1/unlock/{store}`: `{"status": 0|1|2}` (success, no such lock, someone
/// else's).
pub async fn unlock(
    State(shared): State<std::sync::Arc<Shared>>,
    Extension(app): Extension<AppId>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    lock_store(&shared, &name, &app.0, "ERR_UNLOCK")?;
    let request: Unlock = parse_body(&body)?;
    let status = release(
        &shared,
        &app.0,
        &name,
        &request.resource_id,
        &request.lock_owner,
    )
    .await?;
    Ok(Json(json!({ "status": status })))
}

/// Releases `owner`'s lock on `resource`: 0 released, 1 no such lock, 2 someone else's.
pub(crate) async fn release(
    shared: &Shared,
    app: &str,
    name: &str,
    resource_id: &str,
    owner: &str,
) -> Result<i32, ApiError> {
    let started = Instant::now();
    let (component, store) = lock_store(shared, name, app, "ERR_UNLOCK")?;
    let resource = resource(component, app, name, resource_id, owner)?;
    let policy = shared.policies.component_outbound(app, name);
    let result = policy
        .run(|_| store.unlock(&resource, owner), state_outcome)
        .await;
    observe(
        name,
        "unlock",
        started,
        if result.is_ok() { "ok" } else { "error" },
    );
    match result {
        Ok(status) => Ok(status as i32),
        Err(RunError::Failed(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_UNLOCK",
            format!("failed to release lock: {e}"),
        )),
        Err(e) => Err(refused("ERR_UNLOCK", "failed to release lock", &e)),
    }
}
