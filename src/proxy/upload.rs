//! The client's request body on its way upstream: capped by
//! `server.max_request_body`, cut off when it sends nothing for
//! `guard.body_timeout`, and failing with a [`ClientBodyError`], so that a
//! slow, oversized or malformed upload is answered as the client's fault (408,
//! 413, 400) and never blamed on the origin.
//!
//! The timeout counts only time spent waiting for the client: it starts when a
//! read finds nothing, not while relais connects or the origin is slow to take
//! what was read (as nginx's `client_body_timeout` between two reads).
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::Received;
use crate::body::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("request body larger than server.max_request_body")]
    TooLarge,
    #[error("request body sent nothing for guard.body_timeout")]
    Timeout,
    /// Bad chunked framing, or the connection closed inside the body.
    #[error("request body broken: {0}")]
    Broken(hyper::Error),
}

impl ClientBodyError {
    /// The client error in `e`'s chain of sources, if any.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
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
        inner: Incoming,
        left: Option<u64>,
        timeout: Duration,
        #[pin]
        deadline: Sleep,
        // The last read found nothing: `deadline` runs.
        waiting: bool,
        received: Received,
    }
}

impl Upload {
    pub fn new(inner: Incoming, limit: Option<u64>, timeout: Duration, received: Received) -> Upload {
        Upload { inner, left: limit, timeout, deadline: tokio::time::sleep(timeout), waiting: false, received }
    }
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.poll_frame(cx);
        if polled.is_pending() && !*this.waiting {
            this.deadline.as_mut().reset(Instant::now() + *this.timeout);
        }
        *this.waiting = polled.is_pending();
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
