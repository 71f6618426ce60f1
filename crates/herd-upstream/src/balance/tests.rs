//! Tests of choosing endpoints: balancing, exclusion, breakers, ejection and priority levels.

use super::*;
use crate::decisions::Change;
use crate::outlier::Attempt;
use tokio::sync::watch;

fn pick(p: &Pool, exclude: &[SocketAddr]) -> Result<Pick, NoEndpoint> {
    p.pick(exclude, &mut Decisions::default())
}

fn pool(n: u16, strategy: Balance) -> (watch::Sender<Arc<Vec<SocketAddr>>>, Pool) {
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect();
    let (tx, rx) = watch::channel(Arc::new(addrs));
    let breaker = BreakerConfig {
        trip: herd_config::Trip::consecutive_failures(2),
        ..BreakerConfig::default()
    };
    (
        tx,
        Pool::new(
            "test".into(),
            rx,
            strategy,
            Some(breaker),
            Places::default(),
        ),
    )
}

#[test]
fn round_robin_spreads_evenly_and_follows_changes() {
    let (tx, p) = pool(3, Balance::RoundRobin);
    let mut counts = HashMap::new();
    for _ in 0..30 {
        *counts
            .entry(pick(&p, &[]).unwrap().addr.port())
            .or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10]
    );
    tx.send(Arc::new(vec![SocketAddr::from(([127, 0, 0, 1], 9100))]))
        .unwrap();
    assert_eq!(pick(&p, &[]).unwrap().addr.port(), 9100);
    tx.send(Arc::new(vec![])).unwrap();
    assert_eq!(pick(&p, &[]).unwrap_err(), NoEndpoint::Empty);
}

#[test]
fn excluded_endpoints_are_skipped() {
    let (_tx, p) = pool(2, Balance::RoundRobin);
    let first = pick(&p, &[]).unwrap().addr;
    for _ in 0..5 {
        assert_ne!(pick(&p, &[first]).unwrap().addr, first);
    }
    let second = pick(&p, &[first]).unwrap().addr;
    assert_eq!(
        pick(&p, &[first, second]).unwrap_err(),
        NoEndpoint::AllTried
    );
}

#[test]
fn least_request_avoids_busy_endpoints() {
    let (_tx, p) = pool(3, Balance::LeastRequest);
    let mut held: Vec<Pick> = (0..3).map(|_| pick(&p, &[]).unwrap()).collect();
    // Keep the first request in flight, finish the other two.
    held.truncate(1);
    let busy = held[0].addr;
    for _ in 0..10 {
        assert_ne!(pick(&p, &[]).unwrap().addr, busy);
    }
}

#[test]
fn p2c_prefers_the_faster_endpoint() {
    let (_tx, p) = pool(2, Balance::P2cEwma);
    let slow = SocketAddr::from(([127, 0, 0, 1], 9000));
    let stats = p.candidates(&p.addresses(), &[]);
    stats[0].1.observe(50_000);
    stats[1].1.observe(1_000);
    for _ in 0..20 {
        assert_ne!(pick(&p, &[]).unwrap().addr, slow);
    }
}

#[tokio::test(start_paused = true)]
async fn a_pool_without_breakers_keeps_an_address_whatever_fails() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 9000));
    let (_tx, rx) = watch::channel(Arc::new(vec![addr]));
    let p = Pool::new(
        "shared".into(),
        rx,
        Balance::RoundRobin,
        None,
        Places::default(),
    );
    let mut decisions = Decisions::default();
    for _ in 0..50 {
        pick(&p, &[])
            .unwrap()
            .report(Attempt::NoAnswer, &mut decisions);
    }
    assert!(decisions.is_empty(), "no breaker to open");
    assert_eq!(pick(&p, &[]).unwrap().addr, addr);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_whose_breaker_opened_is_left_out_until_half_open() {
    let (_tx, p) = pool(2, Balance::RoundRobin);
    let bad = pick(&p, &[]).unwrap().addr;
    for _ in 0..2 {
        pick(
            &p,
            &[p.addresses().iter().copied().find(|a| *a != bad).unwrap()],
        )
        .unwrap()
        .report(Attempt::NoAnswer, &mut Decisions::default());
    }
    for _ in 0..6 {
        assert_ne!(pick(&p, &[]).unwrap().addr, bad);
    }
    let good = pick(&p, &[]).unwrap().addr;
    assert_eq!(pick(&p, &[good]).unwrap_err(), NoEndpoint::BreakersOpen);
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    // Half-open: one trial call goes to it, and its success closes the breaker.
    pick(&p, &[good])
        .unwrap()
        .report(Attempt::Answered(200), &mut Decisions::default());
    assert_eq!(pick(&p, &[good]).unwrap().addr, bad);
}

