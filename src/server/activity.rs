//! Whether a connection is busy: requests in flight, counted from the call to
//! the service until the response body has ended or been dropped. PINGs and
//! other frames do not count, so a connection kept alive by nothing but them
//! is idle.
//!
//! Idleness is sampled, not timed per request (a clock read per request shows
//! in an HTTP/2 profile): the connection looks every quarter of its idle
//! timeout, and is idle once five looks in a row found no request in flight
//! and none begun since the last, that is after between one and one and a
//! quarter idle timeouts.
//!
//! On HTTP/2 the response body also tells [`super::stall`] when it waits on
//! the client, and hands data over in pieces of at most [`PIECE`], so that
//! waiting on one piece means the client took less than that.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Frame, SizeHint};

pub(super) struct Activity {
    in_flight: AtomicUsize,
    /// Requests begun, ever: a change between two looks means activity.
    begun: AtomicUsize,
    /// Requests a connection may serve (`guard.max_requests_per_connection`).
    most: usize,
    /// Told when the last of those has begun.
    spent: tokio::sync::Notify,
    /// The proxy stops: the next request to begin is the last.
    stopping: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new(usize::MAX)
    }
}

/// Looks taken per idle timeout.
const LOOKS: u32 = 4;

impl Activity {
    /// For a connection that may serve `most` requests.
    pub(super) fn new(most: usize) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
            most,
            spent: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
        }
    }

    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        // SeqCst with `last_one`'s: one of the two sees the other.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let last = self.begun.fetch_add(1, Ordering::Relaxed) + 1 == self.most || self.stopping.load(Ordering::SeqCst);
        if last {
            self.spent.notify_one();
        }
        Busy(self.clone(), last)
    }

    /// The proxy stops: the next request to begin is the last, as if
    /// `guard.max_requests_per_connection` were reached. Whether one is in
    /// flight now (then the connection can be told to close at once).
    pub(super) fn last_one(&self) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// Resolves once the connection has begun its last allowed request.
    pub(super) async fn spent(&self) {
        self.spent.notified().await;
    }

    /// Resolves once the connection has been idle for `idle` (to `idle` × 5/4).
    pub(super) async fn idle(&self, idle: Duration) {
        let mut tick = tokio::time::interval(idle / LOOKS);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let (mut seen, mut quiet) = (self.begun.load(Ordering::Relaxed), 0);
        loop {
            tick.tick().await;
            let begun = self.begun.load(Ordering::Relaxed);
            if begun != seen || self.in_flight.load(Ordering::Relaxed) > 0 {
                (seen, quiet) = (begun, 0);
            } else {
                quiet += 1;
                if quiet > LOOKS {
                    return;
                }
            }
        }
    }
}

/// One request in flight; dropping it ends the request. The flag: it is the
/// last the connection may serve.
pub(super) struct Busy(Arc<Activity>, bool);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The service's response future, whose body keeps the request counted.
    /// (A combinator rather than an `async` block: that would hold the inner
    /// future twice over, and hyper moves this into a task per HTTP/2 stream.)
    pub struct Counted<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
        close: bool,
        http2: bool,
    }
}

impl<F> Counted<F> {
    /// On HTTP/1, the response to a connection's last allowed request says
    /// `Connection: close`, so the client knows not to send another.
    pub(super) fn new(inner: F, busy: Busy, http2: bool) -> Self {
        let close = !http2 && busy.1;
        Counted { inner, busy: Some(busy), close, http2 }
    }
}

impl<F, B, E> Future for Counted<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        let busy = this.busy.take();
        let (close, http2) = (*this.close, *this.http2);
        Poll::Ready(out.map(|mut r| {
            if close {
                r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            r.map(|inner| Tracked { inner, busy, http2, rest: Bytes::new() })
        }))
    }
}

/// The most data an HTTP/2 response body hands over at once: one frame at
/// h2's default size. (A cached body is one buffer; whole, it would be queued
/// in one go and its client never seen waiting.)
pub(super) const PIECE: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until it ends.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
        http2: bool,
        // HTTP/2: what is left of a frame larger than a piece.
        rest: Bytes,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if !*this.http2 {
            let polled = this.inner.poll_frame(cx);
            if let Poll::Ready(None) = polled {
                this.busy.take();
            }
            return polled;
        }
        if !this.rest.is_empty() {
            super::stall::report(true);
            let n = this.rest.len().min(PIECE);
            return Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))));
        }
        let polled = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) if data.len() > PIECE => {
                    *this.rest = data.split_off(PIECE);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        };
        let handed = matches!(&polled, Poll::Ready(Some(Ok(f))) if f.is_data());
        super::stall::report(handed);
        if let Poll::Ready(None) = polled {
            this.busy.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint.set_lower(inner.lower().saturating_add(rest));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_once_nothing_began_and_nothing_is_in_flight_for_the_timeout() {
        let a = Arc::new(Activity::default());
        let idle = Duration::from_secs(4);
        let start = tokio::time::Instant::now();
        let busy = a.begin();
        let watcher = {
            let a = a.clone();
            tokio::spawn(async move { a.idle(idle).await })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!watcher.is_finished(), "a request in flight is not idle however long it takes");
        drop(busy);
        watcher.await.unwrap();
        let ended = start.elapsed();
        assert!(ended >= Duration::from_secs(14) && ended <= Duration::from_secs(16), "{ended:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_now_and_then_keeps_it_busy() {
        let a = Arc::new(Activity::default());
        let watcher = {
            let a = a.clone();
            tokio::spawn(async move { a.idle(Duration::from_secs(4)).await })
        };
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(a.begin());
        }
        assert!(!watcher.is_finished());
    }
}
