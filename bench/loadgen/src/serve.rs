//! `loadgen serve`: the callee of the benchmarks, an HTTP/1.1 server that answers every request
//! 200 with the request's own body (`{}` when it had none), `application/json`.
//!
//! It takes the listening socket herd hands over on fd 3 (`LISTEN_FDS`, `LISTEN_PID`), else binds
//! `127.0.0.1:<port>`. One thread; SIGTERM ends it.

use std::convert::Infallible;
use std::os::fd::FromRawFd;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::ServeArgs;

type Error = Box<dyn std::error::Error>;

/// Serves until SIGTERM.
pub fn main(args: ServeArgs) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

fn listener(args: &ServeArgs) -> Result<std::net::TcpListener, Error> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let fds: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if ours && fds >= 1 {
        // SAFETY: socket activation hands this process fd 3, a listening TCP socket it owns and
        // that nothing else in this process uses.
        return Ok(unsafe { std::net::TcpListener::from_raw_fd(3) });
    }
    Ok(std::net::TcpListener::bind(("127.0.0.1", args.port))?)
}

async fn serve(args: ServeArgs) -> Result<(), Error> {
    let std_listener = listener(&args)?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = term.recv() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
