//! The first stage of loading: `herd.toml` as serde sees it.
//!
//! These structs mirror the file one to one and reject unknown keys. Their doc comments are the
//! reference for every key. Values are kept close to their written form (durations as strings,
//! sizes as [`ByteSize`](bytesize::ByteSize)); the second stage (`validate.rs` and the section
//! checkers it calls) checks them against each other and turns them into the types in
//! `model.rs`. [`RawConfig`] is the whole file; each section's tables are in the submodule of
//! the same name as its checker (`raw/service.rs` for `service.rs`, ...), all re-exported here.

mod api;
mod gateway;
mod mesh;
mod resiliency;
mod service;
mod telemetry;

use serde::Deserialize;

pub use api::{RawApi, RawComponent, RawMetaValue, RawRule, RawSubscription};
pub use gateway::{
    RawBreaker, RawEndpoint, RawGateway, RawHealth, RawListener, RawOutlier, RawPlacedEndpoint,
    RawRateLimit, RawRetry, RawRoute, RawTls, RawUpstream,
};
pub use mesh::{RawMesh, RawMeshTls};
pub use resiliency::{
    RawComponentTarget, RawPolicies, RawPolicyBreaker, RawPolicyRetry, RawResiliency, RawTarget,
    RawTargets,
};
pub use service::{RawCommand, RawInstances, RawLogs, RawReady, RawRestart, RawService};
pub use telemetry::{RawAdmin, RawTelemetry};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where herd keeps its control socket, logs and (later) embedded data. Relative paths are
    /// resolved against the directory holding the config file. Default: `.herd`.
    pub data_dir: Option<String>,
    /// The admin listener (`/metrics`, `/healthz`).
    #[serde(default)]
    pub admin: RawAdmin,
    /// Settings for the log files herd writes for each service.
    #[serde(default)]
    pub logs: RawLogs,
    /// herd's own log format and the export of its spans over OTLP.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// The services herd runs, one `[[service]]` table each.
    #[serde(default)]
    pub service: Vec<RawService>,
    /// The gateway's listeners.
    #[serde(default)]
    pub gateway: RawGateway,
    /// Gateway routes, tried in file order; the first match wins.
    #[serde(default)]
    pub route: Vec<RawRoute>,
    /// Groups of remote endpoints a route can lead to.
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    /// The sidecar API (Dapr's HTTP API). Absent: no API server, no components.
    pub api: Option<RawApi>,
    /// Building-block components (state stores, lock stores, pub/sub brokers), one
    /// `[[component]]` each.
    #[serde(default)]
    pub component: Vec<RawComponent>,
    /// Declarative subscriptions: topics herd delivers to a service, one `[[subscription]]`
    /// each (apps can also declare theirs at `GET /dapr/subscribe`).
    #[serde(default)]
    pub subscription: Vec<RawSubscription>,
    /// Resilience policies for components and apps, as in Dapr's `Resiliency` spec.
    pub resiliency: Option<RawResiliency>,
    /// Other herds this one forwards service invocations to, and where they reach this one.
    pub mesh: Option<RawMesh>,
}
