//! Request collapsing: one origin fetch per key, shared by every request that
//! wants it while it is in flight.
//!
//! The first request for a key becomes the leader and its fetch runs in a task
//! of its own, so the leader's client hanging up cancels nothing. Everyone
//! else waits for the response head, then reads the body from a shared buffer
//! as it arrives (a waiter's first byte does not wait for the last). A head
//! that is not shareable (uncacheable response) releases the waiters to fetch
//! on their own, and the key is remembered as uncacheable for a while so later
//! requests skip the wait (Varnish's hit-for-miss).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::sync::watch;

use crate::body::BoxError;

/// What waiters learn about a fill once the origin has answered.
#[derive(Clone)]
pub enum Head {
    /// Not known yet.
    Pending,
    /// A shareable response: read its body with [`Fill::body`].
    Shared { status: StatusCode, headers: HeaderMap, cache_status: cache_policy::CacheStatus },
    /// Not shareable, or the fetch failed before a head: fetch on your own.
    Released,
    /// The origin could not be reached: the status to answer with.
    Failed(StatusCode),
}

#[derive(Default)]
struct Buffer {
    chunks: Vec<Bytes>,
    len: u64,
    /// Some(true) complete, Some(false) broken.
    end: Option<bool>,
    wakers: Vec<Waker>,
}

/// One in-flight fetch.
pub struct Fill {
    head: watch::Sender<Head>,
    buffer: Mutex<Buffer>,
}

impl Fill {
    fn new() -> Fill {
        Fill { head: watch::Sender::new(Head::Pending), buffer: Mutex::new(Buffer::default()) }
    }

    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn publish(&self, head: Head) {
        self.head.send_replace(head);
    }

    /// Appends a chunk and wakes readers.
    pub fn push(&self, chunk: Bytes) {
        let wakers = {
            let mut b = self.buffer();
            b.len += chunk.len() as u64;
            b.chunks.push(chunk);
            std::mem::take(&mut b.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Marks the body complete (`true`) or broken (`false`).
    pub fn finish(&self, complete: bool) {
        let wakers = {
            let mut b = self.buffer();
            b.end.get_or_insert(complete);
            std::mem::take(&mut b.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Waits for the head, at most `timeout` (then `Released`: go to the origin yourself).
    pub async fn head(&self, timeout: Duration) -> Head {
        let mut rx = self.head.subscribe();
        let wait = rx.wait_for(|h| !matches!(h, Head::Pending));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(head)) => head.clone(),
            _ => Head::Released,
        }
    }

    /// A reader of the shared body from its first byte.
    pub fn body(self: &Arc<Self>) -> FillBody {
        FillBody { fill: self.clone(), next: 0 }
    }
}

/// Streams a fill's body to one client.
pub struct FillBody {
    fill: Arc<Fill>,
    next: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("the origin's response broke off")]
pub struct BrokenFill;

impl http_body::Body for FillBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let fill = self.fill.clone();
        let mut b = fill.buffer();
        if let Some(chunk) = b.chunks.get(self.next) {
            let chunk = chunk.clone();
            drop(b);
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match b.end {
            Some(true) => Poll::Ready(None),
            Some(false) => Poll::Ready(Some(Err(Box::new(BrokenFill)))),
            None => {
                b.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let b = self.fill.buffer();
        b.end == Some(true) && self.next >= b.chunks.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The fills in flight, by cache key.
#[derive(Default)]
pub struct Fills {
    map: Mutex<HashMap<String, Arc<Fill>>>,
}

pub enum Role {
    /// Fetch, publish, and call [`Fills::done`] when the body has ended.
    Leader(Arc<Fill>),
    Waiter(Arc<Fill>),
}

impl Fills {
    pub fn join(&self, key: &str) -> Role {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fill) = map.get(key) {
            return Role::Waiter(fill.clone());
        }
        let fill = Arc::new(Fill::new());
        map.insert(key.to_string(), fill.clone());
        Role::Leader(fill)
    }

    /// The fill for `key` no longer takes new waiters (readers it has keep reading).
    pub fn done(&self, key: &str, fill: &Arc<Fill>) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            map.remove(key);
        }
    }
}
