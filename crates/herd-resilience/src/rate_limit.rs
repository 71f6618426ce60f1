//! Rate limit: a token bucket that refuses, rather than delays, calls over the rate.
//!
//! `tower::limit::RateLimit` makes callers wait for capacity, which suits a client pacing
//! itself. A gateway route must instead answer at once with 429 and `Retry-After`, so this layer
//! refuses with [`Rejected::RateLimited`] carrying the time until the next token.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

use crate::future::Guarded;
use crate::{BoxError, Rejected};

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket. `rate` must be positive; `burst` is at least 1.
    pub fn new(rate: f64, burst: u32) -> Self {
        assert!(rate > 0.0, "rate must be positive");
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is due.
    pub fn try_take(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("bucket poisoned");
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

/// Wraps services with one shared [`TokenBucket`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<TokenBucket>,
}

impl RateLimitLayer {
    /// `rate` calls per second with bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            bucket: Arc::new(TokenBucket::new(rate, burst)),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<TokenBucket>,
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.bucket.try_take() {
            Ok(()) => Guarded::called(self.inner.call(req)),
            Err(retry_after) => Guarded::refused(Rejected::RateLimited { retry_after }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn refuses_beyond_the_burst_and_refills_at_the_rate() {
        let b = TokenBucket::new(10.0, 2);
        assert!(b.try_take().is_ok());
        assert!(b.try_take().is_ok());
        let wait = b.try_take().unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.try_take().is_ok());
        assert!(b.try_take().is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            b.try_take().is_ok() && b.try_take().is_ok(),
            "refilled to the burst"
        );
        assert!(b.try_take().is_err(), "never above the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn layer_answers_rate_limited_with_retry_after() {
        let inner = tower::service_fn(|()| async { Ok::<_, BoxError>("ok") });
        let mut svc = RateLimitLayer::new(1.0, 1).layer(inner);
        assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "ok");
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        let r = err.downcast_ref::<Rejected>().unwrap();
        assert_eq!(r.retry_after(), Duration::from_secs(1));
    }
}
