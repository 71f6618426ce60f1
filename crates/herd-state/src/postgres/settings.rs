//! `state.postgresql` metadata → [`PostgresSettings`]: the keys of Dapr's PostgreSQL state store
//! that herd uses, read as written.

use std::str::FromStr;
use std::time::Duration;

use herd_config::metadata::{FieldError, Metadata, field_error};

/// Connection settings read from the component's metadata.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// A libpq connection string or `postgres://` URL.
    pub connection: tokio_postgres::Config,
    /// The state table (`[schema.]name`).
    pub table: String,
    /// Connections in the pool at most.
    pub max_conns: usize,
    /// Timeout of connecting and of waiting for a pooled connection.
    pub timeout: Duration,
    /// How often expired rows are deleted.
    pub cleanup_interval: Duration,
}

/// The settings of a `state.postgresql` component.
pub(crate) fn configure(meta: &Metadata<'_>) -> Result<PostgresSettings, FieldError> {
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
