//! Validation of `[mesh]`: the listen address, peers (addresses or DNS names), refresh period
//! and the mutual-TLS files.

use std::time::Duration;

use crate::check::{Checker, host_port};
use crate::model::{MeshSpec, MeshTls};
use crate::raw::RawMesh;
use crate::source::KeyPath;

/// How often peers are asked for their apps unless `refresh` says otherwise.
const DEFAULT_REFRESH: Duration = Duration::from_secs(2);

pub(crate) fn check(c: &mut Checker<'_>, raw: RawMesh, gateway_region: Option<&str>) -> MeshSpec {
    let at = KeyPath::default().key("mesh");
    let listen = c
        .address(&at.key("listen"), &raw.listen)
        .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
    if listen.port() == 0 {
        c.err(
            &at.key("listen"),
            "peers need a fixed port: port 0 is not allowed",
        );
    }
    let mut peers = Vec::new();
    let mut names = Vec::new();
    for (i, text) in raw.peers.iter().enumerate() {
        if let Ok(addr) = text.parse() {
            peers.push(addr);
        } else if let Some(name) = host_port(text) {
            names.push(name);
        } else {
            c.err(
                &at.key("peers").index(i),
                format!("not a peer: {text:?}; write \"IP:PORT\" or \"name:port\""),
            );
        }
    }
    let refresh = c.duration(&at.key("refresh"), raw.refresh.as_deref(), DEFAULT_REFRESH);
    if refresh.is_zero() {
        c.err(&at.key("refresh"), "must be longer than zero");
    }
    let tls = raw.tls.map(|t| {
        let tls_at = at.key("tls");
        let server_name = t.server_name.unwrap_or_else(|| "herd".to_string());
        if rustls_pki_name(&server_name).is_none() {
            c.err(
                &tls_at.key("server_name"),
                format!("{server_name:?} is not a DNS name"),
            );
        }
        MeshTls {
            cert: c.file(&tls_at.key("cert"), &t.cert),
            key: c.file(&tls_at.key("key"), &t.key),
            ca: c.file(&tls_at.key("ca"), &t.ca),
            server_name,
        }
    });
    MeshSpec {
        listen,
        peers,
        names,
        refresh,
        region: raw.region.or_else(|| gateway_region.map(str::to_string)),
        tls,
    }
}

/// Whether `name` is a DNS name a certificate can carry (letters, digits, `-`, `.`).
fn rustls_pki_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        });
    ok.then_some(name)
}
