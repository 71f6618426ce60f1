//! The policy runner on paused time: retry counts and spacing, timeouts, the breaker's cycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::{BreakerConfig, Trip};

fn constant(ms: u64, max: Option<u32>) -> Option<(Named<Retry>, RetryOn)> {
    Some((
        Named {
            name: "retry".into(),
            value: Retry {
                backoff: Backoff::Constant(Duration::from_millis(ms)),
                max_retries: max,
            },
        },
        RetryOn::Failures,
    ))
}

fn breaker(trip: u32, timeout_ms: u64) -> Option<Named<BreakerConfig>> {
    Some(Named {
        name: "cb".into(),
        value: BreakerConfig {
            trip: Trip::consecutive_failures(trip),
            interval: Duration::ZERO,
            timeout: Duration::from_millis(timeout_ms),
            max_requests: 1,
        },
    })
}

fn ok_or_failure(r: &Result<u32, &'static str>) -> Outcome {
    match r {
        Ok(_) => Outcome::Success,
        Err("conflict") => Outcome::Permanent,
        Err(_) => Outcome::Failure,
    }
}

/// Runs `policy` over an operation failing its first `failures` attempts with `error`;
/// returns the result, the attempts made and their start times.
async fn run(
    policy: &Policy,
    failures: u32,
    error: &'static str,
) -> (Result<u32, RunError<&'static str>>, u32, Vec<Instant>) {
    let calls = Arc::new(AtomicU32::new(0));
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let result = policy
        .run(
            |_| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                times.lock().unwrap().push(Instant::now());
                async move { if n < failures { Err(error) } else { Ok(n) } }
            },
            ok_or_failure,
        )
        .await;
    let times = times.lock().unwrap().clone();
    (result, calls.load(Ordering::SeqCst), times)
}

#[tokio::test(start_paused = true)]
async fn retries_up_to_max_with_constant_spacing() {
    let p = Policy::new("t", Direction::Outbound, None, constant(100, Some(3)), None);
    let (result, calls, times) = run(&p, 10, "down").await;
    assert_eq!(result, Err(RunError::Failed("down")));
    assert_eq!(calls, 4, "one attempt and three retries");
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_millis(100));
    }
    let (result, calls, _) = run(&p, 2, "down").await;
    assert_eq!(result, Ok(2));
    assert_eq!(calls, 3);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_returned_at_once() {
    let p = Policy::new(
        "t",
        Direction::Outbound,
        None,
        constant(100, None),
        breaker(1, 1000),
    );
    let (result, calls, _) = run(&p, 1, "conflict").await;
    assert_eq!(result, Err(RunError::Failed("conflict")));
    assert_eq!(calls, 1);
    assert_eq!(
        p.breaker_state(),
        Some(BreakerState::Closed),
        "not a breaker failure"
    );
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_stays_under_its_cap() {
    let retry = Some((
        Named {
            name: "exp".into(),
            value: Retry {
                backoff: Backoff::Exponential {
                    initial: Duration::from_millis(100),
                    max: Duration::from_millis(400),
                },
                max_retries: Some(5),
            },
        },
        RetryOn::Failures,
    ));
    let p = Policy::new("t", Direction::Outbound, None, retry, None);
    let (_, calls, times) = run(&p, 10, "down").await;
    assert_eq!(calls, 6);
    let caps = [100, 200, 400, 400, 400];
    for (pair, cap) in times.windows(2).zip(caps) {
        assert!(pair[1] - pair[0] <= Duration::from_millis(cap));
    }
}

#[tokio::test(start_paused = true)]
async fn a_timeout_cuts_each_attempt_and_is_retried() {
    let timeout = Some(Named {
        name: "fast".into(),
        value: Duration::from_millis(50),
    });
    let p = Policy::new(
        "t",
        Direction::Outbound,
        timeout,
        constant(10, Some(2)),
        None,
    );
    let calls = AtomicU32::new(0);
    let started = Instant::now();
    let result: Result<(), RunError<()>> = p
        .run(
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending()
            },
            |_| Outcome::Success,
        )
        .await;
    assert_eq!(result, Err(RunError::TimedOut(Duration::from_millis(50))));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(started.elapsed(), Duration::from_millis(3 * 50 + 2 * 10));
}

#[tokio::test(start_paused = true)]
async fn built_in_retries_only_cover_unreachable_targets() {
    let retry = Some((
        Named {
            name: "builtin".into(),
            value: Retry {
                backoff: Backoff::Constant(Duration::from_secs(1)),
                max_retries: Some(3),
            },
        },
        RetryOn::Unreachable,
    ));
    let p = Policy::new("t", Direction::Outbound, None, retry, None);
    let (_, calls, _) = run(&p, 10, "503").await;
    assert_eq!(calls, 1, "an answer is not retried");
    let unreachable = |r: &Result<u32, &str>| {
        if r.is_ok() {
            Outcome::Success
        } else {
            Outcome::Unreachable
        }
    };
    let calls = AtomicU32::new(0);
    let _ = p
        .run(
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<u32, _>("refused") }
            },
            unreachable,
        )
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_refuses_then_closes_after_a_trial() {
    // Trips after 3 consecutive failures; the retries count towards it.
    let p = Policy::new(
        "t",
        Direction::Outbound,
        None,
        constant(10, Some(5)),
        breaker(3, 1000),
    );
    let (result, calls, _) = run(&p, 100, "down").await;
    assert_eq!(
        calls, 3,
        "the third failure opened the breaker; the next try was refused"
    );
    assert!(matches!(result, Err(RunError::BreakerOpen(_))));
    assert_eq!(p.breaker_state(), Some(BreakerState::Open));

    // Refused without calling while open.
    let (result, calls, _) = run(&p, 0, "down").await;
    assert!(matches!(result, Err(RunError::BreakerOpen(_))));
    assert_eq!(calls, 0);

    // After the breaker's timeout, one trial passes; its success closes the breaker.
    tokio::time::advance(Duration::from_millis(1000)).await;
    assert_eq!(p.breaker_state(), Some(BreakerState::HalfOpen));
    let (result, calls, _) = run(&p, 0, "down").await;
    assert_eq!(result, Ok(0));
    assert_eq!(calls, 1);
    assert_eq!(p.breaker_state(), Some(BreakerState::Closed));

    // A failed trial opens it again.
    let none = Policy::new("u", Direction::Outbound, None, None, breaker(1, 500));
    let _ = run(&none, 1, "down").await;
    assert_eq!(none.breaker_state(), Some(BreakerState::Open));
    tokio::time::advance(Duration::from_millis(500)).await;
    let (_, calls, _) = run(&none, 1, "down").await;
    assert_eq!(calls, 1);
    assert_eq!(none.breaker_state(), Some(BreakerState::Open));
}

#[test]
fn http_answers_are_classified_by_status() {
    assert_eq!(Outcome::from_http_status(503), Outcome::Failure);
    assert_eq!(Outcome::from_http_status(409), Outcome::Permanent);
    assert_eq!(Outcome::from_http_status(204), Outcome::Success);
}
