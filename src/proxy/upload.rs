//! The client's request body on its way upstream: capped by
//! `server.max_request_body`, cut off when it sends nothing for
//! `guard.body_timeout`, and failing with a [`ClientBodyError`], so that a
//! slow, oversized or malformed upload is answered as the client's fault (408,
//! 413, 400) and never blamed on the origin.
//!
//! The timeout counts only time spent waiting for the client: it starts when a
//! read finds nothing, not while relais connects or the origin is slow to take
//! what was read (as nginx's `client_body_timeout` between two reads). So does
//! `guard.body_min_rate`, as Apache's mod_reqtimeout counts it: the time spent
//! waiting for the body may reach `body_timeout` plus one second per
//! `body_min_rate` bytes received, so a client that trickles a byte just often
//! enough to beat the timeout is cut off too, while one that sent a lot may
//! pause for as long as `body_timeout` at a time.
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::Received;
use crate::http::body::{Body, BoxError};

#[derive(Debug, thiserror::Error)]
pub(super) enum ClientBodyError {
    #[error("request body larger than server.max_request_body")]
    TooLarge,
    #[error("request body sent nothing for guard.body_timeout, or fell below guard.body_min_rate")]
    Timeout,
    /// Bad chunked framing, or the connection closed inside the body.
    #[error("request body broken: {0}")]
    Broken(BoxError),
}

impl ClientBodyError {
    /// The client error in `e`'s chain of sources, if any.
    pub(super) fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
        let mut source = Some(e);
        while let Some(err) = source {
            if let Some(found) = err.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            source = err.source();
        }
        None
    }
}

pin_project_lite::pin_project! {
    pub struct Upload {
        #[pin]
        inner: Body,
        left: Option<u64>,
        timeout: Duration,
        #[pin]
        deadline: Sleep,
        // The last read found nothing since this instant: `deadline` runs.
        waiting: Option<Instant>,
        // Time spent waiting for the client, before the current wait.
        waited: Duration,
        // Bytes per second the body must keep up with.
        min_rate: Option<u64>,
        received: Received,
    }
}

impl Upload {
    pub(super) fn new(
        inner: Body,
        limit: Option<u64>,
        timeout: Duration,
        min_rate: Option<u64>,
        received: Received,
    ) -> Upload {
        let deadline = tokio::time::sleep(timeout);
        Upload { inner, left: limit, timeout, deadline, waiting: None, waited: Duration::ZERO, min_rate, received }
    }
}

/// How long the next wait may last: the timeout, or less if the rate would fall behind.
fn allowance(timeout: Duration, min_rate: Option<u64>, bytes: u64, waited: Duration) -> Duration {
    let Some(rate) = min_rate else { return timeout };
    let earned = Duration::try_from_secs_f64(bytes as f64 / rate.max(1) as f64).unwrap_or(Duration::MAX);
    timeout.min(timeout.saturating_add(earned).saturating_sub(waited))
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.poll_frame(cx);
        match (polled.is_pending(), *this.waiting) {
            (true, None) => {
                let now = Instant::now();
                let allowed = allowance(*this.timeout, *this.min_rate, this.received.get(), *this.waited);
                this.deadline.as_mut().reset(now + allowed);
                *this.waiting = Some(now);
            }
            (false, Some(since)) => {
                *this.waited += since.elapsed();
                *this.waiting = None;
            }
            _ => {}
        }
        let frame = match polled {
            Poll::Pending => {
                ready!(this.deadline.poll(cx));
                return Poll::Ready(Some(Err(ClientBodyError::Timeout.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(ClientBodyError::Broken(e).into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            this.received.add(data.len() as u64);
        }
        if let (Some(left), Some(data)) = (this.left.as_mut(), frame.data_ref()) {
            match left.checked_sub(data.len() as u64) {
                Some(rest) => *left = rest,
                None => return Poll::Ready(Some(Err(ClientBodyError::TooLarge.into()))),
            }
        }
        Poll::Ready(Some(Ok(frame)))
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

    #[test]
    fn the_wait_allowed_grows_with_what_was_received() {
        let s = Duration::from_secs;
        // No rate: the timeout, whatever was waited.
        assert_eq!(allowance(s(30), None, 0, s(300)), s(30));
        // body_timeout, plus a second per 500 bytes, minus what was waited.
        assert_eq!(allowance(s(30), Some(500), 0, s(0)), s(30));
        assert_eq!(allowance(s(30), Some(500), 0, s(20)), s(10));
        assert_eq!(allowance(s(30), Some(500), 5_000, s(35)), s(5));
        assert_eq!(allowance(s(30), Some(500), 6, s(30)), Duration::from_millis(12));
        // Never more than the timeout at a time, however much was received.
        assert_eq!(allowance(s(30), Some(500), 1 << 30, s(0)), s(30));
        assert_eq!(allowance(s(30), Some(500), 0, s(31)), Duration::ZERO);
    }
}