/// A pool over ports 9000.. (`levels` gives each one's priority level) that ejects as `spec`
/// says, with breakers that never trip.
fn ejecting_pool(levels: &[usize], spec: OutlierSpec) -> Pool {
    let addrs: Vec<SocketAddr> = (0..levels.len() as u16)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect();
    let mut configured = vec![0; levels.iter().max().map_or(1, |m| m + 1)];
    levels.iter().for_each(|&l| configured[l] += 1);
    let places = Places {
        level: addrs.iter().copied().zip(levels.iter().copied()).collect(),
        configured,
        overprovisioning: 1.4,
    };
    // The receiver keeps the last list after the sender is gone.
    let (_, rx) = watch::channel(Arc::new(addrs));
    let breaker = BreakerConfig {
        trip: herd_config::Trip::consecutive_failures(1000),
        ..BreakerConfig::default()
    };
    Pool::new(
        "test".into(),
        rx,
        Balance::RoundRobin,
        Some(breaker),
        places,
    )
    .with_outlier(Some(spec))
}

/// Reports `attempt` for `target` (chosen by excluding every other endpoint).
fn report_for(p: &Pool, target: SocketAddr, attempt: Attempt, d: &mut Decisions) {
    let others: Vec<SocketAddr> = p
        .addresses()
        .iter()
        .copied()
        .filter(|a| *a != target)
        .collect();
    let chosen = p.pick(&others, d).unwrap();
    assert_eq!(chosen.addr, target);
    chosen.report(attempt, d);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_answering_5xx_is_ejected_noted_and_back_after_its_time() {
    let spec = OutlierSpec {
        consecutive_5xx: 3,
        base_ejection_time: std::time::Duration::from_secs(10),
        ..OutlierSpec::default()
    };
    let p = ejecting_pool(&[0, 0, 0], spec);
    let bad = SocketAddr::from(([127, 0, 0, 1], 9000));
    let mut d = Decisions::default();
    for _ in 0..2 {
        report_for(&p, bad, Attempt::Answered(500), &mut d);
    }
    // A success in between starts the run over.
    report_for(&p, bad, Attempt::Answered(404), &mut d);
    for _ in 0..2 {
        report_for(&p, bad, Attempt::Answered(500), &mut d);
    }
    assert!(d.is_empty(), "{d:?}");
    report_for(&p, bad, Attempt::Answered(503), &mut d);
    assert_eq!(
        d.changes().collect::<Vec<_>>(),
        vec![(bad, Change::Ejected(10_000))]
    );

    let mut d = Decisions::default();
    for _ in 0..12 {
        assert_ne!(p.pick(&[], &mut d).unwrap().addr, bad);
    }
    assert_eq!(
        d.skipped().collect::<Vec<_>>(),
        vec![(bad, Skip::Ejected)],
        "noted once"
    );
    let others: Vec<SocketAddr> = p
        .addresses()
        .iter()
        .copied()
        .filter(|a| *a != bad)
        .collect();
    assert_eq!(pick(&p, &others).unwrap_err(), NoEndpoint::Ejected);

    tokio::time::advance(std::time::Duration::from_secs(10)).await;
    let mut d = Decisions::default();
    assert_eq!(p.pick(&others, &mut d).unwrap().addr, bad);
    assert!(d.is_empty());
}

#[test]
fn an_ejected_endpoint_counts_as_unavailable_for_its_priority_level() {
    let p = ejecting_pool(&[0, 0, 1, 1], OutlierSpec::default());
    let local = SocketAddr::from(([127, 0, 0, 1], 9000));
    let mut d = Decisions::default();
    for _ in 0..1000 {
        assert_eq!(p.places.level_of(&pick(&p, &[]).unwrap().addr), 0);
    }
    for _ in 0..5 {
        report_for(&p, local, Attempt::NoAnswer, &mut d);
    }
    assert!(matches!(d.changes().next(), Some((a, Change::Ejected(_))) if a == local));
    // One of two local endpoints left: 0.5 × 1.4 = 70 % stays local, 30 % spills over.
    let remote = (0..1000)
        .filter(|_| p.places.level_of(&pick(&p, &[]).unwrap().addr) == 1)
        .count();
    assert!(
        (200..400).contains(&remote),
        "{remote} of 1000 went to the other region"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_transitions_are_noted() {
    let (_tx, p) = pool(2, Balance::RoundRobin);
    let bad = SocketAddr::from(([127, 0, 0, 1], 9000));
    let mut d = Decisions::default();
    report_for(&p, bad, Attempt::NoAnswer, &mut d);
    assert!(d.is_empty());
    report_for(&p, bad, Attempt::Answered(502), &mut d);
    assert_eq!(
        d.changes().collect::<Vec<_>>(),
        vec![(bad, Change::BreakerOpened)]
    );
    let mut d = Decisions::default();
    let good = p.pick(&[], &mut d).unwrap().addr;
    assert_ne!(good, bad);
    assert_eq!(
        d.skipped().collect::<Vec<_>>(),
        vec![(bad, Skip::BreakerOpen)]
    );
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    let mut d = Decisions::default();
    report_for(&p, bad, Attempt::Answered(200), &mut d);
    assert_eq!(
        d.changes().collect::<Vec<_>>(),
        vec![(bad, Change::BreakerClosed)]
    );
}
