//! HTTPS listeners: a certificate from herd.toml, HTTP/1.1 and HTTP/2 offered by ALPN, and a
//! clear config error for a missing file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use crate::util::{Herd, free_port};

/// A rustls client trusting `cert_der` and offering `alpn`.
fn client(
    cert_der: &[u8],
    alpn: &[u8],
    port: u16,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.to_vec().into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn an_https_listener_serves_with_the_configured_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let port = free_port();
    let mut herd = Herd::prepare(&format!(
        r#"
[[service]]
name = "api"
command = ["{{hello}}"]
port = "auto"
env = {{ HELLO_DELAY_MS = "0" }}

[[gateway.listener]]
name = "secure"
listen = "127.0.0.1:{port}"
tls = {{ cert = "cert.pem", key = "key.pem" }}

[[route]]
service = "api"
"#
    ));
    std::fs::write(herd.dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(
        herd.dir.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    herd.spawn();
    herd.wait_all_ready();

    let der = certified.cert.der().to_vec();
    let mut s = client(&der, b"http/1.1", port);
    s.write_all(b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("Hello from distributed node"), "{out}");

    // HTTP/2 is offered by ALPN.
    let mut s = client(&der, b"h2", port);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]));
}

#[test]
fn a_missing_certificate_file_is_a_config_error() {
    let herd = Herd::prepare(
        "[[gateway.listener]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\ntls = { cert = \"nope.pem\", key = \"nope.key\" }\n",
    );
    let out = herd.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":4:9: gateway.listener[0].tls.cert: no such file:"),
        "{err}"
    );
    assert!(
        err.contains(":4:28: gateway.listener[0].tls.key: no such file:"),
        "{err}"
    );
}
