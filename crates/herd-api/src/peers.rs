//! The peer directory: which other herds run which apps, refreshed by asking each of them.
//!
//! Every herd with `[mesh]` serves `GET /herd/v1/apps` on its mesh listener: a random id of the
//! process, its region and its apps with their ready instance counts. One task asks every peer
//! (fixed addresses, plus every address the configured names resolve to) each `refresh`; a
//! peer that does not answer drops out until it does. For each app the peers running it form
//! a `herd_upstream::Pool` (the gateway's kind) placed in priority levels by region (own region
//! first, then the failover order), so invocation fails over across regions the way the
//! gateway does. The pool is rebuilt only when the set of peers or their regions change for that app. There is no
//! consensus: each herd's view is what its peers said last.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herd_config::{Balance, BreakerConfig, MeshSpec, Regions};
use herd_upstream::{Client, Places, Pool};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The path of a herd's announcement.
pub const APPS_PATH: &str = "/herd/v1/apps";
/// How long a peer has to answer: the refresh interval, within these bounds. A peer that stops
/// answering (a dead host, a partition that drops its packets) is then out of the directory one
/// round after its last answer, and one silent peer never holds a round up for longer than the
/// refresh (a fixed 2 s kept it in for refresh + 2 s and delayed every other peer's news).
const ASK_TIMEOUT_MAX: Duration = Duration::from_secs(2);
const ASK_TIMEOUT_MIN: Duration = Duration::from_millis(500);
/// Largest announcement read from a peer.
const MAX_ADVERT: usize = 1 << 20;

/// What a herd tells its peers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Advert {
    /// Random per process: how a herd recognises itself in a shared peer list.
    pub id: String,
    /// The herd's region.
    pub region: Option<String>,
    /// Apps and their ready instance counts.
    pub apps: BTreeMap<String, usize>,
}

/// One app's peers: where they are (with their priority level) and the pool over them.
struct AppPeers {
    placement: Vec<(SocketAddr, usize)>,
    _addrs: watch::Sender<Arc<Vec<SocketAddr>>>,
    pool: Arc<Pool>,
}

/// Peers and the apps they run.
pub struct Peers {
    id: String,
    spec: MeshSpec,
    regions: Regions,
    client: Client,
    apps: Mutex<HashMap<String, AppPeers>>,
    /// Peers' last answers, by address (for metadata and the dashboard).
    seen: Mutex<BTreeMap<SocketAddr, Advert>>,
}

