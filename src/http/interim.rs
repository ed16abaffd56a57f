//! Informational responses (103 Early Hints and any 1xx but 100 and 101) an
//! origin sends before its final one, on their way to the client's connection.
//!
//! An HTTP/1.1 client connection of relais's engine has one [`Interim`] (its
//! requests take turns); the pipeline takes a handle on it for the request in
//! flight ([`Interim::current`]) onto the request it sends upstream, and the
//! origin connection hands each informational head to it. A head meant for an
//! earlier request (a background refresh it started) is dropped. A client that
//! cannot take them (HTTP/2 through hyper, or the hyper engine) has none, and
//! the heads are dropped. They are never stored.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, StatusCode};

/// Heads queued at most: an origin sending more before its answer loses the rest.
const MOST: usize = 8;

#[derive(Clone, Default)]
pub(crate) struct Interim {
    queue: Arc<Mutex<Queue>>,
    /// The request this handle is for.
    request: u64,
}

#[derive(Default)]
struct Queue {
    heads: VecDeque<(StatusCode, HeaderMap)>,
    waker: Option<Waker>,
    /// The request in flight on the connection.
    request: u64,
}

impl Interim {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A handle for the request now in flight.
    pub(crate) fn current(&self) -> Interim {
        Interim { queue: self.queue.clone(), request: self.lock().request }
    }

    /// The connection starts its next request: what is queued is dropped.
    pub(crate) fn next_request(&self) {
        let mut q = self.lock();
        q.request += 1;
        q.heads.clear();
    }

    /// Passes an informational head on (a 1xx other than 100 and 101).
    pub(crate) fn send(&self, status: StatusCode, headers: HeaderMap) {
        if !status.is_informational() || status == StatusCode::CONTINUE || status == StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        let mut q = self.lock();
        if q.request != self.request {
            return;
        }
        if q.heads.len() < MOST {
            q.heads.push_back((status, headers));
        }
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }

    /// The next head, for the client connection; wakes it when one comes.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<(StatusCode, HeaderMap)> {
        let mut q = self.lock();
        match q.heads.pop_front() {
            Some(head) => Poll::Ready(head),
            None => {
                if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    q.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
