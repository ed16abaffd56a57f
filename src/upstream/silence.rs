//! The origin's body under `response_timeout` (nginx's `proxy_read_timeout`):
//! a body that has sent nothing for that long while it was waited on is cut
//! off with an error, as an origin that reset would be. Only the time spent
//! waiting on the origin counts: while the reader (a slow client, a fill held
//! back by its slowest reader) does not ask, no time runs.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::http::body::{Body, BoxError};

/// `body`, from `server`, failing once it has kept its reader waiting for `timeout`.
pub(super) fn limit(body: Body, timeout: Duration, server: Arc<str>) -> Body {
    if http_body::Body::is_end_stream(&body) {
        return body;
    }
    Body::boxed(Silence { inner: body, timeout, server, timer: None, waiting: false })
}

pin_project_lite::pin_project! {
    struct Silence {
        #[pin]
        inner: Body,
        timeout: Duration,
        server: Arc<str>,
        // Made at the first wait, moved on at each later one.
        timer: Option<Pin<Box<Sleep>>>,
        // The last poll was a wait, and `timer` runs for it.
        waiting: bool,
    }
}

impl http_body::Body for Silence {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if polled.is_ready() {
            *this.waiting = false;
            return polled;
        }
        let timeout = *this.timeout;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !*this.waiting {
            timer.as_mut().reset(Instant::now() + timeout);
            *this.waiting = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            tracing::warn!(server = %this.server, ?timeout, "the origin's body stalled for response_timeout; cut off");
            return Poll::Ready(Some(Err("the origin sent nothing of its body for response_timeout".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
