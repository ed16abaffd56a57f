//! When a request body has been sent: the response timer starts then.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

use crate::http::body::{Body, BoxError};

/// Wraps `body` so that the returned [`Sent`] resolves once it has ended,
/// failed or been dropped by the connection.
pub(super) fn watch(body: Body) -> (Body, Sent) {
    if http_body::Body::is_end_stream(&body) {
        return (body, Sent(None));
    }
    let (tx, rx) = oneshot::channel();
    (Body::boxed(Watched { inner: body, done: Some(tx) }), Sent(Some(rx)))
}

pub(super) struct Sent(Option<oneshot::Receiver<()>>);

impl Sent {
    /// Waits until the body is sent, then `timeout`.
    pub(super) async fn then_sleep(self, timeout: Duration) {
        if let Some(rx) = self.0 {
            let _ = rx.await;
        }
        tokio::time::sleep(timeout).await;
    }
}

/// Whether a request failed because of its body (the client's side).
pub(super) fn body_failed(e: &super::RequestError) -> bool {
    e.body_failed()
}

pin_project_lite::pin_project! {
    struct Watched {
        #[pin]
        inner: Body,
        done: Option<oneshot::Sender<()>>,
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.done.take().map(|tx| tx.send(()));
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
