//! A response body read off its origin connection: pieces split off the
//! connection's read buffer as they come. Once it has ended, a connection
//! that may carry another request goes back to its pool; one dropped before
//! the end (or that failed) closes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::Conn;
use super::upload::Upload;
use crate::http::body::{Body, BoxError};
use crate::http::h1::{Decoded, Decoder, Framing};
use crate::upstream::pool::Pool;

pub(super) struct Reading {
    /// The connection while the body is being read.
    conn: Option<Conn>,
    /// The request body, while the origin has answered before all of it was sent.
    upload: Option<Upload>,
    decoder: Decoder,
    reuse: bool,
    pool: Option<Arc<Pool>>,
}

impl Reading {
    /// The body `framing` delimits on `conn`; an empty one returns `conn` at once.
    pub(super) fn start(
        conn: Conn,
        upload: Option<Upload>,
        framing: Framing,
        reuse: bool,
        pool: Option<Arc<Pool>>,
    ) -> Body {
        let mut body = Reading { conn: Some(conn), upload, decoder: Decoder::new(framing), reuse, pool };
        if body.decoder.is_done() {
            body.finish();
            return Body::Empty;
        }
        Body::boxed(body)
    }

    /// The body has ended: back to the pool if the connection may be reused.
    /// The rest of a request body the origin answered early goes on, on a
    /// task of its own (as long as an idle connection may live), as hyper's does.
    fn finish(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let (true, true, Some(pool)) = (self.reuse, conn.read.is_empty(), self.pool.take()) else { return };
        let Some(mut upload) = self.upload.take() else { return pool.checkin_own(conn) };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let sent = std::future::poll_fn(|cx| upload.poll_send(&mut conn.io, &mut conn.write, cx));
            if let Ok(Ok(())) = tokio::time::timeout(pool.idle_timeout(), sent).await
                && conn.reusable()
            {
                pool.checkin_own(conn);
            }
        });
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl http_body::Body for Reading {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let (Some(up), Some(conn)) = (this.upload.as_mut(), this.conn.as_mut()) {
            match up.poll_send(&mut conn.io, &mut conn.write, cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => this.upload = None,
                // The request body failed or could not be written: the response may still be whole.
                Poll::Ready(Err(_)) => {
                    this.upload = None;
                    this.reuse = false;
                }
            }
        }
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            let decoded = match this.decoder.decode(&mut conn.read) {
                Ok(d) => d,
                Err(e) => return this.fail(e),
            };
            let frame = match decoded {
                Decoded::Data(data) => Frame::data(data),
                Decoded::Trailers(trailers) => Frame::trailers(trailers),
                Decoded::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoded::More => {
                    match ready!(conn.poll_fill(cx)) {
                        Ok(0) => {
                            // The origin closed: the end of a close-delimited body, else cut short.
                            this.reuse = false;
                            if let Err(e) = this.decoder.eof() {
                                return this.fail(e);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => return this.fail(e),
                    }
                    continue;
                }
            };
            if this.decoder.is_done() {
                this.finish();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
