//! `pubsub.embedded` metadata → the log's file and [`EmbeddedSettings`]: `path` (relative to the
//! data directory), and herd's `dedupeWindow` and `retention`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_config::metadata::{FieldError, Metadata};

/// Settings of the embedded log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedSettings {
    /// How long publisher idempotency keys are remembered.
    pub dedupe_window: Duration,
    /// Messages older than this are removed even if a group has not consumed them.
    pub retention: Duration,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        Self {
            dedupe_window: Duration::from_secs(600),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The file and settings of `pubsub.embedded` component `name`; a relative `path` is resolved
/// against `data_dir`, and without one the log is `<data_dir>/pubsub/<name>.redb`.
pub(crate) fn configure(
    name: &str,
    m: &Metadata<'_>,
    data_dir: &Path,
) -> Result<(PathBuf, EmbeddedSettings), FieldError> {
    let path = match m.verbatim("path") {
        Some(p) => data_dir.join(p),
        None => data_dir.join("pubsub").join(format!("{name}.redb")),
    };
    let defaults = EmbeddedSettings::default();
    let settings = EmbeddedSettings {
        dedupe_window: m
            .duration("dedupeWindow")?
            .unwrap_or(defaults.dedupe_window),
        retention: m.duration("retention")?.unwrap_or(defaults.retention),
    };
    Ok((path, settings))
}
