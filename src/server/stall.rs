//! `server.send_timeout` for one HTTP/2 stream: a stream whose client keeps
//! its flow-control window shut is reset, and the connection goes on serving
//! its other streams. (A connection that reads nothing at all is the socket's
//! business: see [`super::gather`].)
//!
//! hyper runs each stream's response in a task it spawns through the
//! connection's executor; [`Streams`] wraps each such task in [`Watched`].
//! While the task runs, the response body (`activity::Tracked`) reports
//! through a task-local whether it has handed a frame over and waits to be
//! asked for the next. hyper asks only once the stream's window has room, so a
//! body left waiting for `send_timeout` is a client that took nothing in that
//! time: the task is dropped, and dropping an h2 stream before its end sends
//! RST_STREAM (CANCEL). Waiting on the origin does not count.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

tokio::task_local! {
    static STREAM: Arc<Progress>;
}

/// What the body of the stream being polled has done.
#[derive(Default)]
pub struct Progress {
    /// The body was asked for a frame since the last look.
    moved: AtomicBool,
    /// Its last answer was data, and it has not been asked again.
    waiting: AtomicBool,
}

/// Called by the response body at every poll: whether it just handed over data.
pub fn report(yielded_data: bool) {
    let _ = STREAM.try_with(|p| {
        p.moved.store(true, Ordering::Relaxed);
        p.waiting.store(yielded_data, Ordering::Relaxed);
    });
}

/// hyper's executor for a connection: spawns each HTTP/2 stream's task under
/// `send_timeout`.
#[derive(Clone, Copy)]
pub struct Streams {
    pub send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Watched { inner: fut, progress: Arc::default(), timeout: self.send_timeout, stall: None });
    }
}

pin_project_lite::pin_project! {
    /// A stream's task, ended when its body has waited on the client for the timeout.
    pub struct Watched<F> {
        #[pin]
        inner: F,
        progress: Arc<Progress>,
        timeout: Duration,
        // Set while the body waits on the client; made at the first wait.
        stall: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let inner = this.inner;
        if STREAM.sync_scope(this.progress.clone(), || inner.poll(cx)).is_ready() {
            return Poll::Ready(());
        }
        let moved = this.progress.moved.swap(false, Ordering::Relaxed);
        if !this.progress.waiting.load(Ordering::Relaxed) {
            // Waiting on the origin, or not streaming yet.
            *this.stall = None;
            return Poll::Pending;
        }
        let timeout = *this.timeout;
        let fresh = this.stall.is_none();
        let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if moved && !fresh {
            // It was asked again, and handed over more: the client took some.
            stall.as_mut().reset(Instant::now() + timeout);
        }
        if stall.as_mut().poll(cx).is_ready() {
            tracing::debug!("HTTP/2 stream reset: its client took nothing of it for server.send_timeout");
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that hands over data, then is never asked again (as hyper does
    /// while the stream's window is shut).
    struct Handed(bool);

    impl Future for Handed {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if !self.0 {
                report(true);
                self.0 = true;
            }
            Poll::Pending
        }
    }

    /// A body waiting on its origin.
    struct Slow;

    impl Future for Slow {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            report(false);
            Poll::Pending
        }
    }

    fn watched<F>(inner: F) -> Watched<F> {
        Watched { inner, progress: Arc::default(), timeout: Duration::from_secs(60), stall: None }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_left_waiting_on_the_client_ends_its_task() {
        let started = Instant::now();
        watched(Handed(false)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_on_the_origin_is_not_timed() {
        let ended = tokio::time::timeout(Duration::from_secs(600), watched(Slow)).await;
        assert!(ended.is_err());
    }
}