impl Peers {
    /// A directory for `spec`, placing peers by `regions` (the own region taken from the mesh
    /// settings), reaching them with `client` (TLS when the mesh uses it).
    pub fn new(spec: MeshSpec, mut regions: Regions, client: Client) -> Self {
        regions.local = spec.region.clone().or(regions.local);
        Self {
            id: format!("{:016x}", fastrand::u64(..)),
            spec,
            regions,
            client,
            apps: Mutex::new(HashMap::new()),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// This herd's announcement, given its apps' ready counts.
    pub fn advert(&self, apps: HashMap<String, usize>) -> Advert {
        Advert {
            id: self.id.clone(),
            region: self.spec.region.clone(),
            apps: apps.into_iter().collect(),
        }
    }

    /// The client that reaches peers.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The pool of peers running `app` with a ready instance, if any.
    pub fn pool(&self, app: &str) -> Option<Arc<Pool>> {
        self.apps
            .lock()
            .expect("peers poisoned")
            .get(app)
            .map(|a| a.pool.clone())
    }

    /// The peers' last answers, by address.
    pub fn seen(&self) -> BTreeMap<SocketAddr, Advert> {
        self.seen.lock().expect("peers poisoned").clone()
    }

    /// Asks every peer for its apps every `refresh` until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.spec.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.refresh().await,
            }
        }
    }

    /// One round: resolve, ask, rebuild what changed.
    pub async fn refresh(&self) {
        let mut addrs = self.spec.peers.clone();
        for (name, port) in &self.spec.names {
            match tokio::net::lookup_host((name.as_str(), *port)).await {
                Ok(found) => addrs.extend(found),
                Err(e) => tracing::debug!("mesh: cannot resolve {name}: {e}"),
            }
        }
        addrs.sort();
        addrs.dedup();
        addrs.retain(|a| *a != self.spec.listen);
        let answers = futures_util::future::join_all(addrs.iter().map(|a| self.ask(*a))).await;
        let mut seen = BTreeMap::new();
        for (addr, answer) in addrs.iter().zip(answers) {
            match answer {
                Ok(advert) if advert.id == self.id => {}
                Ok(advert) => {
                    seen.insert(*addr, advert);
                }
                Err(e) => tracing::debug!("mesh: peer {addr} did not answer: {e}"),
            }
        }
        self.rebuild(&seen);
        *self.seen.lock().expect("peers poisoned") = seen;
    }

    async fn ask(&self, addr: SocketAddr) -> Result<Advert, String> {
        let mut req = http::Request::new(Either::Right(Full::new(Bytes::new())));
        *req.uri_mut() = http::Uri::from_static(APPS_PATH);
        let host = http::HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
        req.headers_mut().insert(http::header::HOST, host);
        let limit = self.spec.refresh.clamp(ASK_TIMEOUT_MIN, ASK_TIMEOUT_MAX);
        let resp = tokio::time::timeout(limit, self.client.send(addr, req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let body =
            tokio::time::timeout(limit, Limited::new(resp.into_body(), MAX_ADVERT).collect())
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?
                .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("bad announcement: {e}"))
    }

    /// Brings each app's pool in line with the peers that run it.
    fn rebuild(&self, seen: &BTreeMap<SocketAddr, Advert>) {
        let all_regions: Vec<String> = seen.values().filter_map(|a| a.region.clone()).collect();
        let mut wanted: HashMap<&str, Vec<(SocketAddr, usize)>> = HashMap::new();
        for (addr, advert) in seen {
            let level = self
                .regions
                .priority(advert.region.as_deref(), &all_regions);
            for (app, ready) in &advert.apps {
                if *ready > 0 {
                    wanted.entry(app).or_default().push((*addr, level));
                }
            }
        }
        let mut apps = self.apps.lock().expect("peers poisoned");
        apps.retain(|app, _| wanted.contains_key(app.as_str()));
        for (app, placement) in wanted {
            if apps.get(app).is_some_and(|a| a.placement == placement) {
                continue;
            }
            tracing::info!(
                "mesh: app {app} runs on peer(s) {}",
                placement
                    .iter()
                    .map(|(a, _)| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let levels = placement.iter().map(|(_, l)| l + 1).max().unwrap_or(1);
            let mut configured = vec![0; levels];
            placement.iter().for_each(|(_, l)| configured[*l] += 1);
            let places = Places {
                level: placement.iter().copied().collect(),
                configured,
                overprovisioning: self.regions.overprovisioning,
            };
            let (tx, rx) = watch::channel(Arc::new(placement.iter().map(|(a, _)| *a).collect()));
            let pool = Pool::new(
                format!("peers of {app}"),
                rx,
                Balance::RoundRobin,
                Some(BreakerConfig::default()),
                places,
            );
            apps.insert(
                app.to_string(),
                AppPeers {
                    placement,
                    _addrs: tx,
                    pool: Arc::new(pool),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that accepts connections and never answers is out after one round that lasts
    /// about the refresh, not the old fixed 2 s.
    #[tokio::test]
    async fn a_silent_peer_is_dropped_within_the_refresh() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let spec = MeshSpec {
            listen: "127.0.0.1:1".parse().unwrap(),
            peers: vec![silent.local_addr().unwrap()],
            names: Vec::new(),
            refresh: Duration::from_millis(500),
            region: None,
            tls: None,
        };
        let peers = Peers::new(spec, Regions::default(), Client::new());
        let started = std::time::Instant::now();
        peers.refresh().await;
        let took = started.elapsed();
        assert!(peers.seen().is_empty());
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
            "a round with a silent peer took {took:?}"
        );
        drop(silent);
    }
}
