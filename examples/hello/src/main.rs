//! The seed's example as herd runs it: an HTTP server that answers every request after a
//! simulated piece of async work with `{"message", "worker", "traceId"}`.
//!
//! Under herd it takes the shared socket from fd 3 (systemd socket activation, via `listenfd`)
//! and its worker id from `HERD_INSTANCE`; alone it binds `127.0.0.1:$PORT` (default 3000).
//!
//! Settings (environment): `HELLO_DELAY_MS` (default 100) is the simulated work;
//! `HELLO_BALLAST_MB` allocates and touches that much memory at start, to show herd's
//! `max_memory` restarts; `HELLO_LOG_REQUESTS=1` prints a line as each request arrives;
//! `HELLO_DRAIN_MS` (default 500) is how long a stopping instance keeps
//! serving its open connections with `Connection: close` before it closes idle ones.
//!
//! Graceful stop on SIGTERM: stop accepting (the other instances keep draining the shared
//! queue), answer in-flight and follow-up requests on open connections with `Connection: close`
//! so clients move to a fresh connection by themselves, then close what is left and exit 0.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

struct App {
    worker: u64,
    delay: Duration,
    log_requests: bool,
    draining: AtomicBool,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The trace id: from `traceparent` (W3C), else `x-request-id`, else a new random one.
fn trace_id(req: &Request<Incoming>) -> String {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(id) = header("traceparent").and_then(|tp| tp.split('-').nth(1))
        && id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return id.to_string();
    }
    if let Some(id) = header("x-request-id").filter(|id| !id.is_empty() && id.len() <= 128) {
        return id.to_string();
    }
    format!("{:032x}", fastrand::u128(..))
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = if req.uri().path() == "/healthz" {
        Response::new(Full::new(Bytes::from_static(b"ok\n")))
    } else {
        let trace = trace_id(&req);
        if app.log_requests {
            println!("worker {} request {trace}", app.worker);
        }
        tokio::time::sleep(app.delay).await;
        let body = serde_json::json!({
            "message": "Hello from distributed node",
            "worker": app.worker,
            "traceId": trace,
        });
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(&trace) {
            r.headers_mut().insert("x-request-id", v);
        }
        r
    };
    if app.draining.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

fn listener() -> std::io::Result<std::net::TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    if let Some(l) = fds.take_tcp_listener(0)? {
        return Ok(l);
    }
    let port = env_u64("PORT", 3000) as u16;
    std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn ballast(mb: u64) -> Vec<u8> {
    // Touch every page so it counts as resident memory.
    vec![1u8; (mb * 1024 * 1024) as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let app = Arc::new(App {
        worker: env_u64("HERD_INSTANCE", 0),
        delay: Duration::from_millis(env_u64("HELLO_DELAY_MS", 100)),
        log_requests: env_u64("HELLO_LOG_REQUESTS", 0) == 1,
        draining: AtomicBool::new(false),
    });
    let drain = Duration::from_millis(env_u64("HELLO_DRAIN_MS", 500));
    let _ballast = ballast(env_u64("HELLO_BALLAST_MB", 0));

    let std_listener = listener()?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    println!(
        "worker {} listening on {}",
        app.worker,
        listener.local_addr()?
    );

    let mut term = signal(SignalKind::terminate())?;
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let app = app.clone();
                let conn = http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| handle(app.clone(), req)),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = term.recv() => break,
        }
    }

    drop(listener);
    app.draining.store(true, Ordering::Relaxed);
    println!("worker {} draining", app.worker);
    tokio::time::sleep(drain).await;
    graceful.shutdown().await;
    println!("worker {} stopped", app.worker);
    Ok(())
}
