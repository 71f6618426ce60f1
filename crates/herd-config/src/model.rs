//! The validated configuration: what the rest of herd consumes.
//!
//! Every value here has passed validation, carries its defaults filled in, and has paths
//! resolved against the config file's directory. Types are plain data; the [`Source`] they were
//! read from stays attached so later failures (a port already in use) can still name a line.
//! [`Config`] is the whole file; each section's types are in the submodule of the same name as
//! its checker (`model/gateway.rs` for `gateway.rs`, ...), all re-exported here. Nothing here
//! imports the checkers.

mod api;
mod gateway;
mod mesh;
mod service;
mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use herd_resilience::{Backoff, BreakerConfig, Resiliency, Trip};

pub use api::{ApiSpec, BulkSubscribe, ComponentSpec, Origin, SubscriptionSpec};
pub use gateway::{
    Balance, GatewaySpec, HealthSpec, Limits, ListenerSpec, OutlierSpec, Regions, RetrySpec,
    RouteSpec, Target, TlsFiles, UpstreamSpec,
};
pub use mesh::{MeshSpec, MeshTls};
pub use service::{AppProtocol, LogSettings, Readiness, ReadyMode, RestartPolicy, ServiceSpec};
pub use telemetry::{LogFormat, TelemetrySpec};

use crate::source::Source;

/// A loaded and validated `herd.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, kept to locate keys in later error messages.
    pub source: Arc<Source>,
    /// Absolute data directory (control socket, logs).
    pub data_dir: PathBuf,
    /// Log file rotation.
    pub logs: LogSettings,
    /// Services in file order.
    pub services: Vec<ServiceSpec>,
    /// The gateway: listeners, routes and upstreams.
    pub gateway: GatewaySpec,
    /// The admin listener's address, if any.
    pub admin: Option<SocketAddr>,
    /// herd's own logs and span export.
    pub telemetry: TelemetrySpec,
    /// The sidecar API, if `[api]` is present.
    pub api: Option<ApiSpec>,
    /// Components from `[[component]]` (Dapr resource files are added by
    /// [`crate::load_resources`]).
    pub components: Vec<ComponentSpec>,
    /// Declarative subscriptions from `[[subscription]]` and Dapr `Subscription` files.
    pub subscriptions: Vec<SubscriptionSpec>,
    /// Resiliency documents: `[resiliency]` first, then Dapr `Resiliency` files in load order.
    pub resiliency: Vec<Resiliency>,
    /// Invocation across hosts, if `[mesh]` is present.
    pub mesh: Option<MeshSpec>,
}

impl Config {
    /// The service named `name`, if any.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

impl Config {
    /// An error about component `c` (its metadata key `field`, if given), located in the file
    /// that declared it.
    pub fn component_error(
        &self,
        c: &ComponentSpec,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> crate::ConfigError {
        let message = message.into();
        match &c.origin {
            Origin::Toml(index) => {
                let at = crate::KeyPath::default().key("component").index(*index);
                let at = match field {
                    Some(f) if c.metadata.contains_key(f) => at.key("metadata").key(f),
                    Some(_) => at.key("metadata"),
                    None => at.key("type"),
                };
                self.source.error(&at, message)
            }
            Origin::Yaml { file, line, fields } => crate::ConfigError {
                file: file.clone(),
                line: Some(field.and_then(|f| fields.get(f)).copied().unwrap_or(*line)),
                column: None,
                key: Some(match field {
                    Some(f) => format!("{}: spec.metadata.{f}", c.name),
                    None => format!("{}: spec.type", c.name),
                }),
                message,
            },
            Origin::Default => crate::ConfigError {
                file: self.source.path.clone(),
                line: None,
                column: None,
                key: Some(format!("component {}", c.name)),
                message,
            },
        }
    }
}
