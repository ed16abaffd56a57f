//! A request body on its way to the origin: the head and the body's first
//! bytes in one vectored write when they are ready together, then each piece
//! as it comes, framed by its length or chunked. Body bytes are never copied:
//! a chunk line, the piece and its tail go out in one vectored write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Body as _;
use tokio::io::AsyncWrite;

use super::head::Sending;
use crate::http::body::{Body, BoxError};
use crate::http::h1::encode::{LAST_CHUNK, chunk_line, last_chunk};
use crate::upstream::connect::Stream;

pub(super) struct Upload {
    /// The body while some of it is still to take.
    body: Option<Body>,
    chunked: bool,
    /// Bytes a body with a length still owes.
    left: u64,
    /// Staged after the write buffer (the head, a chunk line): body bytes, then a static tail.
    data: Bytes,
    post: &'static [u8],
    /// The body's first bytes have been looked for.
    started: bool,
    /// Something has been written.
    wrote: bool,
    /// The request has no body.
    bodiless: bool,
    flushed: bool,
}

pub(super) enum UploadError {
    /// Nothing was written and there is no body: the request is whole again.
    Unsent(io::Error),
    Io(io::Error),
    /// The request body failed (the client's side).
    Body(BoxError),
}

impl Upload {
    /// Sends what `write` holds (the head), then `body` as `sending` frames it.
    pub(super) fn new(sending: Sending, body: Body) -> Upload {
        let bodiless = matches!(sending, Sending::Empty { .. });
        Upload {
            body: (!bodiless).then_some(body),
            chunked: sending == Sending::Chunked,
            left: match sending {
                Sending::Length(n) => n,
                _ => 0,
            },
            data: Bytes::new(),
            post: b"",
            started: bodiless,
            wrote: false,
            bodiless,
            flushed: true,
        }
    }

    fn staged(&self, write: &BytesMut) -> bool {
        !write.is_empty() || !self.data.is_empty() || !self.post.is_empty()
    }

    /// Writes on until the whole request has gone out (`Ready(Ok)`), or it cannot go on now.
    pub(super) fn poll_send(
        &mut self,
        io: &mut Stream,
        write: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        if !std::mem::replace(&mut self.started, true) {
            // The body's first bytes, if they are ready, go with the head.
            // Not ready: the head goes alone.
            let _ready = self.stage(write, cx).map_err(UploadError::Body)?;
        }
        loop {
            if self.staged(write) {
                let bufs = [IoSlice::new(write), IoSlice::new(&self.data), IoSlice::new(self.post)];
                match Pin::new(&mut *io).poll_write_vectored(cx, &bufs) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(UploadError::Io(io::ErrorKind::WriteZero.into()))),
                    Poll::Ready(Ok(n)) => {
                        self.advance(write, n);
                        self.wrote = true;
                        self.flushed = false;
                    }
                    // The server saw none of it, and there is no body that is gone.
                    Poll::Ready(Err(e)) if !self.wrote && self.bodiless => {
                        return Poll::Ready(Err(UploadError::Unsent(e)));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(UploadError::Io(e))),
                }
                continue;
            }
            if !self.flushed {
                std::task::ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(UploadError::Io)?;
                self.flushed = true;
            }
            if self.body.is_none() {
                return Poll::Ready(Ok(()));
            }
            if self.stage(write, cx).map_err(UploadError::Body)?.is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn advance(&mut self, write: &mut BytesMut, mut n: usize) {
        let w = n.min(write.len());
        write.advance(w);
        n -= w;
        let d = n.min(self.data.len());
        self.data.advance(d);
        n -= d;
        self.post = &self.post[n..];
        if write.is_empty() {
            write.clear();
        }
    }

    /// Takes the body's next frame, if it is ready, into what is staged.
    fn stage(&mut self, write: &mut BytesMut, cx: &mut Context<'_>) -> Result<Poll<()>, BoxError> {
        let Some(body) = self.body.as_mut() else { return Ok(Poll::Ready(())) };
        let frame = match Pin::new(body).poll_frame(cx) {
            Poll::Pending => return Ok(Poll::Pending),
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(None) => {
                self.end(write)?;
                return Ok(Poll::Ready(()));
            }
        };
        let ended = self.body.as_ref().is_some_and(|b| b.is_end_stream());
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) if self.chunked => {
                chunk_line(data.len(), write);
                self.data = data;
                self.post = if ended { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                if ended {
                    self.body = None;
                    return Ok(Poll::Ready(()));
                }
            }
            Ok(data) => {
                if data.len() as u64 > self.left {
                    return Err("request body longer than its length".into());
                }
                self.left -= data.len() as u64;
                self.data = data;
            }
            Err(frame) => {
                if let (Some(trailers), true) = (frame.trailers_ref(), self.chunked) {
                    last_chunk(trailers, write);
                    self.body = None;
                    return Ok(Poll::Ready(()));
                }
            }
        }
        if ended {
            self.end(write)?;
        }
        Ok(Poll::Ready(()))
    }

    /// The body has ended: the last chunk, or a check that the length was kept.
    fn end(&mut self, write: &mut BytesMut) -> Result<(), BoxError> {
        self.body = None;
        if self.chunked {
            write.put_slice(LAST_CHUNK);
        } else if self.left > 0 {
            return Err("request body shorter than its length".into());
        }
        Ok(())
    }
}
