//! The sidecar API's part of start-up: components configured (a bad type or metadata value is a
//! config error that names its file and line), listeners bound before anything starts, and the
//! variables each instance gets so Dapr SDKs find the API.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herd_api::components::Backend;
use herd_api::peers::Peers;
use herd_api::{Components, Declared, Invoker, KeyPrefix, Listener, Policies, Shared};
use herd_config::{Config, ConfigError, ConfigErrors, KeyPath};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Loads the config, the components of the resource folders, and configures every component.
pub fn load(path: &Path, resources: &[PathBuf]) -> Result<(Config, Vec<Declared>), ConfigErrors> {
    let mut config = herd_config::load(path)?;
    for note in herd_config::load_resources(&mut config, resources)? {
        tracing::info!("{note}");
    }
    let mut errors = Vec::new();
    let mut declared = Vec::new();
    for c in &config.components {
        let known = herd_state::KINDS.iter().chain(herd_pubsub::KINDS);
        if !known.clone().any(|k| *k == c.kind) {
            let kinds: Vec<&str> = known.copied().collect();
            let e = herd_config::metadata::unsupported(&c.kind, &kinds);
            errors.push(config.component_error(c, None, e.message));
            continue;
        }
        let configured = if c.kind.starts_with("pubsub.") {
            herd_pubsub::configure(&c.name, &c.kind, &c.metadata, &config.data_dir)
                .map(|b| (Backend::PubSub(b), Vec::new()))
        } else {
            herd_state::configure(&c.name, &c.kind, &c.metadata, &config.data_dir)
                .map(|(b, unused)| (Backend::State(b), unused))
        };
        match configured {
            Ok((backend, unused)) => {
                if !unused.is_empty() {
                    tracing::warn!(
                        "component {}: ignoring metadata {} (not used by herd's {})",
                        c.name,
                        unused.join(", "),
                        c.kind
                    );
                }
                declared.push(Declared {
                    name: c.name.clone(),
                    kind: c.kind.clone(),
                    scopes: c.scopes.clone(),
                    prefix: KeyPrefix::from_metadata(
                        c.metadata.get("keyPrefix").map(String::as_str),
                        &c.name,
                    ),
                    backend,
                    outbox: outbox_of(c),
                });
            }
            Err(e) => errors.push(config.component_error(c, e.field.as_deref(), e.message)),
        }
    }
    for c in &config.components {
        let has = |k: &str| c.metadata.get(k).is_some_and(|v| !v.is_empty());
        if has("outboxPublishPubsub") != has("outboxPublishTopic") {
            let message = "the outbox needs both outboxPublishPubsub and outboxPublishTopic";
            errors.push(config.component_error(c, Some("outboxPublishPubsub"), message));
        }
        if let Some((pubsub, _)) = outbox_of(c) {
            let known = config
                .components
                .iter()
                .any(|p| p.name == pubsub && p.kind.starts_with("pubsub."));
            if !known {
                let message = format!("no pub/sub component named {pubsub:?}");
                errors.push(config.component_error(c, Some("outboxPublishPubsub"), message));
            }
        }
    }
    for (i, s) in config.subscriptions.iter().enumerate() {
        let known = config
            .components
            .iter()
            .any(|c| c.name == s.pubsub && c.kind.starts_with("pubsub."));
        if !known {
            let at = KeyPath::default()
                .key("subscription")
                .index(i)
                .key("pubsub");
            errors.push(
                config
                    .source
                    .error(&at, format!("no pub/sub component named {:?}", s.pubsub)),
            );
        }
    }
    if errors.is_empty() {
        Ok((config, declared))
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A state component's outbox, `(pubsub, topic)`, from Dapr's `outboxPublishPubsub` and
/// `outboxPublishTopic` metadata.
fn outbox_of(c: &herd_config::ComponentSpec) -> Option<(String, String)> {
    let pubsub = c
        .metadata
        .get("outboxPublishPubsub")
        .filter(|v| !v.is_empty())?;
    let topic = c
        .metadata
        .get("outboxPublishTopic")
        .filter(|v| !v.is_empty())?;
    Some((pubsub.clone(), topic.clone()))
}

/// The API's bound listeners (HTTP and gRPC) and each service's ports.
pub struct Bound {
    listeners: Vec<Listener>,
    grpc_listeners: Vec<Listener>,
    ports: HashMap<String, u16>,
    grpc_ports: HashMap<String, u16>,
    /// The shared listener's address.
    pub addr: SocketAddr,
    mesh: Option<Mesh>,
}

/// The mesh listener and what its TLS needs, all checked before anything starts.
struct Mesh {
    socket: TcpListener,
    server_tls: Option<Arc<rustls::ServerConfig>>,
    client: herd_upstream::Client,
}

/// Binds `[mesh] listen` and loads its certificates; errors name the key.
fn bind_mesh(config: &Config) -> Result<Option<Mesh>, Vec<ConfigError>> {
    let Some(mesh) = &config.mesh else {
        return Ok(None);
    };
    let at = KeyPath::default().key("mesh");
    let socket = TcpListener::bind(mesh.listen).map_err(|e| {
        vec![config.source.error(
            &at.key("listen"),
            format!("cannot bind {}: {e}", mesh.listen),
        )]
    })?;
    let Some(tls) = &mesh.tls else {
        return Ok(Some(Mesh {
            socket,
            server_tls: None,
            client: herd_upstream::Client::new(),
        }));
    };
    let tls_error = |e: String| vec![config.source.error(&at.key("tls"), e)];
    let server =
        herd_upstream::tls::mtls_server_config(&tls.cert, &tls.key, &tls.ca).map_err(tls_error)?;
    let client =
        herd_upstream::tls::mtls_client_config(&tls.cert, &tls.key, &tls.ca).map_err(tls_error)?;
    let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
        .map_err(|e| tls_error(e.to_string()))?;
    Ok(Some(Mesh {
        socket,
        server_tls: Some(server),
        client: herd_upstream::Client::with_tls(client, name),
    }))
}

/// Binds `[api] grpc_listen` unless it is off; the default address, if taken, is skipped
/// with a warning (an explicit one is an error that names the key).
fn bind_grpc(
    config: &Config,
    api: &herd_config::ApiSpec,
) -> Result<Option<Listener>, Vec<ConfigError>> {
    let Some(addr) = api.grpc_listen else {
        return Ok(None);
    };
    match TcpListener::bind(addr) {
        Ok(socket) => Ok(Some(Listener {
            socket,
            app_id: api.app_id.clone(),
        })),
        Err(e) if !api.grpc_explicit => {
            tracing::warn!(
                "[api] grpc_listen: cannot bind the default {addr} ({e}); the shared gRPC API is off (services keep their own DAPR_GRPC_PORT)"
            );
            Ok(None)
        }
        Err(e) => {
            let at = KeyPath::default().key("api").key("grpc_listen");
            Err(vec![
                config.source.error(&at, format!("cannot bind {addr}: {e}")),
            ])
        }
    }
}

/// Binds `[api] listen`, `[api] grpc_listen` and two loopback ports per service (HTTP and
/// gRPC); `None` without `[api]`.
pub fn bind(config: &Config) -> Result<Option<Bound>, Vec<ConfigError>> {
    let Some(api) = &config.api else {
        return Ok(None);
    };
    let at = KeyPath::default().key("api").key("listen");
    let main = TcpListener::bind(api.listen).map_err(|e| {
        vec![
            config
                .source
                .error(&at, format!("cannot bind {}: {e}", api.listen)),
        ]
    })?;
    let addr = main
        .local_addr()
        .map_err(|e| vec![config.source.error(&at, e.to_string())])?;
    let mut listeners = vec![Listener {
        socket: main,
        app_id: api.app_id.clone(),
    }];
    let mut grpc_listeners: Vec<Listener> = bind_grpc(config, api)?.into_iter().collect();
    let mut ports = HashMap::new();
    let mut grpc_ports = HashMap::new();
    for service in &config.services {
        for (listeners, ports) in [
            (&mut listeners, &mut ports),
            (&mut grpc_listeners, &mut grpc_ports),
        ] {
            let socket = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| {
                vec![config.source.error(
                    &at,
                    format!("cannot bind a sidecar port for {}: {e}", service.name),
                )]
            })?;
            let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
            ports.insert(service.name.clone(), port);
            listeners.push(Listener {
                socket,
                app_id: service.name.clone(),
            });
        }
    }
    Ok(Some(Bound {
        listeners,
        grpc_listeners,
        ports,
        grpc_ports,
        addr,
        mesh: bind_mesh(config)?,
    }))
}

/// The API token from `HERD_API_TOKEN`, or `DAPR_API_TOKEN` for compatibility.
pub fn token() -> Option<String> {
    ["HERD_API_TOKEN", "DAPR_API_TOKEN"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|t| !t.is_empty()))
}

