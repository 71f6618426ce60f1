//! rustls configurations (ring provider), certificates loaded from PEM files at start-up: the
//! gateway's HTTPS listeners (ALPN offering HTTP/2 and HTTP/1.1), and both sides of mutual TLS
//! between herds, the mesh listener's and the client's that calls peers (each presents a
//! certificate signed by the mesh's CA; HTTP/1.1). The two sides of the mesh are built here
//! together so they cannot drift apart.

use std::sync::Arc;

use herd_config::TlsFiles;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The rustls server configuration for `files`, or a message saying what is wrong with them.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = chain_and_key(&files.cert, &files.key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Server side of mutual TLS between herds: presents `cert`/`key` and accepts only clients
/// whose certificate chains to `ca`. HTTP/1.1 only (ALPN `http/1.1`).
pub fn mtls_server_config(cert: &Path, key: &Path, ca: &Path) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = chain_and_key(cert, key)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .build()
        .map_err(|e| format!("cannot use {} as certificate authority: {e}", ca.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client side of mutual TLS between herds: trusts servers whose certificate chains to `ca`
/// and presents `cert`/`key`.
pub fn mtls_client_config(cert: &Path, key: &Path, ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let (certs, key) = chain_and_key(cert, key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key from PEM files.
fn chain_and_key(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    Ok((certs, key))
}

/// The certificates of a CA file as trust roots.
fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", ca.display()))?;
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate in {}", ca.display()));
    }
    Ok(roots)
}
