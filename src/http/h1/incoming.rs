//! A request body as relais's HTTP/1 server hands it to the pipeline: one
//! slot shared with the connection, which reads the next piece from the
//! socket only when the body asks for one.
//!
//! No task and no channel per request: the connection's own task drives the
//! request and fills the slot, and it learns that the body wants more (or
//! was dropped) from the slot. Asking first is also when a client that
//! sent `Expect: 100-continue` gets its `100 Continue`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::http::body::BoxError;

#[derive(Default)]
struct Slot {
    frame: Option<Result<Frame<Bytes>, BoxError>>,
    /// Nothing follows what is in `frame`.
    ended: bool,
    /// The body asked and found nothing.
    wanted: bool,
    /// The body was dropped: nothing more will be read for it.
    dropped: bool,
    body: Option<Waker>,
    conn: Option<Waker>,
}

fn lock(shared: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The body, the pipeline's end.
pub(crate) struct Incoming {
    shared: Arc<Mutex<Slot>>,
    /// `Content-Length`, when the request has one.
    length: Option<u64>,
}

/// The connection's end of the slot.
pub(crate) struct Feed {
    shared: Arc<Mutex<Slot>>,
}

/// A body of `length` bytes if known (else chunked), and the end that fills it.
pub(crate) fn pair(length: Option<u64>) -> (Incoming, Feed) {
    let shared = Arc::new(Mutex::new(Slot::default()));
    (Incoming { shared: shared.clone(), length }, Feed { shared })
}

impl Feed {
    /// Whether the body waits for a piece now; if not, the task is woken when it does.
    pub(crate) fn wants(&self, cx: &mut Context<'_>) -> bool {
        let mut slot = lock(&self.shared);
        if slot.wanted && slot.frame.is_none() && !slot.ended && !slot.dropped {
            return true;
        }
        if !slot.conn.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.conn = Some(cx.waker().clone());
        }
        false
    }

    /// Gives the body its next piece (an error ends it); `last` says nothing follows.
    pub(crate) fn put(&self, frame: Result<Frame<Bytes>, BoxError>, last: bool) {
        let mut slot = lock(&self.shared);
        slot.ended = last || frame.is_err();
        slot.frame = Some(frame);
        slot.wanted = false;
        if let Some(w) = slot.body.take() {
            w.wake();
        }
    }

    /// Ends the body with nothing more.
    pub(crate) fn end(&self) {
        let mut slot = lock(&self.shared);
        slot.ended = true;
        slot.wanted = false;
        if let Some(w) = slot.body.take() {
            w.wake();
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let mut slot = lock(&self.shared);
        slot.dropped = true;
        if let Some(w) = slot.conn.take() {
            w.wake();
        }
    }
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut slot = lock(&self.shared);
        if let Some(frame) = slot.frame.take() {
            return Poll::Ready(Some(frame));
        }
        if slot.ended {
            return Poll::Ready(None);
        }
        slot.wanted = true;
        if !slot.body.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.body = Some(cx.waker().clone());
        }
        if let Some(w) = slot.conn.take() {
            w.wake();
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let slot = lock(&self.shared);
        slot.ended && slot.frame.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
