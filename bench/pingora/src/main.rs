//! Round robin over `PINGORA_BACKENDS` (comma-separated `host:port`) on `PINGORA_LISTEN`, with
//! `PINGORA_THREADS` worker threads (default 1) and pingora's upstream keep-alive pool: what
//! bench/gateway.sh races against herd, nginx and HAProxy.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_load_balancing::{selection::RoundRobin, LoadBalancer};
use pingora_proxy::{http_proxy_service, ProxyHttp, Session};

struct Lb(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Lb {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self.0.select(b"", 256).expect("at least one backend");
        Ok(Box::new(HttpPeer::new(backend, false, String::new())))
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn main() {
    let listen = env("PINGORA_LISTEN");
    let backends = env("PINGORA_BACKENDS");
    let conf = ServerConf {
        threads: std::env::var("PINGORA_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let upstreams = LoadBalancer::try_from_iter(backends.split(',')).expect("backend addresses");
    let mut proxy = http_proxy_service(&server.configuration, Lb(Arc::new(upstreams)));
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
