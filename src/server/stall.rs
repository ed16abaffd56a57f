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
//! RST_STREAM (CANCEL). Waiting on the origin does not count. The report is
//! a `Cell` set for the length of one poll: nothing is allocated per stream
//! until a body first waits on its client.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

tokio::task_local! {
    static STREAM: Cell<Progress>;
}

/// What the body of the stream being polled has done.
#[derive(Clone, Copy, Default)]
struct Progress {
    /// The body was asked for a frame since the last look.
    moved: bool,
    /// Its last answer was data, and it has not been asked again.
    waiting: bool,
}

/// Called by the response body at every poll: whether it just handed over data.
pub(super) fn report(yielded_data: bool) {
    let _ = STREAM.try_with(|p| p.set(Progress { moved: true, waiting: yielded_data }));
}

/// hyper's executor for a connection: spawns each HTTP/2 stream's task under
/// `send_timeout`.
#[derive(Clone, Copy)]
pub(super) struct Streams {
    pub send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        // Boxed: a stream's future is several KiB, which tokio would otherwise
        // copy into its task and again each time it sets the task's stage.
        tokio::spawn(Watched::new(Box::pin(fut), self.send_timeout));
    }
}

pin_project_lite::pin_project! {
    /// A stream's task, ended when its body has waited on the client for the timeout.
    pub struct Watched<F> {
        #[pin]
        inner: F,
        waiting: bool,
        timeout: Duration,
        // Set while the body waits on the client; made at the first wait.
        stall: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> Watched<F> {
    fn new(inner: F, timeout: Duration) -> Self {
        Watched { inner, waiting: false, timeout, stall: None }
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let inner = this.inner;
        let before = Progress { moved: false, waiting: *this.waiting };
        let (polled, after) = STREAM.sync_scope(Cell::new(before), || (inner.poll(cx), STREAM.with(Cell::get)));
        if polled.is_ready() {
            return Poll::Ready(());
        }
        *this.waiting = after.waiting;
        if !after.waiting {
            // Waiting on the origin, or not streaming yet.
            *this.stall = None;
            return Poll::Pending;
        }
        let timeout = *this.timeout;
        let fresh = this.stall.is_none();
        let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if after.moved && !fresh {
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
        Watched::new(inner, Duration::from_secs(60))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_left_waiting_on_the_client_ends_its_task() {
        let started = Instant::now();
        watched(Handed(false)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    /// A body asked again after 40 s (its client took the piece) and never after.
    struct TookOne(Pin<Box<Sleep>>, u8);

    impl Future for TookOne {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let due = self.1 < 2 && self.0.as_mut().poll(cx).is_ready();
            if self.1 == 0 || (self.1 == 1 && due) {
                report(true);
                self.1 += 1;
            }
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_a_piece_gets_the_timeout_again() {
        let started = Instant::now();
        watched(TookOne(Box::pin(tokio::time::sleep(Duration::from_secs(40))), 0)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_on_the_origin_is_not_timed() {
        let ended = tokio::time::timeout(Duration::from_secs(600), watched(Slow)).await;
        assert!(ended.is_err());
    }
}
