//! `[mesh]`, validated: where peers reach this herd, where it finds them, and mutual TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[mesh]`: where peers reach this herd and where it finds them.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshSpec {
    /// Where peer herds reach this one.
    pub listen: SocketAddr,
    /// Peers given by address.
    pub peers: Vec<SocketAddr>,
    /// Peers given as `name:port`, resolved every `refresh`.
    pub names: Vec<(String, u16)>,
    /// How often peers are asked for their apps (and names resolved).
    pub refresh: Duration,
    /// This herd's region.
    pub region: Option<String>,
    /// Mutual TLS, if configured.
    pub tls: Option<MeshTls>,
}

/// Mutual TLS between herds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTls {
    /// This herd's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The authority peers' certificates must chain to.
    pub ca: PathBuf,
    /// The DNS name checked in a peer's certificate.
    pub server_name: String,
}
