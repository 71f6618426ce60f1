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
//!
//! When the request did go out on a reused connection and the endpoint closed it before sending
//! a single byte back (each connection counts the bytes it read), the answer is
//! [`Error::Unanswered`]: the endpoint closed a connection it saw as idle (a keep-alive timeout,
//! a graceful stop) as the request arrived, so it never read it, and a caller may send it to
//! another endpoint whatever its method. A fresh connection gets no such benefit of the doubt.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// A connection to an endpoint: hyper's sender, and the count of bytes read from the socket.
struct Conn {
    tx: SendRequest<UpBody>,
    read: Arc<AtomicU64>,
}

/// A connection waiting for its next request.
struct Idle {
    conn: Conn,
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
    /// The request went out on a reused connection that the endpoint closed before any byte of
    /// a response: it closed what it saw as an idle connection, so it never read the request.
    Unanswered(hyper::Error),
}

impl Error {
    /// Whether connecting failed (so the endpoint never saw the request).
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }

    /// Whether the request met a reused connection the endpoint closed without answering (so
    /// the endpoint did not process it).
    pub fn is_unanswered(&self) -> bool {
        matches!(self, Error::Unanswered(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect failed: {e}"),
            Error::Http(e) => write!(f, "{e}"),
            Error::Unanswered(e) => write!(f, "kept-alive connection closed unanswered: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) => Some(e),
            Error::Http(e) | Error::Unanswered(e) => Some(e),
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
            let (mut conn, reused) = match self.checkout(addr) {
                Some(conn) => (conn, true),
                None => (self.connect(addr).await?, false),
            };
            let read_before = conn.read.load(Ordering::Relaxed);
            match conn.tx.try_send_request(req).await {
                Ok(resp) => {
                    let back = Checkin {
                        conn,
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
                    _ => {
                        let e = e.into_error();
                        let silent = conn.read.load(Ordering::Relaxed) == read_before;
                        return Err(if reused && silent && closed(&e) {
                            Error::Unanswered(e)
                        } else {
                            Error::Http(e)
                        });
                    }
                },
            }
        }
    }

    /// The newest idle connection to `addr` that can take a request now; older ones past the
    /// idle timeout, and closed ones, met on the way are dropped.
    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.shared.idle.lock().expect("idle connections poisoned");
        let stack = idle.get_mut(&addr)?;
        while let Some(c) = stack.pop_back() {
            if c.conn.tx.is_ready() && c.since.elapsed() < IDLE_TIMEOUT {
                return Some(c.conn);
            }
        }
        None
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, Error> {
        let stream = within(CONNECT_TIMEOUT, "connect", TcpStream::connect(addr)).await?;
        let _ = stream.set_nodelay(true);
        let read = Arc::new(AtomicU64::new(0));
        let stream = Counted {
            inner: stream,
            read: read.clone(),
        };
        if let Some((connector, name)) = &self.shared.tls {
            let stream = within(
                CONNECT_TIMEOUT,
                "TLS handshake",
                connector.connect(name.clone(), stream),
            )
            .await?;
            let tx = self.handshake(addr, stream).await?;
            return Ok(Conn { tx, read });
        }
        let tx = self.handshake(addr, stream).await?;
        Ok(Conn { tx, read })
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

/// Whether `e` says the connection was closed under the request (end of stream or a reset),
/// rather than that the response was malformed or the request body failed.
fn closed(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    e.is_incomplete_message()
        || e.source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                )
            })
}

/// A socket that counts the bytes read from it, so a failed request can tell whether the
/// endpoint sent anything back.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection to put back once its response has been read.
struct Checkin {
    conn: Conn,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Checkin {
    fn put_back(self) {
        if self.conn.tx.is_ready() {
            self.shared.push(self.addr, self.conn);
        } else if !self.conn.tx.is_closed() {
            // The connection's task has not yet seen the end of the response (it runs on
            // another worker): wait for it in a task of its own, as it may take a moment.
            let Checkin {
                mut conn,
                addr,
                shared,
            } = self;
            tokio::spawn(async move {
                if std::future::poll_fn(|cx| conn.tx.poll_ready(cx))
                    .await
                    .is_ok()
                {
                    shared.push(addr, conn);
                }
            });
        }
    }
}

impl Shared {
    fn push(&self, addr: SocketAddr, conn: Conn) {
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
        stack.push_back(Idle { conn, since });
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
mod tests;
