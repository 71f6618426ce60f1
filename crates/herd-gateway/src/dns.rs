//! Endpoints named in DNS: resolved again every `dns_refresh`, so an upstream follows a
//! Kubernetes headless service (one address per pod) or any name whose addresses change.
//!
//! A failed lookup keeps the addresses the name had: a DNS hiccup must not empty a pool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Longest wait for one lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes `fixed` plus every address of `names` on `tx`, every `refresh`, until `stop`.
pub async fn run(
    upstream: String,
    fixed: Vec<SocketAddr>,
    names: Vec<(String, u16)>,
    refresh: Duration,
    tx: watch::Sender<Arc<Vec<SocketAddr>>>,
    stop: CancellationToken,
) {
    let mut known: HashMap<(String, u16), Vec<SocketAddr>> = HashMap::new();
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (host, port) in &names {
            let lookup = tokio::net::lookup_host((host.as_str(), *port));
            match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => {
                    let mut addrs: Vec<SocketAddr> = addrs.collect();
                    addrs.sort();
                    addrs.dedup();
                    known.insert((host.clone(), *port), addrs);
                }
                Ok(Err(e)) => {
                    tracing::warn!(
                        upstream,
                        host,
                        "DNS lookup failed, keeping the last addresses: {e}"
                    )
                }
                Err(_) => tracing::warn!(
                    upstream,
                    host,
                    "DNS lookup timed out, keeping the last addresses"
                ),
            }
        }
        let mut all = fixed.clone();
        for addrs in known.values() {
            all.extend(addrs.iter().filter(|a| !fixed.contains(a)));
        }
        all.sort();
        all.dedup();
        tx.send_if_modified(|current| {
            if **current == all {
                false
            } else {
                *current = Arc::new(all);
                true
            }
        });
    }
}
