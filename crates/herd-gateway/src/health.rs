//! Active health checks of an upstream's endpoints.
//!
//! One task per upstream probes every endpoint each `interval` with `GET path` (2xx passes,
//! anything else or no answer within `timeout` fails). An endpoint leaves the pool's address
//! list after `unhealthy` consecutive failures and returns after `healthy` consecutive passes;
//! endpoints start healthy, so a gateway that just started serves at once. This catches what
//! passive breakers and outlier ejection cannot see quickly: an endpoint that accepts connections
//! but never answers. The checks and ejection are independent (a passing check does not end an
//! ejection): an endpoint serves only while both let it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use herd_config::HealthSpec;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

struct Endpoint {
    addr: SocketAddr,
    healthy: bool,
    passes: u32,
    failures: u32,
}

/// Checks the endpoints `discovered` lists (it may change, with DNS) until `stop`, publishing
/// the healthy ones on `tx`.
pub async fn run(
    upstream: String,
    spec: HealthSpec,
    discovered: watch::Receiver<Arc<Vec<SocketAddr>>>,
    tx: watch::Sender<Arc<Vec<SocketAddr>>>,
    stop: CancellationToken,
) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut state: Vec<Endpoint> = Vec::new();
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Follow the discovered list: new endpoints start healthy, gone ones are forgotten.
        let current = discovered.borrow().clone();
        state.retain(|e| current.contains(&e.addr));
        for addr in current.iter() {
            if !state.iter().any(|e| e.addr == *addr) {
                state.push(Endpoint {
                    addr: *addr,
                    healthy: true,
                    passes: 0,
                    failures: 0,
                });
            }
        }
        let mut probes = JoinSet::new();
        for (i, e) in state.iter().enumerate() {
            let uri = format!("http://{}{}", e.addr, spec.path);
            let client = client.clone();
            let timeout = spec.timeout;
            probes.spawn(async move {
                let ok = match uri.parse::<http::Uri>() {
                    Ok(uri) => tokio::time::timeout(timeout, client.get(uri))
                        .await
                        .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success())),
                    Err(_) => false,
                };
                (i, ok)
            });
        }
        while let Some(Ok((i, ok))) = probes.join_next().await {
            let e = &mut state[i];
            if ok {
                e.passes += 1;
                e.failures = 0;
                if !e.healthy && e.passes >= spec.healthy {
                    e.healthy = true;
                    tracing::info!(upstream, endpoint = %e.addr, "health check passing: back in rotation");
                }
            } else {
                e.failures += 1;
                e.passes = 0;
                if e.healthy && e.failures >= spec.unhealthy {
                    e.healthy = false;
                    tracing::warn!(upstream, endpoint = %e.addr, "health check failing: out of rotation");
                }
            }
        }
        for e in &state {
            metrics::gauge!(
                "herd_gateway_endpoint_healthy",
                "upstream" => upstream.clone(),
                "endpoint" => e.addr.to_string()
            )
            .set(if e.healthy { 1.0 } else { 0.0 });
        }
        let healthy: Vec<SocketAddr> = state.iter().filter(|e| e.healthy).map(|e| e.addr).collect();
        tx.send_if_modified(|current| {
            if **current == healthy {
                false
            } else {
                *current = Arc::new(healthy);
                true
            }
        });
    }
}
