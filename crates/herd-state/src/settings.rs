//! Component metadata → a [`Backend`] ([`configure`]), and a backend → a running store ([`open`]).
//!
//! Metadata keys are Dapr's where Dapr has them. Keys a backend does not know are ignored (Dapr
//! component files carry keys for features herd does not have) but returned so the caller can
//! log them.
//!
//! This only dispatches: each backend reads its own keys (`<backend>/settings.rs`, by the literal
//! rules of [`herd_config::metadata`]: values as written) and opens itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herd_config::metadata::{FieldError, Metadata, Rules, field_error, unsupported};

use crate::embedded::{self, Embedded};
use crate::error::StateError;
#[cfg(feature = "postgres")]
use crate::postgres::{self, PostgresSettings, PostgresStore};
#[cfg(feature = "redis")]
use crate::redis::{self, RedisSettings, RedisStore};
use crate::store::StateStore;

/// Component types this crate serves. `lock.*` components serve only the lock API.
pub const KINDS: &[&str] = &[
    "state.embedded",
    "state.redis",
    "state.postgresql",
    "lock.embedded",
    "lock.redis",
];

/// A configured backend, ready to be opened.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A redb file.
    Embedded(PathBuf),
    /// A Redis server.
    #[cfg(feature = "redis")]
    Redis(RedisSettings),
    /// A PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres(Box<PostgresSettings>),
}

impl Backend {
    /// True if the opened store will serve locks ([`crate::Capabilities::lock`]).
    pub fn supports_locks(&self) -> bool {
        match self {
            Backend::Embedded(_) => true,
            #[cfg(feature = "redis")]
            Backend::Redis(_) => true,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => false,
        }
    }
}

/// Keys the API layer reads (not the backend), never reported as unused.
const IGNORED: &[&str] = &["keyPrefix", "outboxPublishPubsub", "outboxPublishTopic"];

/// Builds the backend of component `name` of type `kind`. Returns it with the metadata keys it
/// ignored. Relative paths are resolved against `data_dir`.
pub fn configure(
    name: &str,
    kind: &str,
    metadata: &BTreeMap<String, String>,
    data_dir: &Path,
) -> Result<(Backend, Vec<String>), FieldError> {
    let meta = Metadata::new(metadata, Rules::Literal);
    if !matches!(kind, "state.embedded" | "state.redis")
        && metadata.contains_key("outboxPublishPubsub")
    {
        return Err(field_error(
            "outboxPublishPubsub",
            "the transactional outbox needs state.embedded or state.redis (one storage transaction for the state and the message)",
        ));
    }
    let backend = match kind {
        "state.embedded" | "lock.embedded" => {
            Backend::Embedded(embedded::settings::configure(name, &meta, data_dir))
        }
        #[cfg(feature = "redis")]
        "state.redis" | "lock.redis" => Backend::Redis(redis::settings::configure(name, &meta)?),
        #[cfg(feature = "postgres")]
        "state.postgresql" => Backend::Postgres(Box::new(postgres::settings::configure(&meta)?)),
        #[cfg(not(feature = "redis"))]
        "state.redis" | "lock.redis" => return Err(left_out(kind, "redis")),
        #[cfg(not(feature = "postgres"))]
        "state.postgresql" => return Err(left_out(kind, "postgres")),
        other => return Err(unsupported(other, KINDS)),
    };
    Ok((backend, meta.unused(IGNORED)))
}

/// The error for a component type this crate serves, but whose backend this build left out.
#[cfg(not(all(feature = "redis", feature = "postgres")))]
fn left_out(kind: &str, feature: &str) -> FieldError {
    FieldError {
        field: None,
        message: format!(
            "component type {kind} is not in this build of herd (built without the herd-state feature `{feature}`)"
        ),
    }
}

/// Opens a configured backend. Must be called inside a tokio runtime.
pub async fn open(backend: &Backend) -> Result<Arc<dyn StateStore>, StateError> {
    Ok(match backend {
        Backend::Embedded(path) => Arc::new(Embedded::open(path)?),
        #[cfg(feature = "redis")]
        Backend::Redis(s) => Arc::new(RedisStore::connect(s.clone()).await?),
        #[cfg(feature = "postgres")]
        Backend::Postgres(s) => Arc::new(PostgresStore::connect((**s).clone()).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_needs_host_and_escapes_password() {
        let dir = Path::new("/data");
        let err = configure("s", "state.redis", &meta(&[]), dir).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("redisHost"));
        let (backend, unused) = configure(
            "s",
            "state.redis",
            &meta(&[
                ("redisHost", "h:1"),
                ("redisPassword", "p@ss"),
                ("actorStateStore", "true"),
            ]),
            dir,
        )
        .unwrap();
        let Backend::Redis(s) = backend else {
            panic!("not redis")
        };
        assert_eq!(s.url, "redis://:p%40ss@h:1/0");
        assert_eq!(unused, vec!["actorStateStore".to_string()]);
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_checks_table_name_and_connection() {
        let dir = Path::new("/data");
        let ok = meta(&[("connectionString", "host=localhost user=postgres")]);
        assert!(configure("s", "state.postgresql", &ok, dir).is_ok());
        let bad = meta(&[("connectionString", "host=x"), ("tableName", "x; drop")]);
        let err = configure("s", "state.postgresql", &bad, dir).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("tableName"));
        let bad = meta(&[("connectionString", "host=x"), ("maxConns", "many")]);
        let err = configure("s", "state.postgresql", &bad, dir).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("maxConns"));
    }

    /// Run with `cargo test -p herd-state --no-default-features`.
    #[cfg(not(all(feature = "redis", feature = "postgres")))]
    #[test]
    fn a_backend_left_out_of_the_build_is_a_config_error_naming_its_feature() {
        let dir = Path::new("/data");
        let redis = cfg!(feature = "redis");
        let postgres = cfg!(feature = "postgres");
        for (kind, feature, built, metadata) in [
            ("state.redis", "redis", redis, meta(&[("redisHost", "h:1")])),
            ("lock.redis", "redis", redis, meta(&[("redisHost", "h:1")])),
            (
                "state.postgresql",
                "postgres",
                postgres,
                meta(&[("connectionString", "host=x")]),
            ),
        ] {
            let result = configure("s", kind, &metadata, dir);
            if built {
                assert!(result.is_ok(), "{kind}");
                continue;
            }
            let err = result.unwrap_err();
            assert_eq!(err.field, None);
            assert!(
                err.message.contains(kind) && err.message.contains(&format!("`{feature}`")),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn embedded_defaults_to_the_data_dir() {
        let (backend, _) =
            configure("orders", "state.embedded", &meta(&[]), Path::new("/d")).unwrap();
        let path = match backend {
            Backend::Embedded(path) => path,
            #[allow(unreachable_patterns)] // the only variant in a build without client backends
            _ => panic!("not embedded"),
        };
        assert_eq!(path, Path::new("/d/state/orders.redb"));
        let err = configure("x", "state.mongodb", &meta(&[]), Path::new("/d")).unwrap_err();
        assert!(err.message.contains("unsupported component type"));
    }
}
