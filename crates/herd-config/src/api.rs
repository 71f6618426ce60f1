//! Validation of `[api]` and `[[component]]`.
//!
//! Only the shape is checked here: names, duplicates, scopes naming real services. Whether a
//! component's type and metadata make sense is the business of the crate that serves it, which
//! herd asks at start-up (`herd_state::configure`) and reports through
//! [`Config::component_error`](crate::Config::component_error), with file and line as here.

use std::collections::{BTreeMap, HashSet};

use crate::check::Checker;
use crate::model::{ApiSpec, ComponentSpec, Origin, ServiceSpec, SubscriptionSpec};
use crate::raw::{RawApi, RawComponent, RawSubscription};
use crate::source::KeyPath;

/// Dapr's default body limit.
const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// Dapr's default gRPC API address.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50001";

/// The name Dapr's quick starts give the state store, used for the default one.
pub const DEFAULT_STORE: &str = "statestore";

pub(crate) fn check(
    c: &mut Checker<'_>,
    raw: Option<RawApi>,
    components: Vec<RawComponent>,
    services: &[ServiceSpec],
) -> (Option<ApiSpec>, Vec<ComponentSpec>) {
    let mut specs = Vec::new();
    let mut names = HashSet::new();
    for (index, raw) in components.into_iter().enumerate() {
        let at = KeyPath::default().key("component").index(index);
        if !valid_name(&raw.name) {
            c.err(
                &at.key("name"),
                format!(
                    "{:?} is not a component name (letters, digits, - and _)",
                    raw.name
                ),
            );
        }
        if !names.insert(raw.name.clone()) {
            c.err(
                &at.key("name"),
                format!("component {:?} is defined twice", raw.name),
            );
        }
        for scope in &raw.scopes {
            if !services.iter().any(|s| &s.name == scope) {
                c.err(&at.key("scopes"), format!("no service named {scope:?}"));
            }
        }
        specs.push(ComponentSpec {
            name: raw.name,
            kind: raw.kind,
            metadata: raw
                .metadata
                .into_iter()
                .map(|(k, v)| (k, v.into_text()))
                .collect(),
            scopes: raw.scopes,
            origin: Origin::Toml(index),
        });
    }
    let Some(raw) = raw else {
        if !specs.is_empty() {
            c.err(
                &KeyPath::default().key("component"),
                "components are served by the sidecar API: add an [api] table",
            );
        }
        return (None, specs);
    };
    let at = KeyPath::default().key("api");
    let listen = c
        .address(
            &at.key("listen"),
            raw.listen.as_deref().unwrap_or("127.0.0.1:3500"),
        )
        .unwrap_or_else(|| ([127, 0, 0, 1], 3500).into());
    let grpc_explicit = raw.grpc_listen.is_some();
    let grpc_listen = match raw.grpc_listen.as_deref() {
        Some("") => None,
        written => c.address(
            &at.key("grpc_listen"),
            written.unwrap_or(DEFAULT_GRPC_LISTEN),
        ),
    };
    let app_id = raw.app_id.unwrap_or_else(|| "herd".to_string());
    if !valid_name(&app_id) {
        c.err(&at.key("app_id"), format!("{app_id:?} is not an app id"));
    }
    let max_body = raw
        .max_body
        .map_or(DEFAULT_MAX_BODY, |b| b.as_u64() as usize);
    if max_body < 1024 {
        c.err(&at.key("max_body"), "must be at least 1KB");
    }
    let resources = raw
        .resources_path
        .iter()
        .enumerate()
        .filter_map(|(i, dir)| c.directory(&at.key("resources_path").index(i), dir))
        .collect();
    (
        Some(ApiSpec {
            listen,
            grpc_listen,
            grpc_explicit,
            app_id,
            max_body,
            resources,
        }),
        specs,
    )
}

/// The name Dapr's quick starts give the pub/sub component, used for the default one.
pub const DEFAULT_PUBSUB: &str = "pubsub";

/// Adds the default embedded `pubsub` when the API has no pub/sub component.
pub(crate) fn add_default_pubsub(components: &mut Vec<ComponentSpec>) {
    if components
        .iter()
        .any(|c| c.kind.starts_with("pubsub.") || c.name == DEFAULT_PUBSUB)
    {
        return;
    }
    components.push(ComponentSpec {
        name: DEFAULT_PUBSUB.to_string(),
        kind: "pubsub.embedded".to_string(),
        metadata: BTreeMap::new(),
        scopes: Vec::new(),
        origin: Origin::Default,
    });
}

