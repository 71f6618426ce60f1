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
use crate::postgres::{self, PostgresSettings, PostgresStore};
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
    Redis(RedisSettings),
    /// A PostgreSQL server.
    Postgres(Box<PostgresSettings>),
}

impl Backend {
    /// True if the opened store will serve locks ([`crate::Capabilities::lock`]).
    pub fn supports_locks(&self) -> bool {
        matches!(self, Backend::Embedded(_) | Backend::Redis(_))
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
        "state.redis" | "lock.redis" => Backend::Redis(redis::settings::configure(name, &meta)?),
        "state.postgresql" => Backend::Postgres(Box::new(postgres::settings::configure(&meta)?)),
        other => return Err(unsupported(other, KINDS)),
    };
    Ok((backend, meta.unused(IGNORED)))
}

/// Opens a configured backend. Must be called inside a tokio runtime.
pub async fn open(backend: &Backend) -> Result<Arc<dyn StateStore>, StateError> {
    Ok(match backend {
        Backend::Embedded(path) => Arc::new(Embedded::open(path)?),
        Backend::Redis(s) => Arc::new(RedisStore::connect(s.clone()).await?),
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

    #[test]
    fn embedded_defaults_to_the_data_dir() {
        let (backend, _) =
            configure("orders", "state.embedded", &meta(&[]), Path::new("/d")).unwrap();
        let Backend::Embedded(path) = backend else {
            panic!("not embedded")
        };
        assert_eq!(path, Path::new("/d/state/orders.redb"));
        let err = configure("x", "state.mongodb", &meta(&[]), Path::new("/d")).unwrap_err();
        assert!(err.message.contains("unsupported component type"));
    }
}
