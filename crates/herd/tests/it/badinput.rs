//! Heads the gateway must refuse, sent on raw sockets: no or two `Host`, `CONNECT`, transfer
//! codings herd does not implement, conflicting framing. Each gets its status, a closed
//! connection, and never reaches the endpoint. Then connections that send nothing: closed at
//! the header read timeout, and past `max_pending_connections` the oldest go first while a real
//! request is still served.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{Herd, free_port, get, wait_for};

/// An endpoint that records every request head it receives and answers `200 ok`.
struct Recorder {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || Recorder::serve(conn, &seen));
            }
        });
        Recorder { port, heads }
    }

    fn serve(conn: TcpStream, seen: &Mutex<Vec<String>>) {
        let mut out = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        loop {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let end = line == "\r\n";
                head.push_str(&line);
                if end {
                    break;
                }
            }
            let lower = head.to_ascii_lowercase();
            if lower.contains("transfer-encoding: chunked") {
                // Herd's own chunked bodies: read up to the last chunk.
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "0\r\n" {
                    line.clear();
                }
                let _ = reader.read_line(&mut line);
            } else if let Some(n) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
            {
                let mut body = vec![0; n];
                let _ = reader.read_exact(&mut body);
            }
            seen.lock().unwrap().push(head);
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// A gateway in front of `recorder`, with `gateway` lines added to `[gateway]`.
fn gateway_to(recorder: &Recorder, gateway: &str) -> (Herd, SocketAddr, SocketAddr) {
    let (port, admin) = (free_port(), free_port());
    let herd = Herd::start(&format!(
        r#"
[admin]
listen = "127.0.0.1:{admin}"

[gateway]
{gateway}

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:{port}"

[[route]]
upstream = "rec"

[[upstream]]
name = "rec"
endpoints = ["127.0.0.1:{}"]
"#,
        recorder.port
    ));
    let addr = ([127, 0, 0, 1], port).into();
    wait_for("the gateway", Duration::from_secs(10), || {
        get(addr, "/").ok()
    });
    (herd, addr, ([127, 0, 0, 1], admin).into())
}

/// Sends `bytes` on a new connection; returns what came back before the gateway closed it.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let started = Instant::now();
    let _ = s.read_to_end(&mut out);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connection was left open after {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// How many answers `text` holds: status lines, `HTTP/1.1 NNN` at the start of a line.
fn status_lines(text: &str) -> usize {
    text.split('\n')
        .filter(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .is_some_and(|r| r.len() >= 3 && r.as_bytes()[..3].iter().all(u8::is_ascii_digit))
        })
        .count()
}

fn has_header(answer: &str, line: &str) -> bool {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines().any(|l| l.eq_ignore_ascii_case(line))
}

#[test]
fn heads_http_says_to_refuse_are_answered_closed_and_never_forwarded() {
    let recorder = Recorder::start();
    let (_herd, addr, _) = gateway_to(&recorder, "");
    let forwarded = recorder.heads().len();

    // (request, status, what, whether herd answers it itself rather than hyper's parser)
    let cases: [(&[u8], u16, &str, bool); 8] = [
        (b"GET /a HTTP/1.1\r\n\r\n", 400, "no Host", true),
        (
            b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "two Host headers",
            true,
        ),
        (
            b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
            "a Host with a space",
            true,
        ),
        (
            b"GET http://a/x HTTP/1.1\r\n\r\n",
            400,
            "absolute form without Host",
            true,
        ),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            405,
            "CONNECT",
            true,
        ),
        (
            b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            501,
            "gzip, chunked",
            true,
        ),
        (
            b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
            "gzip then chunked in two fields",
            true,
        ),
        (
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400,
            "differing Content-Length values",
            false,
        ),
    ];
    for (request, want, what, own) in cases {
        // A second request follows on the same connection: it must never be served.
        let mut bytes = request.to_vec();
        bytes.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
        let answer = exchange(addr, &bytes);
        assert_eq!(status(&answer), want, "{what}: {answer}");
        assert_eq!(
            status_lines(&answer),
            1,
            "{what}: nothing after the refusal is served: {answer}"
        );
        if own {
            assert!(has_header(&answer, "connection: close"), "{what}: {answer}");
            assert!(
                answer.contains("\"error\""),
                "{what}: a JSON body: {answer}"
            );
        }
        if want == 405 {
            assert!(
                answer.to_ascii_lowercase().contains("\r\nallow: get"),
                "{answer}"
            );
        }
    }
    assert_eq!(
        recorder.heads().len(),
        forwarded,
        "refused requests reached the endpoint: {:?}",
        &recorder.heads()[forwarded..]
    );

    // HTTP/1.0 needs no Host: the endpoint gets its own address as one.
    let answer = exchange(addr, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(status(&answer), 200, "{answer}");
    // Content-Length and Transfer-Encoding together: framed by the chunked coding, the length
    // dropped, and the connection closed after the answer (RFC 9112 §6.1), so nothing hidden
    // in the body is served as a request of its own.
    let before = recorder.heads().len();
    let answer = exchange(
        addr,
        b"POST /both HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert!(status_lines(&answer) <= 1, "{answer}");
    let heads = recorder.heads();
    let after = &heads[before..];
    assert!(after.len() <= 1, "{after:?}");
    assert!(
        after
            .iter()
            .all(|h| !h.contains("/smuggled")
                && !h.to_ascii_lowercase().contains("content-length: 30")),
        "{after:?}"
    );
}

/// Whether the gateway closed `s` (a read sees the end or a reset) without sending anything.
fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let mut reader = s;
    match reader.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("the gateway sent {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// The sum of the samples on `admin`'s `/metrics` whose line starts with `series`.
fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = get(admin, "/metrics").unwrap().body;
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn connections_that_send_nothing_are_closed_at_the_header_read_timeout() {
    let recorder = Recorder::start();
    let (_herd, addr, admin) = gateway_to(&recorder, "header_read_timeout = \"2s\"");
    // Clients that connect and leave at once (TCP health checks) leave nothing behind.
    for _ in 0..20 {
        drop(TcpStream::connect(addr).unwrap());
    }
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // A client that starts within the timeout is served on its connection.
    let mut late = TcpStream::connect(addr).unwrap();
    late.write_all(b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 12];
    late.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    // A connection seen closed at T was closed at or before T: seeing one closed before the
    // timeout passed since the first connect proves it was cut short.
    let mut first_seen_closed = None;
    wait_for(
        "every idle connection closed",
        Duration::from_secs(15),
        || {
            let n = idle.iter().filter(|s| closed(s)).count();
            if n > 0 && first_seen_closed.is_none() {
                first_seen_closed = Some(Instant::now());
            }
            (n == idle.len()).then_some(())
        },
    );
    let first = first_seen_closed.expect("closed") - opened;
    assert!(first >= Duration::from_secs(2), "closed after {first:?}");
    assert_eq!(
        metric(
            admin,
            "herd_gateway_pending_closed_total{reason=\"timeout\"}"
        ),
        300.0
    );
    assert_eq!(metric(admin, "herd_gateway_pending_connections "), 0.0);
    assert_eq!(get(addr, "/still").unwrap().status, 200);
}

#[test]
fn past_the_pending_cap_the_oldest_idle_connections_go_and_requests_are_still_served() {
    let recorder = Recorder::start();
    let (_herd, addr, admin) = gateway_to(
        &recorder,
        "header_read_timeout = \"60s\"\nmax_pending_connections = 50",
    );
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    wait_for("the oldest 150 closed", Duration::from_secs(10), || {
        (idle.iter().filter(|s| closed(s)).count() >= 150).then_some(())
    });
    assert!(
        idle[..100].iter().all(closed),
        "the longest-waiting connections are closed first"
    );
    let open = idle.iter().filter(|s| !closed(s)).count();
    assert_eq!(open, 50, "the newest stay, up to the cap");
    // A new connection at the cap takes the place of the oldest idle one; its request is
    // served and it leaves the pending ones, so the next finds room.
    for i in 0..5 {
        assert_eq!(get(addr, &format!("/real{i}")).unwrap().status, 200);
    }
    assert_eq!(metric(admin, "herd_gateway_pending_connections "), 49.0);
    assert_eq!(
        metric(
            admin,
            "herd_gateway_pending_closed_total{reason=\"capacity\"}"
        ),
        151.0
    );
    assert_eq!(idle.iter().filter(|s| !closed(s)).count(), 49);
}

#[test]
fn a_zero_pending_cap_is_a_config_error_with_line_and_key() {
    let herd =
        Herd::prepare("[gateway]\nmax_pending_connections = 0\nheader_read_timeout = \"0s\"\n");
    let out = herd.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let file = herd.config().display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:2:1: gateway.max_pending_connections: must be at least 1"
        )),
        "{err}"
    );
    assert!(
        err.contains("gateway.header_read_timeout: must be longer than zero"),
        "{err}"
    );
}
