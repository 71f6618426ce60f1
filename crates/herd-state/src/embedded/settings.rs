//! `state.embedded` and `lock.embedded` metadata → the store's file: `path`, relative to the
//! data directory.

use std::path::{Path, PathBuf};

use herd_config::metadata::Metadata;

/// The file of embedded component `name`: `path` resolved against `data_dir`, or
/// `<data_dir>/state/<name>.redb`.
pub(crate) fn configure(name: &str, m: &Metadata<'_>, data_dir: &Path) -> PathBuf {
    match m.value("path") {
        Some(p) => data_dir.join(p),
        None => data_dir.join("state").join(format!("{name}.redb")),
    }
}
