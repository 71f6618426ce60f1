//! The pooled client against small real HTTP/1.1 servers on loopback: connections handed back
//! and reused, replaced when the endpoint closed them, and the errors a caller decides retries by.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// An HTTP/1.1 server answering every request with `status` and `body`; counts connections.
async fn server(status: u16, body: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let svc = hyper::service::service_fn(move |_req| async move {
                let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                Ok::<_, std::convert::Infallible>(r)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (addr, accepted)
}

fn get() -> Request<UpBody> {
    let mut r = Request::new(Either::Right(Full::default()));
    r.headers_mut()
        .insert(http::header::HOST, "test".parse().unwrap());
    r
}

async fn text(r: Response<Body>) -> String {
    let b = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(b.to_vec()).unwrap()
}

#[tokio::test]
async fn a_read_response_hands_its_connection_back() {
    let (addr, accepted) = server(200, "hello").await;
    let client = Client::new();
    for _ in 0..5 {
        assert_eq!(text(client.send(addr, get()).await.unwrap()).await, "hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_bodyless_answer_hands_its_connection_back_when_dropped() {
    let (addr, accepted) = server(204, "").await;
    let client = Client::new();
    for _ in 0..3 {
        let r = client.send(addr, get()).await.unwrap();
        assert_eq!(r.status(), 204);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_dropped_unread_takes_its_connection_along() {
    let (addr, accepted) = server(200, "unread").await;
    let client = Client::new();
    drop(client.send(addr, get()).await.unwrap());
    assert_eq!(
        text(client.send(addr, get()).await.unwrap()).await,
        "unread"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_endpoint_closed_while_idle_is_replaced() {
    // Answers one request per connection, then closes it without saying so.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
        }
    });
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(text(client.send(addr, get()).await.unwrap()).await, "ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let e = Client::new().send(addr, get()).await.unwrap_err();
    assert!(e.is_connect(), "{e}");
}

/// Reads one request head from `s`.
async fn read_head(s: &mut tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "client closed before a full head");
        head.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_reused_connection_closed_before_any_answer_is_unanswered() {
    // Answers the first request of a connection, then reads the second and closes silently.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        read_head(&mut s).await;
    });
    let client = Client::new();
    assert_eq!(text(client.send(addr, get()).await.unwrap()).await, "ok");
    let e = client.send(addr, get()).await.unwrap_err();
    assert!(e.is_unanswered(), "{e}");
}

#[tokio::test]
async fn a_fresh_connection_or_a_partial_answer_is_not_unanswered() {
    // The first connection is closed after its request head; the second gets half a status line.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_head(&mut s).await;
        drop(s);
        let (mut s, _) = listener.accept().await.unwrap();
        read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 2").await.unwrap();
    });
    let client = Client::new();
    let e = client.send(addr, get()).await.unwrap_err();
    assert!(!e.is_unanswered() && !e.is_connect(), "{e}");
    assert_eq!(text(client.send(addr, get()).await.unwrap()).await, "ok");
    let e = client.send(addr, get()).await.unwrap_err();
    assert!(!e.is_unanswered(), "{e}");
}
