//! A body that streams to the client and keeps a copy for the cache.
//!
//! Frames pass through untouched; each data frame's `Bytes` is cloned (a
//! reference count, not a copy) into a list. The end is reported exactly once:
//! a clean end whose length matches the declared Content-Length hands the whole
//! body to `commit`; an error, an overrun of the size limit, or the client going
//! away (the body dropped early) discards it. Nothing partial is ever stored.
//!
//! What is kept counts against one budget shared by every body being stored
//! (`cache.fill_memory`), so many large fetches at once cannot hold more than
//! it: a body whose next chunk does not fit stops being kept and only streams.
//! [`Storing`] tells the body's reader when that happened. With a disk tier,
//! such a body goes to disk instead, through a [`Sink`] (see [`super::spill`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::spill::{SPILL_UNKNOWN_ABOVE, STREAM_ABOVE, Sink, Spill};
use crate::http::body::{Body, BoxError};

pub(crate) type Commit = Box<dyn FnOnce(Bytes) + Send + Sync>;

/// Whether a [`TeeBody`] still keeps its copy, and where; and when what it
/// kept is in the memory tier.
#[derive(Clone, Default)]
pub(crate) struct Storing(Arc<AtomicU8>, Remembered);

/// Says when a stored body is in the memory tier (or will not be), so that the
/// fetch ends for its clients only then: a request right after finds it.
#[derive(Clone, Default)]
pub(crate) struct Remembered(Arc<(std::sync::atomic::AtomicBool, tokio::sync::Notify)>);

impl Remembered {
    /// In memory now, or never: either way, nothing to wait for.
    pub(crate) fn done(&self) {
        self.0.0.store(true, Ordering::Release);
        self.0.1.notify_waiters();
    }

    /// Waits for [`Remembered::done`], at most `limit`.
    pub(crate) async fn wait(&self, limit: std::time::Duration) {
        let notified = self.0.1.notified();
        if self.0.0.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }
}

const IN_MEMORY: u8 = 0;
const ON_DISK: u8 = 1;
const NOT: u8 = 2;

impl Storing {
    /// False once the body is known not to be stored (too large, no budget, broken).
    pub(crate) fn still(&self) -> bool {
        self.0.load(Ordering::Relaxed) != NOT
    }

    /// True while the body goes to disk as it streams (nothing of it is kept in memory).
    pub(crate) fn on_disk(&self) -> bool {
        self.0.load(Ordering::Relaxed) == ON_DISK
    }

    /// The same, told by `remembered` when the body is in memory.
    pub(crate) fn with(self, remembered: Remembered) -> Storing {
        Storing(self.0, remembered)
    }

    pub(crate) fn remembered(&self) -> &Remembered {
        &self.1
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
    }
}

/// Bytes of bodies being stored, at most (`cache.fill_memory`), in permits of one byte.
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    max: u32,
}

impl Budget {
    pub(crate) fn new(bytes: u64) -> Budget {
        let max = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        Budget { permits: Arc::new(Semaphore::new(max as usize)), max }
    }

    /// `n` bytes, if free now (a body larger than the whole budget never is).
    pub(crate) fn reserve(&self, n: u64) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok().filter(|&n| n <= self.max)?;
        self.permits.clone().try_acquire_many_owned(n).ok()
    }

    /// Bytes reserved now, for metrics.
    pub(crate) fn used(&self) -> u64 {
        u64::from(self.max) - self.permits.available_permits() as u64
    }
}

pin_project_lite::pin_project! {
    pub struct TeeBody {
        #[pin]
        inner: Body,
        chunks: Vec<Bytes>,
        len: u64,
        limit: u64,
        // Kept in memory up to this; past it the body spills to disk.
        keep_up_to: u64,
        expected: Option<u64>,
        commit: Option<Commit>,
        spill: Option<Spill>,
        sink: Option<Sink>,
        // What is kept holds this much of the budget.
        reserved: Option<OwnedSemaphorePermit>,
        budget: Arc<Budget>,
        storing: Storing,
    }

    impl PinnedDrop for TeeBody {
        fn drop(this: Pin<&mut Self>) {
            // hyper never polls a body that is already at its end (an empty one).
            let this = this.project();
            let whole = http_body::Body::is_end_stream(&*this.inner) && this.expected.is_none_or(|n| n == *this.len);
            if let Some(commit) = this.commit.take()
                && whole
            {
                commit(join(std::mem::take(this.chunks), *this.len));
            }
            if let Some(sink) = this.sink.take() {
                sink.finish(whole);
            }
        }
    }
}

