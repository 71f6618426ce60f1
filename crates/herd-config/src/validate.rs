//! The second stage of loading: raw values checked, defaulted and resolved into `model.rs` types.
//!
//! This module only orchestrates. Each section of the file is checked by its own module through
//! one [`Checker`], which collects every problem so a user fixes a file in one pass; the checks
//! that relate sections to each other (subscriptions and `[mesh]` need `[api]`) are here, and
//! the results are assembled into a [`Config`]. Sections run in this order, because later ones
//! are checked against earlier results: services → gateway (routes name services) → admin →
//! telemetry → API and components (scopes name services) → subscriptions → resiliency → mesh
//! (its region defaults to the gateway's).

use std::sync::Arc;

use crate::check::Checker;
use crate::model::Config;
use crate::raw::RawConfig;
use crate::source::{ConfigError, KeyPath, Source};
use crate::{api, gateway, mesh, resiliency, service, telemetry};

/// Checks `raw` (read from `source`) and builds the [`Config`], or returns every problem.
pub fn validate(source: Arc<Source>, raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut c = Checker::new(&source);

    let logs = service::logs(&mut c, raw.logs);
    let services = service::check(&mut c, raw.service);
    let gateway = gateway::check(&mut c, raw.gateway, raw.route, raw.upstream, &services);
    let admin = telemetry::admin(&mut c, raw.admin);
    let telemetry = telemetry::check(&mut c, raw.telemetry);
    let (api, mut components) = api::check(&mut c, raw.api, raw.component, &services);
    if api.is_some() {
        api::add_default_store(&mut components);
        api::add_default_pubsub(&mut components);
    }
    let subscriptions = api::subscriptions(&mut c, raw.subscription, &services);
    if api.is_none() && !subscriptions.is_empty() {
        c.err(
            &KeyPath::default().key("subscription"),
            "subscriptions are served by the sidecar API: add an [api] table",
        );
    }
    let resiliency = resiliency::check(&mut c, raw.resiliency);
    let mesh = raw
        .mesh
        .map(|m| mesh::check(&mut c, m, gateway.regions.local.as_deref()));
    if mesh.is_some() && api.is_none() {
        c.err(
            &KeyPath::default().key("mesh"),
            "invocation is served by the sidecar API: add an [api] table",
        );
    }
    let data_dir = c.base().join(raw.data_dir.as_deref().unwrap_or(".herd"));

    c.finish()?;
    Ok(Config {
        source,
        data_dir,
        logs,
        services,
        gateway,
        admin,
        telemetry,
        api,
        components,
        subscriptions,
        resiliency,
        mesh,
    })
}