/// Checks `[[subscription]]` entries against the services.
pub(crate) fn subscriptions(
    c: &mut Checker<'_>,
    raw: Vec<RawSubscription>,
    services: &[ServiceSpec],
) -> Vec<SubscriptionSpec> {
    let mut out = Vec::new();
    for (index, s) in raw.into_iter().enumerate() {
        let at = KeyPath::default().key("subscription").index(index);
        if !services.iter().any(|svc| svc.name == s.service) {
            c.err(
                &at.key("service"),
                format!("no service named {:?}", s.service),
            );
        }
        if s.topic.is_empty() || s.topic.contains(char::is_whitespace) {
            c.err(
                &at.key("topic"),
                format!("{:?} is not a topic name", s.topic),
            );
        }
        if !s.route.starts_with('/') {
            c.err(&at.key("route"), "must be a path starting with /");
        }
        let mut rules = Vec::new();
        for (i, rule) in s.rules.iter().enumerate() {
            match SubscriptionSpec::parse_match(&rule.matches) {
                Some(kind) => rules.push((kind, rule.path.clone())),
                None => c.err(
                    &at.key("rules").index(i).key("match"),
                    "herd evaluates rules of the form event.type == \"<type>\"",
                ),
            }
            if !rule.path.starts_with('/') {
                c.err(&at.key("rules").index(i).key("path"), "must start with /");
            }
        }
        let max_in_flight = s.max_in_flight.unwrap_or(16);
        if max_in_flight == 0 {
            c.err(&at.key("max_in_flight"), "must be at least 1");
        }
        let bulk = s.bulk_subscribe.as_ref().and_then(|b| {
            if b.max_messages_count == Some(0) {
                c.err(
                    &at.key("bulk_subscribe").key("max_messages_count"),
                    "must be at least 1",
                );
            }
            crate::BulkSubscribe::from_dapr(
                b.enabled,
                b.max_messages_count,
                b.max_await_duration_ms,
            )
        });
        if bulk.is_some() && s.in_order {
            c.err(
                &at.key("bulk_subscribe"),
                "in_order delivers one message at a time; a bulk subscription cannot keep order",
            );
        }
        let max_deliveries = s.max_deliveries.unwrap_or(10);
        if max_deliveries == 0 {
            c.err(&at.key("max_deliveries"), "must be at least 1");
        }
        out.push(SubscriptionSpec {
            service: s.service,
            pubsub: s.pubsub,
            topic: s.topic,
            route: s.route,
            rules,
            dead_letter_topic: s.dead_letter_topic.filter(|t| !t.is_empty()),
            max_in_flight: if s.in_order { 1 } else { max_in_flight },
            in_order: s.in_order,
            max_deliveries,
            bulk,
        });
    }
    out
}

/// Adds the default embedded `statestore` when the API has no state component.
pub(crate) fn add_default_store(components: &mut Vec<ComponentSpec>) {
    if components.iter().any(|c| c.kind.starts_with("state.")) {
        return;
    }
    if components.iter().any(|c| c.name == DEFAULT_STORE) {
        return;
    }
    components.push(ComponentSpec {
        name: DEFAULT_STORE.to_string(),
        kind: "state.embedded".to_string(),
        metadata: BTreeMap::new(),
        scopes: Vec::new(),
        origin: Origin::Default,
    });
}

/// App ids and component names: what fits in a URL segment and a Dapr key prefix.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || ch == '.')
}

#[cfg(test)]
mod grpc_tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use crate::model::AppProtocol;
    use crate::source::Source;

    fn load(text: &str) -> Result<crate::Config, crate::ConfigErrors> {
        crate::parse(Arc::new(Source {
            path: PathBuf::from("/tmp/herd.toml"),
            text: text.to_string(),
        }))
    }

    const SERVICE: &str = "[[service]]\nname = \"web\"\ncommand = [\"sh\"]\n";

    #[test]
    fn grpc_listen_defaults_to_dapr_port_and_can_be_turned_off() {
        let api = load("[api]\n").unwrap().api.unwrap();
        assert_eq!(api.grpc_listen, Some(([127, 0, 0, 1], 50001).into()));
        assert!(!api.grpc_explicit);
        let api = load("[api]\ngrpc_listen = \"\"\n").unwrap().api.unwrap();
        assert_eq!(api.grpc_listen, None);
        let api = load("[api]\ngrpc_listen = \"127.0.0.1:7001\"\n")
            .unwrap()
            .api
            .unwrap();
        assert_eq!(api.grpc_listen, Some(([127, 0, 0, 1], 7001).into()));
        assert!(api.grpc_explicit);
        let errs = load("[api]\ngrpc_listen = \"nowhere\"\n").unwrap_err();
        assert_eq!(errs.0[0].key.as_deref(), Some("api.grpc_listen"));
        assert_eq!(errs.0[0].line, Some(2));
    }

    #[test]
    fn app_protocol_is_http_or_grpc() {
        let c = load(&format!("{SERVICE}app_protocol = \"grpc\"\n")).unwrap();
        assert_eq!(c.services[0].app_protocol, AppProtocol::Grpc);
        assert_eq!(
            load(SERVICE).unwrap().services[0].app_protocol,
            AppProtocol::Http
        );
        let errs = load(&format!("{SERVICE}app_protocol = \"h2\"\n")).unwrap_err();
        assert_eq!(errs.0[0].key.as_deref(), Some("service[0].app_protocol"));
        assert_eq!(errs.0[0].line, Some(4));
        assert!(
            errs.0[0].message.contains("\"grpc\""),
            "{}",
            errs.0[0].message
        );
    }
}
