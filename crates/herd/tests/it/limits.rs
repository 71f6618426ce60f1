//! Bad input at the gateway: oversized and malformed requests get the right 4xx and a closed
//! connection, and a slow client is cut off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::{Herd, free_port, get};

/// Sends `bytes` and returns everything the gateway answers until it closes the connection.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

fn gateway() -> (Herd, SocketAddr) {
    let port = free_port();
    let herd = Herd::start(&format!(
        r#"
[[service]]
name = "api"
command = ["{{hello}}"]
port = "auto"
env = {{ HELLO_DELAY_MS = "0" }}

[gateway]
max_header_count = 20
max_header_bytes = "8KiB"
max_body_bytes = "1KB"
header_read_timeout = "300ms"

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{port}"

[[route]]
service = "api"
"#
    ));
    (herd, ([127, 0, 0, 1], port).into())
}

#[test]
fn oversized_and_malformed_requests_are_refused() {
    let (_herd, addr) = gateway();
    assert_eq!(get(addr, "/").unwrap().status, 200);

    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let r = raw(
        addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(status(&r), 431, "too many headers: {r}");

    let big = "a".repeat(10_000);
    let r = raw(
        addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nx-big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status(&r), 431, "head too large: {r}");

    let r = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n",
    );
    assert_eq!(status(&r), 413, "declared body too large: {r}");
    assert!(r.contains("request body too large"), "{r}");

    let chunk = "b".repeat(600);
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let r = raw(addr, chunked.as_bytes());
    assert_eq!(status(&r), 413, "streamed body too large: {r}");

    let r = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert_eq!(status(&r), 400, "differing Content-Length: {r}");

    let r = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert!(
        !r.contains("/smuggled") && r.matches("HTTP/1.1 ").count() <= 1,
        "a request hidden behind conflicting framing must not be served: {r}"
    );

    let r = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_eq!(status(&r), 400, "bad chunk size: {r}");
}

#[test]
fn a_client_that_never_finishes_its_head_is_cut_off() {
    let (_herd, addr) = gateway();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nx-slow: ")
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "connection held for {waited:?}"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}
