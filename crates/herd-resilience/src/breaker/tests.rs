//! Breaker state machine and layer, on paused tokio time.

use std::time::Duration;

use tower::{Layer, Service, ServiceExt};

use super::*;

fn config(trip: &str, max_requests: u32) -> BreakerConfig {
    BreakerConfig {
        trip: Trip::parse(trip).unwrap(),
        interval: Duration::ZERO,
        timeout: Duration::from_secs(2),
        max_requests,
    }
}

fn fail(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        b.acquire().unwrap().failure();
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_refuses_with_a_retry_hint() {
    let b = CircuitBreaker::new(config("consecutiveFailures >= 3", 1));
    fail(&b, 2);
    b.acquire().unwrap().success();
    fail(&b, 2);
    assert_eq!(b.state(), BreakerState::Closed, "a success resets the run");
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_millis(500)).await;
    match b.acquire() {
        Err(Rejected::BreakerOpen { retry_after }) => {
            assert_eq!(retry_after, Duration::from_millis(1500))
        }
        other => panic!("expected refusal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_max_requests_trials_through_and_closes_after_as_many_successes() {
    let b = CircuitBreaker::new(config("consecutiveFailures >= 1", 2));
    fail(&b, 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let t1 = b.acquire().unwrap();
    let t2 = b.acquire().unwrap();
    assert!(b.acquire().is_err(), "only two trials at once");
    let half = Recorded {
        state: BreakerState::HalfOpen,
        changed: false,
    };
    assert_eq!(t1.success(), half);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    drop(b.acquire().unwrap()); // a cancelled trial frees its slot without counting
    let closed = Recorded {
        state: BreakerState::Closed,
        changed: true,
    };
    assert_eq!(t2.success(), closed, "the second success closes it");
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_again() {
    let b = CircuitBreaker::new(config("consecutiveFailures >= 1", 1));
    let tripped = b.acquire().unwrap().failure();
    assert_eq!((tripped.state, tripped.changed), (BreakerState::Open, true));
    tokio::time::advance(Duration::from_secs(2)).await;
    let reopened = b.acquire().unwrap().failure();
    assert_eq!(
        (reopened.state, reopened.changed),
        (BreakerState::Open, true)
    );
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_an_older_generation_are_ignored() {
    let b = CircuitBreaker::new(config("consecutiveFailures >= 2", 1));
    let slow = b.acquire().unwrap();
    fail(&b, 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    // Started before the breaker opened: must not close it.
    assert!(!slow.success().changed);
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_with_minimum_volume_and_interval_reset() {
    let mut c = config("requests >= 10 && failureRate > 0.5", 1);
    c.interval = Duration::from_secs(10);
    let b = CircuitBreaker::new(c);
    fail(&b, 6);
    assert_eq!(b.state(), BreakerState::Closed, "below the minimum volume");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(b.counts(), Counts::default(), "the window started over");
    for _ in 0..4 {
        b.acquire().unwrap().success();
    }
    fail(&b, 5);
    assert_eq!(b.state(), BreakerState::Closed, "5 of 9");
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open, "6 of 10");
}

#[tokio::test(start_paused = true)]
async fn layer_refuses_without_calling_the_inner_service() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |fail: bool| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if fail {
                Err::<u32, BoxError>("boom".into())
            } else {
                Ok(7)
            }
        }
    });
    let breaker = CircuitBreaker::new(config("consecutiveFailures >= 2", 1));
    let is_failure = |r: &Result<u32, BoxError>| r.is_err();
    let mut svc = BreakerLayer::new(breaker.clone(), is_failure).layer(inner);
    for _ in 0..2 {
        assert!(svc.ready().await.unwrap().call(true).await.is_err());
    }
    let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
    let rejected = err.downcast_ref::<Rejected>().expect("a Rejected error");
    assert!(matches!(rejected, Rejected::BreakerOpen { .. }));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), 7);
    assert_eq!(breaker.state(), BreakerState::Closed);
}
