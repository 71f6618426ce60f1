//! The local control API: a unix socket (mode 0600) in the data directory, spoken by the CLI.

pub mod client;
mod describe;
pub mod proto;
pub mod server;

use std::path::{Path, PathBuf};

/// The control socket's path in `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("herd.sock")
}
