//! `herd.toml` → validated [`Config`].
//!
//! Loading runs in two stages. Serde reads the text into the structs of `raw.rs`, rejecting
//! unknown keys and wrong types (`lenient.rs` reads on past a refused key so that every such
//! problem is reported); then `validate.rs` has each section checked by its module
//! (`service.rs`, `gateway.rs`, `telemetry.rs`, `api.rs`, `resiliency.rs`, `mesh.rs`), which
//! fills defaults and pushes every problem onto one `check::Checker`, and assembles the
//! [`Config`] of `model.rs`. Imports flow one way: `validate` → sections → `check` → `model`,
//! `raw`, `source`. Either way a failure is a [`ConfigErrors`] whose entries name the file, the
//! line and the key, and herd refuses to start.
//!
//! Component metadata is checked by the crate that serves the component; [`metadata`] is the
//! reader those crates share.

#![forbid(unsafe_code)]

mod api;
mod check;
mod dapr;
pub mod duration;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod lenient;
mod mesh;
pub mod metadata;
pub mod model;
pub mod raw;
mod resiliency;
mod service;
pub mod source;
mod telemetry;
mod validate;

use std::path::Path;
use std::sync::Arc;

pub use api::{DEFAULT_PUBSUB, DEFAULT_STORE};
pub use dapr::load_resources;
pub use model::{
    ApiSpec, BulkSubscribe, ComponentSpec, MeshSpec, MeshTls, Origin, SubscriptionSpec,
};
pub use model::{
    AppProtocol, Backoff, Balance, BreakerConfig, Config, GatewaySpec, HealthSpec, Limits,
    ListenerSpec, LogSettings, OutlierSpec, Readiness, ReadyMode, Regions, RestartPolicy,
    RetrySpec, RouteSpec, ServiceSpec, Target, TlsFiles, Trip, UpstreamSpec,
};
pub use model::{LogFormat, Resiliency, TelemetrySpec};
pub use source::{ConfigError, ConfigErrors, KeyPath, Source};

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = Arc::new(Source::read(path)?);
    parse(source)
}

/// Parses and validates config text that was already read. Every problem is reported: those of
/// serde's stage and, when the file could be read whole, those of validation.
pub fn parse(source: Arc<Source>) -> Result<Config, ConfigErrors> {
    let read = lenient::read(&source).map_err(ConfigErrors)?;
    let mut errors = read.errors;
    if read.whole {
        match validate::validate(source, read.raw) {
            Ok(config) if errors.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(more) => errors.extend(more),
        }
    }
    errors.dedup();
    Err(ConfigErrors(errors))
}

/// The data directory a config file names, read leniently: CLI commands that only talk to a
/// running herd use this, so they work even while the file has an unrelated error.
pub fn data_dir_of(path: &Path) -> std::path::PathBuf {
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    let named = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("data_dir")?.as_str().map(str::to_string));
    base.join(named.as_deref().unwrap_or(".herd"))
}

#[cfg(test)]
mod tests;
