//! Requests in flight per endpoint address, summed over every pool that balances over it.
//!
//! The supervisor asks [`in_flight`] before it signals an instance to stop: the instance has
//! already left its service's address list (so no pool picks it again), and once nothing herd
//! sent it is still waiting for a response head it can close its connections without racing a
//! request. Pools register each endpoint's statistics here when they first see an address (not
//! per request); the count is the same atomic the balancers read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use crate::endpoint::EndpointStats;

/// Above this many addresses, entries whose pools are all gone are dropped on registration.
const PRUNE_ABOVE: usize = 256;

type Registry = HashMap<SocketAddr, Vec<Weak<EndpointStats>>>;

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Counts `stats`, one pool's view of `addr`, in [`in_flight`].
pub(crate) fn register(addr: SocketAddr, stats: &Arc<EndpointStats>) {
    let mut registry = REGISTRY.lock().expect("in-flight registry poisoned");
    if registry.len() > PRUNE_ABOVE {
        registry.retain(|_, pools| {
            pools.retain(|w| w.strong_count() > 0);
            !pools.is_empty()
        });
    }
    let pools = registry.entry(addr).or_default();
    pools.retain(|w| w.strong_count() > 0);
    pools.push(Arc::downgrade(stats));
}

/// Requests sent to `addr` by any pool that have not yet got a response head (or given up).
pub fn in_flight(addr: SocketAddr) -> u32 {
    let registry = REGISTRY.lock().expect("in-flight registry poisoned");
    registry.get(&addr).map_or(0, |pools| {
        pools
            .iter()
            .filter_map(Weak::upgrade)
            .map(|s| s.in_flight())
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decisions, Places, Pool};
    use herd_config::Balance;
    use tokio::sync::watch;

    #[test]
    fn picks_of_every_pool_count_until_dropped() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let (_tx, rx) = watch::channel(Arc::new(vec![addr]));
        let pool = |name: &str| {
            Pool::new(
                name.into(),
                rx.clone(),
                Balance::RoundRobin,
                None,
                Places::default(),
            )
        };
        let (a, b) = (pool("a"), pool("b"));
        let mut d = Decisions::default();
        assert_eq!(in_flight(addr), 0);
        let first = a.pick(&[], &mut d).unwrap();
        let second = b.pick(&[], &mut d).unwrap();
        let third = a.pick(&[], &mut d).unwrap();
        assert_eq!(in_flight(addr), 3);
        drop(first);
        drop(second);
        assert_eq!(in_flight(addr), 1);
        drop(b);
        drop(third);
        assert_eq!(in_flight(addr), 0);
    }
}
