//! A body that streams to the client and keeps a copy for the cache.
//!
//! Frames pass through untouched; each data frame's `Bytes` is cloned (a
//! reference count, not a copy) into a list. The end is reported exactly once:
//! a clean end whose length matches the declared Content-Length hands the whole
//! body to `commit`; an error, an overrun of the size limit, or the client going
//! away (the body dropped early) discards it. Nothing partial is ever stored.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use crate::body::{Body, BoxError};

pub type Commit = Box<dyn FnOnce(Bytes) + Send + Sync>;

pin_project_lite::pin_project! {
    pub struct TeeBody {
        #[pin]
        inner: Body,
        chunks: Vec<Bytes>,
        len: u64,
        limit: u64,
        expected: Option<u64>,
        commit: Option<Commit>,
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
    /// `expected` is the response's Content-Length, if any; bodies over `limit` are not kept.
    pub fn new(inner: Body, expected: Option<u64>, limit: u64, commit: Commit) -> TeeBody {
        let commit = (expected.is_none_or(|n| n <= limit)).then_some(commit);
        TeeBody { inner, chunks: Vec::new(), len: 0, limit, expected, commit }
    }
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
                    if *this.len > *this.limit {
                        *this.commit = None;
                        this.chunks.clear();
                    } else {
                        this.chunks.push(data.clone());
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                *this.commit = None;
                this.chunks.clear();
            }
            Poll::Ready(None) => {
                let complete = this.expected.is_none_or(|n| n == *this.len);
                if let Some(commit) = this.commit.take()
                    && complete
                {
                    commit(join(std::mem::take(this.chunks), *this.len));
                }
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
