//! Request collapsing: one origin fetch per key, shared by every request that
//! wants it while it is in flight.
//!
//! The first request for a key becomes the leader and its fetch runs in a task
//! of its own, so the leader's client hanging up cancels nothing. Everyone
//! else waits for the response head, then reads the body from a shared buffer
//! as it arrives (a waiter's first byte does not wait for the last). A head
//! that is not shareable (uncacheable response) releases the waiters to fetch
//! on their own (`collapse.rs` decides who leads and remembers such keys).
//!
//! Memory: while the body may still be stored in memory, the buffer keeps it
//! whole (new waiters read from the first byte), up to `max_object_size` and
//! within the shared `cache.fill_memory` (see [`super::tee`]). Past that, or
//! once the body goes to disk instead ([`super::spill`]), the fill
//! [streams only](Fill::stream_only): it takes no new readers, frees what
//! every reader has read, and the fetch waits while more than [`WINDOW`] bytes
//! are unread by the slowest reader, so readers get the origin's pace or
//! theirs, and memory stays bounded whatever the body's size. A fill that
//! streams only and has lost all its readers stops.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::sync::watch;

use crate::http::body::BoxError;

/// What waiters learn about a fill once the origin has answered.
#[derive(Clone)]
pub(crate) enum Head {
    /// Not known yet.
    Pending,
    /// A shareable response: read its body with [`Fill::body`].
    Shared { status: StatusCode, headers: HeaderMap, cache_status: Option<cache_policy::CacheStatus> },
    /// Not shareable, or the fetch failed before a head: fetch on your own.
    Released,
    /// The origin could not be reached: the status to answer with.
    Failed(StatusCode),
    /// The fetch was dropped (cancelled, panicked) before it said: fetch on your own.
    Abandoned,
}

/// Unread bytes the slowest reader may leave behind once a fill streams only.
pub(crate) const WINDOW: u64 = 256 << 10;

#[derive(Default)]
struct Buffer {
    chunks: VecDeque<Bytes>,
    /// Index in the body of `chunks[0]`: chunks before it were freed.
    first: usize,
    /// Bytes held in `chunks`.
    held: u64,
    /// Some(true) complete, Some(false) broken.
    end: Option<bool>,
    /// Readers waiting for a chunk.
    wakers: Vec<Waker>,
    /// The index of the next chunk each reader will read, by reader slot
    /// (None: gone).
    readers: Vec<Option<usize>>,
    /// Nothing will be stored: free what all readers have read.
    streaming: bool,
    /// The fetch, waiting for readers to catch up.
    pump: Option<Waker>,
}

impl Buffer {
    fn live_readers(&self) -> impl Iterator<Item = usize> + '_ {
        self.readers.iter().flatten().copied()
    }

    /// Frees the chunks every reader has read; wakes the fetch if there is room.
    fn release(&mut self) -> Option<Waker> {
        if !self.streaming {
            return None;
        }
        let end = self.first + self.chunks.len();
        let slowest = self.live_readers().min().unwrap_or(end);
        while self.first < slowest {
            let Some(c) = self.chunks.pop_front() else { break };
            self.held -= c.len() as u64;
            self.first += 1;
        }
        if self.held <= WINDOW || self.live_readers().next().is_none() { self.pump.take() } else { None }
    }
}

/// One in-flight fetch.
pub(crate) struct Fill {
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

    pub(crate) fn publish(&self, head: Head) {
        self.head.send_replace(head);
    }

