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
//! [`Storing`] tells the body's reader when that happened.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::body::{Body, BoxError};

pub(crate) type Commit = Box<dyn FnOnce(Bytes) + Send + Sync>;

/// Whether a [`TeeBody`] still keeps its copy.
#[derive(Clone, Default)]
pub(crate) struct Storing(Arc<AtomicBool>);

impl Storing {
    /// False once the body is known not to be stored (too large, no budget, broken).
    pub(crate) fn still(&self) -> bool {
        !self.0.load(Ordering::Relaxed)
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
        expected: Option<u64>,
        commit: Option<Commit>,
        // What is kept holds this much of the budget.
        reserved: Option<OwnedSemaphorePermit>,
        budget: Arc<Budget>,
        storing: Storing,
    }

    impl PinnedDrop for TeeBody {
        fn drop(this: Pin<&mut Self>) {
            // hyper never polls a body that is already at its end (an empty one).
            let this = this.project();
            if let Some(commit) = this.commit.take()
                && http_body::Body::is_end_stream(&*this.inner)
                && this.expected.is_none_or(|n| n == *this.len)
            {
                commit(join(std::mem::take(this.chunks), *this.len));
            }
        }
    }
}

impl TeeBody {
    /// `expected` is the response's Content-Length, if any; bodies over `limit`
    /// are not kept. `reserved` is the budget taken for an expected length up
    /// front; without it the body takes from `budget` chunk by chunk.
    pub(crate) fn new(
        inner: Body,
        expected: Option<u64>,
        limit: u64,
        (budget, reserved): (Arc<Budget>, Option<OwnedSemaphorePermit>),
        commit: Commit,
    ) -> TeeBody {
        let commit = (expected.is_none_or(|n| n <= limit)).then_some(commit);
        let storing = Storing::default();
        storing.0.store(commit.is_none(), Ordering::Relaxed);
        TeeBody { inner, chunks: Vec::new(), len: 0, limit, expected, commit, reserved, budget, storing }
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
    storing.0.store(true, Ordering::Relaxed);
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if this.commit.is_none() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.len += data.len() as u64;
                    let fits = *this.len <= *this.limit
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
                    } else {
                        give_up(this.commit, this.chunks, this.reserved, this.storing);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => give_up(this.commit, this.chunks, this.reserved, this.storing),
            Poll::Ready(None) => {
                let complete = this.expected.is_none_or(|n| n == *this.len);
                if let Some(commit) = this.commit.take()
                    && complete
                {
                    commit(join(std::mem::take(this.chunks), *this.len));
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
