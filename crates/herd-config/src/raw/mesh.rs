//! `[mesh]` as serde reads it: where peer herds reach this one, the peers, and mutual TLS.
//! Checked in `mesh.rs`.

use serde::Deserialize;

/// `[mesh]`: service invocation across hosts. Each herd serves the apps it runs to its peers on
/// `listen` and asks every peer which apps it runs; an invocation of an app that has no ready
/// instance here goes to a peer that has one, preferring the own region as the gateway does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMesh {
    /// `"IP:PORT"` where peer herds reach this one (invocations forwarded to it, and
    /// `GET /herd/v1/apps`, the list of apps it runs). Required.
    pub listen: String,
    /// The other herds: `"IP:PORT"`, or `"name:port"` resolved through DNS every `refresh` (every
    /// address a name resolves to is a peer, as with a Kubernetes headless service). The own
    /// address may be listed (it is recognised and skipped), so every host can share one list.
    #[serde(default)]
    pub peers: Vec<String>,
    /// How often each peer is asked for its apps and names are resolved again. Default: `"2s"`.
    pub refresh: Option<String>,
    /// This herd's region, announced to peers. Default: `[gateway] region`.
    pub region: Option<String>,
    /// Mutual TLS between herds: this herd presents `cert` and accepts only peers whose
    /// certificate is signed by `ca`. Absent: plain HTTP (for a trusted network only).
    pub tls: Option<RawMeshTls>,
}

/// `[mesh.tls]`: PEM files, relative to the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeshTls {
    /// This herd's certificate chain, presented both as server and as client.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// The certificate authority peers' certificates must chain to.
    pub ca: String,
    /// The DNS name every herd's certificate carries, checked when connecting to a peer (peers
    /// are reached by address, so one shared name stands for "a herd"). Default: `"herd"`.
    pub server_name: Option<String>,
}