    /// Appends a chunk and wakes readers.
    pub(crate) fn push(&self, chunk: Bytes) {
        let wakers = {
            let mut b = self.buffer();
            b.held += chunk.len() as u64;
            b.chunks.push_back(chunk);
            if b.streaming && b.live_readers().next().is_none() {
                // Read by no one (a body going to disk on its own): freed at once.
                b.release();
            }
            std::mem::take(&mut b.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The body will not be stored (it passed `max_object_size`): from now on
    /// the buffer holds only what some reader has yet to read.
    pub(crate) fn stream_only(&self) {
        let mut b = self.buffer();
        b.streaming = true;
        b.release();
    }

    /// Once streaming only: waits until the slowest reader is within
    /// [`WINDOW`] of the end. False when no reader is left, and the fetch should stop.
    pub(crate) async fn room(&self) -> bool {
        std::future::poll_fn(|cx| {
            let mut b = self.buffer();
            if b.live_readers().next().is_none() {
                return Poll::Ready(false);
            }
            if !b.streaming || b.held <= WINDOW {
                return Poll::Ready(true);
            }
            b.pump = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Marks the body complete (`true`) or broken (`false`).
    pub(crate) fn finish(&self, complete: bool) {
        let wakers = {
            let mut b = self.buffer();
            b.end.get_or_insert(complete);
            std::mem::take(&mut b.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Waits for the head, at most `timeout`; None when it did not come in time
    /// (go to the origin yourself).
    pub(crate) async fn head(&self, timeout: Duration) -> Option<Head> {
        let mut rx = self.head.subscribe();
        let wait = rx.wait_for(|h| !matches!(h, Head::Pending));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(head)) => Some(head.clone()),
            Ok(Err(_)) => Some(Head::Abandoned),
            Err(_) => None,
        }
    }

    /// A reader of the shared body from its first byte; None if that byte
    /// was freed already (the fill streams only).
    pub(crate) fn body(self: &Arc<Self>) -> Option<FillBody> {
        let mut b = self.buffer();
        if b.first > 0 {
            return None;
        }
        let slot = match b.readers.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                b.readers.push(None);
                b.readers.len() - 1
            }
        };
        b.readers[slot] = Some(0);
        Some(FillBody { fill: self.clone(), next: 0, slot })
    }
}

/// Streams a fill's body to one client.
pub(crate) struct FillBody {
    fill: Arc<Fill>,
    /// Index in the body of the next chunk to read.
    next: usize,
    slot: usize,
}

impl Drop for FillBody {
    fn drop(&mut self) {
        let pump = {
            let mut b = self.fill.buffer();
            b.readers[self.slot] = None;
            b.release()
        };
        if let Some(w) = pump {
            w.wake();
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the origin's response broke off")]
pub(crate) struct BrokenFill;

impl http_body::Body for FillBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let fill = self.fill.clone();
        let mut b = fill.buffer();
        let Some(i) = self.next.checked_sub(b.first) else {
            // Freed before this reader read it: cannot happen, as only what
            // every reader has read is freed; end with an error, never a gap.
            return Poll::Ready(Some(Err(Box::new(BrokenFill))));
        };
        if let Some(chunk) = b.chunks.get(i).cloned() {
            self.next += 1;
            b.readers[self.slot] = Some(self.next);
            let pump = b.release();
            drop(b);
            if let Some(w) = pump {
                w.wake();
            }
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
        b.end == Some(true) && self.next >= b.first + b.chunks.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The fills in flight, by cache key.
#[derive(Default)]
pub(crate) struct Fills {
    map: Arc<Mutex<HashMap<String, Arc<Fill>>>>,
}

pub(crate) enum Role {
    /// Fetch and publish; dropping the leader ends the fill.
    Leader(Leader),
    Waiter(Arc<Fill>),
}

/// The one fetch of a key. However it ends, its waiters are told: dropping it
/// (the fetch done, cancelled or panicking) publishes [`Head::Abandoned`] if
/// nothing was published, breaks a body left unfinished, and takes the fill
/// out of the map, so no later request waits `lock_timeout` on a fetch that
/// is gone.
pub(crate) struct Leader {
    fill: Arc<Fill>,
    key: String,
    map: Arc<Mutex<HashMap<String, Arc<Fill>>>>,
}

impl Leader {
    pub(crate) fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// No new waiters (the readers it has keep reading).
    pub(crate) fn close(&self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.fill)) {
            map.remove(&self.key);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.fill.head.send_if_modified(|h| {
            let pending = matches!(h, Head::Pending);
            if pending {
                *h = Head::Abandoned;
            }
            pending
        });
        // A no-op when the body already ended.
        self.fill.finish(false);
        self.close();
    }
}

impl Fills {
    pub(crate) fn join(&self, key: &str) -> Role {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fill) = map.get(key) {
            return Role::Waiter(fill.clone());
        }
        let fill = Arc::new(Fill::new());
        map.insert(key.to_string(), fill.clone());
        Role::Leader(Leader { fill, key: key.to_string(), map: self.map.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(fills: &Fills, key: &str) -> Leader {
        match fills.join(key) {
            Role::Leader(l) => l,
            Role::Waiter(_) => panic!("a waiter"),
        }
    }

    fn waiter(fills: &Fills, key: &str) -> Arc<Fill> {
        match fills.join(key) {
            Role::Waiter(f) => f,
            Role::Leader(_) => panic!("a leader"),
        }
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters_at_once() {
        let fills = Fills::default();
        let lead = leader(&fills, "k");
        let fill = waiter(&fills, "k");
        let waiting = tokio::spawn(async move { fill.head(Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        drop(lead); // as when the fetch's task is cancelled or panics
        let head = tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("no lock_timeout wait");
        assert!(matches!(head.unwrap(), Some(Head::Abandoned)));
        // The next request leads a new fetch instead of waiting on the dead one.
        let _next = leader(&fills, "k");
    }

    #[tokio::test]
    async fn a_leader_dropped_mid_body_breaks_it_for_readers() {
        let fills = Fills::default();
        let lead = leader(&fills, "k");
        lead.fill().publish(Head::Released);
        let reader = lead.fill().body().unwrap();
        lead.fill().push(Bytes::from_static(b"part"));
        drop(lead);
        use http_body_util::BodyExt;
        let read = tokio::time::timeout(Duration::from_secs(1), reader.collect()).await.unwrap();
        assert!(read.is_err(), "a body cut off is an error, never a short clean end");
    }

    #[tokio::test]
    async fn a_head_that_never_comes_times_out() {
        let fills = Fills::default();
        let _lead = leader(&fills, "k");
        let fill = waiter(&fills, "k");
        assert!(fill.head(Duration::from_millis(20)).await.is_none());
    }
}