impl TeeBody {
    /// `expected` is the response's Content-Length, if any; bodies over `limit`
    /// are not kept. `reserved` is the budget taken for an expected length up
    /// front; without it the body takes from `budget` chunk by chunk. With a
    /// `spill`, a body memory will not hold goes to disk; at once if there is
    /// no `reserved` for its `expected` length.
    pub(super) fn new(
        inner: Body,
        (expected, limit): (Option<u64>, u64),
        (budget, reserved): (Arc<Budget>, Option<OwnedSemaphorePermit>),
        commit: Commit,
        spill: Option<Spill>,
    ) -> TeeBody {
        let mut commit = (expected.is_none_or(|n| n <= limit)).then_some(commit);
        // A body of unknown length spills sooner: until it does, slow readers keep what it
        // read in the fill's buffer, whatever the budget says, so many at once would hold
        // up to the whole budget each.
        let keep_up_to = match (&spill, expected) {
            (None, _) => limit,
            (Some(_), Some(_)) => limit.min(STREAM_ABOVE),
            (Some(_), None) => limit.min(SPILL_UNKNOWN_ABOVE),
        };
        let storing = Storing::default();
        let (mut spill, mut sink) = (spill.filter(|_| commit.is_some()), None);
        if expected.is_some() && reserved.is_none() {
            sink = spill.take().map(Spill::start);
            commit = None;
        }
        storing.set(match (&commit, &sink) {
            (Some(_), _) => IN_MEMORY,
            (None, Some(_)) => ON_DISK,
            (None, None) => NOT,
        });
        TeeBody {
            inner,
            chunks: Vec::new(),
            len: 0,
            limit,
            keep_up_to,
            expected,
            commit,
            spill,
            sink,
            reserved,
            budget,
            storing,
        }
    }

    pub(crate) fn storing(&self) -> Storing {
        self.storing.clone()
    }
}

/// Stops keeping the copy.
fn give_up(
    commit: &mut Option<Commit>,
    chunks: &mut Vec<Bytes>,
    reserved: &mut Option<OwnedSemaphorePermit>,
    storing: &Storing,
) {
    *commit = None;
    *chunks = Vec::new();
    *reserved = None;
    storing.set(NOT);
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(sink) = this.sink.as_mut() {
            match sink.poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(true) => {}
                Poll::Ready(false) => {
                    *this.sink = None;
                    this.storing.set(NOT);
                }
            }
        }
        let polled = this.inner.poll_frame(cx);
        if let Some(sink) = this.sink.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        *this.len += data.len() as u64;
                        match *this.len <= *this.limit {
                            true => sink.push([data.clone()]),
                            false => {
                                *this.sink = None;
                                this.storing.set(NOT);
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    *this.sink = None;
                    this.storing.set(NOT);
                }
                Poll::Ready(None) => {
                    if let Some(sink) = this.sink.take() {
                        sink.finish(this.expected.is_none_or(|n| n == *this.len));
                    }
                }
                Poll::Pending => {}
            }
            return polled;
        }
        if this.commit.is_none() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.len += data.len() as u64;
                    let fits = *this.len <= *this.keep_up_to
                        && (this.expected.is_some() || {
                            match (this.budget.reserve(data.len() as u64), this.reserved.as_mut()) {
                                (Some(more), Some(held)) => {
                                    held.merge(more);
                                    true
                                }
                                (Some(more), None) => {
                                    *this.reserved = Some(more);
                                    true
                                }
                                (None, _) => false,
                            }
                        });
                    if fits {
                        this.chunks.push(data.clone());
                    } else if *this.len <= *this.limit
                        && let Some(spill) = this.spill.take()
                    {
                        // To disk from here, with what was kept so far.
                        let mut sink = spill.start();
                        this.chunks.push(data.clone());
                        sink.push(std::mem::take(this.chunks));
                        *this.commit = None;
                        *this.reserved = None;
                        *this.sink = Some(sink);
                        this.storing.set(ON_DISK);
                    } else {
                        give_up(this.commit, this.chunks, this.reserved, this.storing);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => give_up(this.commit, this.chunks, this.reserved, this.storing),
            Poll::Ready(None) => {
                let complete = this.expected.is_none_or(|n| n == *this.len);
                match this.commit.take() {
                    Some(commit) if complete => commit(join(std::mem::take(this.chunks), *this.len)),
                    Some(_) => this.storing.set(NOT),
                    None => {}
                }
                // Committed or not, nothing is kept from here on.
                *this.reserved = None;
            }
            Poll::Pending => {}
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

/// One `Bytes` from the chunks, in an allocation of its own: a chunk is a
/// slice of the connection's read buffer, and keeping it would keep the whole
/// buffer alive (a 1 KiB body pinning 8 KiB or more) behind the tier's accounting.
fn join(chunks: Vec<Bytes>, len: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(len as usize);
    for c in chunks {
        out.extend_from_slice(&c);
    }
    out.freeze()
}
