//! The future of a call that a layer either forwarded or refused on the spot.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::{BoxError, Rejected};

pin_project! {
    /// Either the inner service's future, or an immediate [`Rejected`] error.
    pub struct Guarded<F> {
        #[pin]
        fut: Option<F>,
        refused: Option<Rejected>,
    }
}

impl<F> Guarded<F> {
    /// A call forwarded to the inner service.
    pub fn called(fut: F) -> Self {
        Self {
            fut: Some(fut),
            refused: None,
        }
    }

    /// A refusal.
    pub fn refused(err: Rejected) -> Self {
        Self {
            fut: None,
            refused: Some(err),
        }
    }
}

impl<F, T, E> Future for Guarded<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(err) = this.refused.take() {
            return Poll::Ready(Err(err.into()));
        }
        let fut = this.fut.as_pin_mut().expect("polled after completion");
        Poll::Ready(ready!(fut.poll(cx)).map_err(Into::into))
    }
}
