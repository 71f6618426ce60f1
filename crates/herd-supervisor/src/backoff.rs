//! When to restart a crashed instance, and when to give up.
//!
//! Delays double from `initial_backoff` up to `max_backoff`, with "equal jitter" (a random point
//! in the upper half of the current step) so instances that crash together do not restart in
//! lock-step, while the growth stays visible. An instance that stayed up for `min_uptime` starts
//! over from the first step. More than `max_restarts` restarts within the sliding `window`
//! marks the instance errored rather than looping forever.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use herd_config::RestartPolicy;

/// What to do after an instance exited unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many restarts within the window: stop trying.
    GiveUp,
}

/// Per-slot restart bookkeeping.
#[derive(Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    consecutive: u32,
    history: VecDeque<Instant>,
}

impl RestartTracker {
    /// A tracker with no history.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            consecutive: 0,
            history: VecDeque::new(),
        }
    }

    /// Forgets all history, e.g. after an explicit `herd restart`, and adopts `policy`.
    pub fn reset(&mut self, policy: RestartPolicy) {
        *self = Self::new(policy);
    }

    /// Decides about an instance that ran for `uptime` and exited at `now`; `jitter` is a
    /// uniform random number in `[0, 1)`.
    pub fn on_exit(&mut self, uptime: Duration, now: Instant, jitter: f64) -> Decision {
        if uptime >= self.policy.min_uptime {
            self.consecutive = 0;
        }
        while let Some(&first) = self.history.front() {
            if now.duration_since(first) >= self.policy.window {
                self.history.pop_front();
            } else {
                break;
            }
        }
        if self.history.len() >= self.policy.max_restarts as usize {
            return Decision::GiveUp;
        }
        self.history.push_back(now);
        let step = self.step(self.consecutive);
        self.consecutive = self.consecutive.saturating_add(1);
        Decision::RestartAfter(step.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0))
    }

    /// The un-jittered delay of the `n`th consecutive restart.
    fn step(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.min(31));
        self.policy
            .initial_backoff
            .saturating_mul(factor)
            .min(self.policy.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_restarts: 5,
            window: Duration::from_secs(10),
            min_uptime: Duration::from_secs(1),
        }
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::RestartAfter(d) => d,
            Decision::GiveUp => panic!("gave up"),
        }
    }

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut t = RestartTracker::new(RestartPolicy {
            max_restarts: 100,
            ..policy()
        });
        let now = Instant::now();
        let full: Vec<_> = (0..6)
            .map(|_| delay(t.on_exit(Duration::ZERO, now, 0.999_999)).as_millis())
            .collect();
        assert_eq!(full, vec![99, 199, 399, 799, 999, 999]);
        let low = delay(t.on_exit(Duration::ZERO, now, 0.0));
        assert_eq!(low, Duration::from_millis(500));
    }

    #[test]
    fn long_uptime_resets_the_backoff() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        t.on_exit(Duration::ZERO, now, 0.0);
        t.on_exit(Duration::ZERO, now, 0.0);
        let d = delay(t.on_exit(Duration::from_secs(2), now, 0.0));
        assert_eq!(d, Duration::from_millis(50));
    }

    #[test]
    fn gives_up_after_max_restarts_within_window_and_recovers_when_it_slides() {
        let mut t = RestartTracker::new(policy());
        let start = Instant::now();
        for i in 0..5 {
            let now = start + Duration::from_secs(i);
            assert!(matches!(
                t.on_exit(Duration::ZERO, now, 0.5),
                Decision::RestartAfter(_)
            ));
        }
        assert_eq!(
            t.on_exit(Duration::ZERO, start + Duration::from_secs(5), 0.5),
            Decision::GiveUp
        );
        // The first restart (t=0) leaves the 10 s window at t=10.
        assert!(matches!(
            t.on_exit(Duration::ZERO, start + Duration::from_secs(10), 0.5),
            Decision::RestartAfter(_)
        ));
    }

    #[test]
    fn zero_max_restarts_never_restarts() {
        let mut t = RestartTracker::new(RestartPolicy {
            max_restarts: 0,
            ..policy()
        });
        assert_eq!(
            t.on_exit(Duration::ZERO, Instant::now(), 0.5),
            Decision::GiveUp
        );
    }
}
