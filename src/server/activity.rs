//! Whether a connection is busy: requests in flight, counted from the call to
//! the service until the response body has ended or been dropped, and when the
//! last one ended. PINGs and other frames do not count, so a connection kept
//! alive by nothing but them is idle.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to the end of the last request.
    last: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { start: Instant::now(), in_flight: AtomicUsize::new(0), last: AtomicU64::new(0) }
    }
}

impl Activity {
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection would have been idle for `idle`, if nothing starts meanwhile.
    pub fn idle_until(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Instant::now() + idle;
        }
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }

    pub fn is_idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= self.idle_until(idle)
    }
}

/// One request in flight; dropping it ends the request.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.last.store(a.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until it ends.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, busy: Busy) -> Self {
        Tracked { inner, busy: Some(busy) }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.busy.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let a = Arc::new(Activity::default());
        let idle = Duration::from_secs(5);
        let busy = a.begin();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!a.is_idle_for(idle), "a request in flight is not idle however long it takes");
        drop(busy);
        assert!(!a.is_idle_for(idle));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!a.is_idle_for(idle));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(a.is_idle_for(idle));
    }
}