impl Bound {
    /// What instances of `service` find in their environment: the API's ports (and token), as
    /// `dapr run` sets them.
    pub fn env(&self, service: &str, token: Option<&str>) -> Vec<(String, String)> {
        let Some(port) = self.ports.get(service) else {
            return Vec::new();
        };
        let mut env = vec![
            ("DAPR_HTTP_PORT".to_string(), port.to_string()),
            (
                "DAPR_HTTP_ENDPOINT".to_string(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("APP_ID".to_string(), service.to_string()),
        ];
        if let Some(port) = self.grpc_ports.get(service) {
            env.push(("DAPR_GRPC_PORT".to_string(), port.to_string()));
            env.push((
                "DAPR_GRPC_ENDPOINT".to_string(),
                format!("http://127.0.0.1:{port}"),
            ));
        }
        if let Some(token) = token {
            env.push(("DAPR_API_TOKEN".to_string(), token.to_string()));
        }
        env
    }

    /// Starts connecting the components, asking peers, and serving the API (and the mesh
    /// listener) until `stop`. The invoker reaches local instances once given the services.
    pub fn serve(
        self,
        config: &Config,
        declared: Vec<Declared>,
        token: Option<String>,
        stop: &CancellationToken,
        tracker: &TaskTracker,
    ) -> std::io::Result<(Arc<Components>, Arc<Invoker>, Arc<Policies>)> {
        let max_body = config.api.as_ref().map_or(4 << 20, |a| a.max_body);
        let policies = Arc::new(Policies::new(
            config.resiliency.clone(),
            declared.iter().map(|d| (d.name.clone(), d.kind.clone())),
        ));
        let components = Components::start(declared, stop, tracker);
        let outbox_ready = Arc::new(tokio::sync::Notify::new());
        herd_api::outbox::start(components.clone(), outbox_ready.clone(), stop, tracker);
        let names = config.services.iter().map(|s| s.name.clone()).collect();
        let grpc_apps: Vec<String> = config
            .services
            .iter()
            .filter(|s| s.app_protocol == herd_config::AppProtocol::Grpc)
            .map(|s| s.name.clone())
            .collect();
        let (invoker, mesh) = match (self.mesh, &config.mesh) {
            (Some(mesh), Some(spec)) => {
                let peers = Arc::new(Peers::new(
                    spec.clone(),
                    config.gateway.regions.clone(),
                    mesh.client,
                ));
                tracker.spawn(peers.clone().run(stop.child_token()));
                tracing::info!("mesh listener on {}", spec.listen);
                let invoker =
                    Arc::new(Invoker::new(names, Some(peers), max_body).with_grpc_apps(grpc_apps));
                (invoker, Some((mesh.socket, mesh.server_tls)))
            }
            _ => (
                Arc::new(Invoker::new(names, None, max_body).with_grpc_apps(grpc_apps)),
                None,
            ),
        };
        if let Some((socket, tls)) = mesh {
            herd_api::mesh::serve(invoker.clone(), socket, tls, stop, tracker)?;
        }
        let shared = Arc::new(Shared {
            components: components.clone(),
            outbox_ready,
            token,
            shared_app: config
                .api
                .as_ref()
                .map_or_else(String::new, |a| a.app_id.clone()),
            invoker: invoker.clone(),
            policies: policies.clone(),
            extended: Default::default(),
        });
        herd_api::serve(shared.clone(), max_body, self.listeners, stop, tracker)?;
        herd_api::grpc::serve(shared, max_body, self.grpc_listeners, stop, tracker)?;
        Ok((components, invoker, policies))
    }
}
