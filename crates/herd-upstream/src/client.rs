//! Connections to endpoints: HTTP/1.1 over TCP (TLS to other herds), kept alive and reused per
//! endpoint address.
//!
//! hyper's connection API (`hyper::client::conn::http1`) speaks HTTP; this module only keeps
//! each address's idle connections, newest on top, so the busiest connections stay warm and the
//! rest age out. A connection goes back on the stack when its response body has ended, which
//! [`Body`] sees as it is read or dropped; a body dropped before its end takes the connection
//! with it (its remaining bytes were never read, so it cannot carry another request). The stacks
//! sit behind one std mutex, held for a push or a pop, never across an `.await`.
//!
//! hyper-util's legacy `Client` is not used on this path: per request it hashes a (scheme,
//! authority) key with SipHash, races a pool checkout against a lazily started connect, boxes its
//! response future and spawns a task to put the connection back once it is ready again, all of
//! which showed up in profiles of the proxied request. What it did for the gateway is kept: a
//! connect timeout, `TCP_NODELAY`, a 60 s idle timeout (checked when a connection is taken, and
//! for the oldest one when a connection is put back), and a request that met an idle connection
//! the endpoint had just closed (hyper hands it back unsent) goes out on another connection.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// What a request sent to an endpoint carries: a body streamed from the client (cut off at the
/// size limit), or a buffered one (empty for a bodyless request) that can be sent again.
pub type UpBody = Either<Limited<Incoming>, Full<Bytes>>;

/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Above this many addresses with a (possibly empty) idle stack, empty stacks are dropped, so
/// addresses that left the pools do not accumulate.
const KEEP_ADDRESSES: usize = 64;

/// A connection waiting for its next request.
struct Idle {
    tx: SendRequest<UpBody>,
    since: Instant,
}

/// Idle connections per address, oldest first: taken from the back, aged out from the front.
type IdleMap = HashMap<SocketAddr, VecDeque<Idle>, foldhash::fast::RandomState>;

/// Sends requests to endpoint addresses over pooled connections (the gateway's, invocation's and
/// the mesh's client).
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    builder: http1::Builder,
    idle: Mutex<IdleMap>,
    /// TLS for every connection (to other herds), with the name their certificates carry.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum Error {
    /// No connection: refused, unreachable, or timed out. Nothing was sent.
    Connect(std::io::Error),
    /// The connection failed while sending or receiving, or the request body failed.
    Http(hyper::Error),
}

impl Error {
    /// Whether connecting failed (so the endpoint never saw the request).
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect failed: {e}"),
            Error::Http(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) => Some(e),
            Error::Http(e) => Some(e),
        }
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with no connections yet.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A client that speaks TLS with `config` to every endpoint, checking that each presents a
    /// certificate for `server_name` (endpoints are reached by address).
    pub fn with_tls(config: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) -> Self {
        Self::build(Some((
            tokio_rustls::TlsConnector::from(config),
            server_name,
        )))
    }

    fn build(tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>) -> Self {
        Self {
            shared: Arc::new(Shared {
                builder: http1::Builder::new(),
                idle: Mutex::new(IdleMap::default()),
                tls,
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr` and returns the response head; its
    /// body hands the connection back when it ends.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<UpBody>,
    ) -> Result<Response<Body>, Error> {
        loop {
            let (mut tx, reused) = match self.checkout(addr) {
                Some(tx) => (tx, true),
                None => (self.connect(addr).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let back = Checkin {
                        tx,
                        addr,
                        shared: self.shared.clone(),
                    };
                    return Ok(resp.map(|inner| Body {
                        inner,
                        back: Some(back),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // The idle connection was closed before the request went out: nothing
                    // reached the endpoint, so it goes out on another connection.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(Error::Http(e.into_error())),
                },
            }
        }
    }

    /// The newest idle connection to `addr` that can take a request now; older ones past the
    /// idle timeout, and closed ones, met on the way are dropped.
    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<UpBody>> {
        let mut idle = self.shared.idle.lock().expect("idle connections poisoned");
        let stack = idle.get_mut(&addr)?;
        while let Some(c) = stack.pop_back() {
            if c.tx.is_ready() && c.since.elapsed() < IDLE_TIMEOUT {
                return Some(c.tx);
            }
        }
        None
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<UpBody>, Error> {
        let stream = within(CONNECT_TIMEOUT, "connect", TcpStream::connect(addr)).await?;
        let _ = stream.set_nodelay(true);
        if let Some((connector, name)) = &self.shared.tls {
            let stream = within(
                CONNECT_TIMEOUT,
                "TLS handshake",
                connector.connect(name.clone(), stream),
            )
            .await?;
            return self.handshake(addr, stream).await;
        }
        self.handshake(addr, stream).await
    }

    async fn handshake<S>(&self, addr: SocketAddr, stream: S) -> Result<SendRequest<UpBody>, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, conn) = self
            .shared
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Http)?;
        // The connection's own task reads and writes the socket; it ends when the connection
        // closes, which dropping the last `SendRequest` (idle or not) brings about.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("endpoint connection {addr} ended: {e}");
            }
        });
        Ok(tx)
    }
}

/// `step` (connecting, a TLS handshake) finished within `limit`, its failure or the timeout being
/// a connect error: nothing was sent yet.
async fn within<T>(
    limit: Duration,
    step: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(Error::Connect),
        Err(_) => Err(Error::Connect(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{step} timed out"),
        ))),
    }
}

/// A connection to put back once its response has been read.
struct Checkin {
    tx: SendRequest<UpBody>,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Checkin {
    fn put_back(self) {
        if self.tx.is_ready() {
            self.shared.push(self.addr, self.tx);
        } else if !self.tx.is_closed() {
            // The connection's task has not yet seen the end of the response (it runs on
            // another worker): wait for it in a task of its own, as it may take a moment.
            let Checkin {
                mut tx,
                addr,
                shared,
            } = self;
            tokio::spawn(async move {
                if std::future::poll_fn(|cx| tx.poll_ready(cx)).await.is_ok() {
                    shared.push(addr, tx);
                }
            });
        }
    }
}

impl Shared {
    fn push(&self, addr: SocketAddr, tx: SendRequest<UpBody>) {
        let since = Instant::now();
        let mut idle = self.idle.lock().expect("idle connections poisoned");
        if idle.len() > KEEP_ADDRESSES && !idle.contains_key(&addr) {
            idle.retain(|_, stack| !stack.is_empty());
        }
        let stack = idle.entry(addr).or_default();
        // Connections below the ones in use are never taken while traffic goes on; the oldest
        // is closed here once it has been idle for too long.
        while stack
            .front()
            .is_some_and(|c| since.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            stack.pop_front();
        }
        stack.push_back(Idle { tx, since });
    }
}

/// An endpoint's response body; when it ends, its connection goes back to the idle stack.
pub struct Body {
    inner: Incoming,
    back: Option<Checkin>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("inner", &self.inner)
            .field("holds_connection", &self.back.is_some())
            .finish()
    }
}

impl Body {
    fn release(&mut self) {
        if let Some(back) = self.back.take() {
            back.put_back();
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            // hyper's server stops polling once `is_end_stream` says so: release right away.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken response leaves the connection unusable.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        use hyper::body::Body as _;
        // A body with no bytes (HEAD, 204, 304), or one the server wrote out up to its
        // announced length without a last poll.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
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
}
