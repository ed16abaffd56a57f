//! relais's own HTTP/1.1 origin connections (`server.engine = "relais"`).
//!
//! A [`Conn`] is a stream and two buffers kept for its whole life: the read
//! buffer response heads are parsed from and bodies split off (never copied),
//! and the write buffer request heads and chunk lines are built in. [`send`]
//! writes the head with the body's first bytes in one vectored write, streams
//! the rest, and reads the response head, all on the request's own task; the
//! response body ([`body::Reading`]) then reads the connection, and hands it
//! back to its pool when the response has ended and the connection may carry
//! another. While the request body goes out the response is read too, so an
//! origin that answers early (and one that will not read on before it has
//! answered) is heard; the rest of the body still goes out, driven by the
//! response body, then (once that has ended) by a task of its own.

mod body;
mod head;
#[cfg(test)]
mod tests;
mod upload;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::BytesMut;
use http::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt;

use super::connect::Stream;
use super::pool::Pool;
use crate::http::body::{Body, BoxError};
use crate::http::interim::Interim;
use crate::http::upgrade::OnUpgrade;
use head::Sending;
use upload::{Upload, UploadError};

/// The first read's size; a read that fills it doubles the next, up to [`MAX_READ`].
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;

/// What went wrong on an origin connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed before the response head")]
    Closed,
    #[error("{0}")]
    Head(&'static str),
    /// The request body failed (the client's side): never the origin's fault.
    #[error("request body failed: {0}")]
    Body(#[source] BoxError),
}

/// A request that failed on a connection.
pub(super) enum Failed {
    /// Nothing of it was written, so it may go on another connection.
    Unsent(Box<Request<Body>>, Error),
    Sent(Error),
}

/// One origin connection.
pub(super) struct Conn {
    io: Stream,
    read: BytesMut,
    write: BytesMut,
    /// The next read's size.
    want: usize,
    pub(super) idle_since: Instant,
}

impl Conn {
    pub(super) fn new(io: Stream) -> Conn {
        Conn { io, read: BytesMut::new(), write: BytesMut::new(), want: FIRST_READ, idle_since: Instant::now() }
    }

    /// Still open, with nothing unasked-for to read. Polls with a waker that
    /// does nothing: whoever checks it out next polls it with theirs.
    pub(super) fn reusable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_fill(&mut cx).is_pending()
    }

    /// Reads into the read buffer; `Ok(0)` when the origin has closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.want / 2 {
            self.read.reserve(self.want);
        }
        let room = self.read.capacity() - self.read.len();
        let n = ready!(std::pin::pin!(self.io.read_buf(&mut self.read)).poll(cx))?;
        if n == room && self.want < MAX_READ {
            self.want *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// Sends `req` on `conn` and reads the response head. The response body
/// returns the connection to `pool` once it has ended, when there is one and
/// the connection may be reused; else the connection closes.
pub(super) async fn send(
    mut conn: Conn,
    req: Request<Body>,
    pool: Option<Arc<Pool>>,
) -> Result<Response<Body>, Failed> {
    let (mut parts, body) = req.into_parts();
    let sending = Sending::of(&parts, &body);
    conn.write.clear();
    head::write_request(&parts, sending, &mut conn.write);
    let mut upload = Some(Upload::new(sending, body));
    let interim = parts.extensions.remove::<Interim>();
    let mut broken = None;
    let head = std::future::poll_fn(|cx| {
        if let Some(up) = upload.as_mut() {
            match up.poll_send(&mut conn.io, &mut conn.write, cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => upload = None,
                Poll::Ready(Err(UploadError::Unsent(e))) => return Poll::Ready(Err((true, e.into()))),
                Poll::Ready(Err(UploadError::Body(e))) => return Poll::Ready(Err((false, Error::Body(e)))),
                // The origin may have answered already, and then closed: its answer is read first.
                Poll::Ready(Err(UploadError::Io(e))) => {
                    upload = None;
                    broken = Some(e);
                }
            }
        }
        conn.poll_head(cx, &parts.method, interim.as_ref(), &mut broken)
    })
    .await;
    let head = match head {
        Ok(head) => head,
        Err((true, e)) => {
            if let Some(interim) = interim {
                parts.extensions.insert(interim);
            }
            return Err(Failed::Unsent(Box::new(Request::from_parts(parts, Body::Empty)), e));
        }
        Err((false, e)) => return Err(Failed::Sent(e)),
    };
    let reuse = head.reuse && broken.is_none() && !head::asks_close(&parts);
    let mut res = Response::new(Body::Empty);
    *res.status_mut() = head.status;
    *res.version_mut() = head.version;
    *res.headers_mut() = head.headers;
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        res.extensions_mut().insert(OnUpgrade::ready(conn.io, conn.read.freeze()));
        return Ok(res);
    }
    *res.body_mut() = body::Reading::start(conn, upload, head.framing, reuse, pool);
    Ok(res)
}

impl Conn {
    /// The final response head: informational ones before it are passed on
    /// (to the client, when it can take them) or dropped. A failed write in
    /// `broken` is the error if no head comes.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
        interim: Option<&Interim>,
        broken: &mut Option<io::Error>,
    ) -> Poll<Result<head::Head, (bool, Error)>> {
        let sent = |e| Poll::Ready(Err((false, e)));
        loop {
            if !self.read.is_empty() {
                match head::parse_response(&mut self.read, method) {
                    Err(e) => return sent(e),
                    Ok(None) => {}
                    Ok(Some(h)) if h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS => {
                        if let Some(interim) = interim {
                            interim.send(h.status, h.headers);
                        }
                        continue;
                    }
                    Ok(Some(h)) => return Poll::Ready(Ok(h)),
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return sent(broken.take().map_or(Error::Closed, Error::Io)),
                Ok(_) => {}
                Err(e) => return sent(Error::Io(broken.take().unwrap_or(e))),
            }
        }
    }
}
