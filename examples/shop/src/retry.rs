//! Waiting before another try after a conflict: jittered exponential backoff, so writers that
//! met on one key do not meet again at once.

use std::time::Duration;

/// How many times a write that keeps meeting conflicts is tried before the request fails.
pub const MAX_TRIES: u32 = 60;

/// The pause before try `attempt + 1` (from 1): up to 2 ms doubling per try, at most 200 ms,
/// full jitter.
pub fn delay(attempt: u32) -> Duration {
    let cap = Duration::from_millis(2)
        .saturating_mul(1 << attempt.min(10))
        .min(Duration::from_millis(200));
    cap.mul_f64(fastrand::f64())
}

/// Sleeps for [`delay`]`(attempt)`.
pub async fn pause(attempt: u32) {
    tokio::time::sleep(delay(attempt)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        for attempt in 0..40 {
            assert!(delay(attempt) <= Duration::from_millis(200));
        }
        assert!(delay(0) <= Duration::from_millis(2));
    }
}
