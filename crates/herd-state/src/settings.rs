//! Component metadata → a [`Backend`] ([`configure`]), and a backend → a running store ([`open`]).
//!
//! Metadata keys are Dapr's where Dapr has them. Keys a backend does not know are ignored (Dapr
//! component files carry keys for features herd does not have) but returned so the caller can
//! log them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use herd_config::metadata::{FieldError, Metadata, Rules, field_error, unsupported, userinfo};

use crate::Embedded;
use crate::error::StateError;
use crate::postgres::{PostgresSettings, PostgresStore};
use crate::redis::{RedisSettings, RedisStore};
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
    if kind != "state.embedded" && metadata.contains_key("outboxPublishPubsub") {
        return Err(field_error(
            "outboxPublishPubsub",
            "the transactional outbox needs state.embedded (one storage transaction for the state and the message)",
        ));
    }
    let backend = match kind {
        "state.embedded" | "lock.embedded" => {
            let path = match meta.value("path") {
                Some(p) => data_dir.join(p),
                None => data_dir.join("state").join(format!("{name}.redb")),
            };
            Backend::Embedded(path)
        }
        "state.redis" | "lock.redis" => Backend::Redis(redis_settings(&meta)?),
        "state.postgresql" => Backend::Postgres(Box::new(postgres_settings(&meta)?)),
        other => return Err(unsupported(other, KINDS)),
    };
    Ok((backend, meta.unused(IGNORED)))
}

fn redis_settings(meta: &Metadata<'_>) -> Result<RedisSettings, FieldError> {
    let host = meta
        .value("redisHost")
        .ok_or_else(|| field_error("redisHost", "required (host:port)"))?;
    if !host.contains(':') {
        return Err(field_error(
            "redisHost",
            format!("{host:?} is not host:port"),
        ));
    }
    if meta.boolean("enableTLS")?.unwrap_or(false) {
        return Err(field_error(
            "enableTLS",
            "TLS to Redis is not supported yet",
        ));
    }
    let db: u32 = meta.number("redisDB")?.unwrap_or(0);
    let auth = userinfo(meta.value("redisUsername"), meta.value("redisPassword"));
    Ok(RedisSettings {
        url: format!("redis://{auth}{host}/{db}"),
        replicas: meta.number("replicas")?.unwrap_or(0),
        strong_timeout: meta
            .duration("strongTimeout")?
            .unwrap_or(Duration::from_secs(1)),
        timeout: meta
            .duration("readTimeout")?
            .unwrap_or(Duration::from_secs(5)),
    })
}

fn postgres_settings(meta: &Metadata<'_>) -> Result<PostgresSettings, FieldError> {
    let text = meta
        .value("connectionString")
        .ok_or_else(|| field_error("connectionString", "required"))?;
    let connection = tokio_postgres::Config::from_str(text)
        .map_err(|e| field_error("connectionString", format!("invalid: {e}")))?;
    let table = meta.value("tableName").unwrap_or("herd_state").to_string();
    let identifier = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if table.split('.').count() > 2 || !table.split('.').all(identifier) {
        return Err(field_error(
            "tableName",
            format!("{table:?} is not a table name ([schema.]name of letters, digits, _)"),
        ));
    }
    Ok(PostgresSettings {
        connection,
        table,
        max_conns: meta.number("maxConns")?.unwrap_or(10),
        timeout: meta
            .seconds("timeoutInSeconds")?
            .unwrap_or(Duration::from_secs(5)),
        cleanup_interval: meta
            .seconds("cleanupIntervalInSeconds")?
            .unwrap_or(Duration::from_secs(60)),
    })
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
