//! relais's own HTTP/1.1 server (`server.engine = "relais"`): one task per
//! connection, which reads each request head into one buffer it keeps,
//! drives the request's handler itself (no task per request), feeds the
//! request body from the socket only as the handler asks for it, and writes
//! the response head with the body's first bytes in one `writev`.
//!
//! Requests are served one after another, so pipelined requests are answered
//! in order. A head the parser refuses is answered with its 4xx and the
//! connection closed; so is a request body whose framing breaks. Informational
//! responses from the origin (103 Early Hints) are written as they come,
//! before the final one.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::gather::Gather;
use super::{LINGER, Settings, log_refused};
use crate::http::body::{Body, BoxError};
use crate::http::h1::head::{self, Out, RequestHead};
use crate::http::h1::incoming::{self, Feed};
use crate::http::h1::{Decoded, Decoder, Framing, encode};
use crate::http::interim::Interim;
use crate::http::upgrade::{OnUpgrade, Rewind, Upgraded};
use crate::metrics::Metrics;

/// What one read asks of the socket; a body piece is at most this.
const READ: usize = 16 * 1024;
/// After an answer that left the request body unread, how much of it is read
/// and dropped (and for how long) before closing, so the client sees the
/// answer rather than a reset.
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

struct Conn<I> {
    io: Gather<I>,
    /// What was read and not yet parsed: the next head, or body bytes.
    buf: BytesMut,
    /// Written bytes waiting to go out (a head, a 100 or 103).
    out: BytesMut,
    eof: bool,
    /// Where the origin's informational heads for the request in flight come.
    interim: Interim,
}

/// Serves HTTP/1.1 on `io` until the client closes, a timeout, an error, or
/// the stop signal. `interim` is the one its `Conn` carries.
pub(super) async fn serve<I, H, F, B>(
    io: Gather<I>,
    peer: SocketAddr,
    s: Settings,
    handler: H,
    mut stop: watch::Receiver<bool>,
    metrics: &Metrics,
    interim: Interim,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>) -> F,
    F: Future<Output = Result<Response<B>, std::convert::Infallible>>,
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    let _open = metrics.connection_open(s.listener, false);
    let mut c = Conn { io, buf: BytesMut::new(), out: BytesMut::new(), eof: false, interim };
    let max_head = usize::try_from(s.max_header_size).unwrap_or(usize::MAX).max(1024);
    let mut served = 0usize;
    let mut stopping = *stop.borrow();
    loop {
        // The head, within header_read_timeout of the previous request's end
        // (a new connection's first bytes were read under the same clock).
        let wait = if served == 0 { s.header_read_timeout } else { s.header_read_timeout.min(s.idle_timeout) };
        let mut deadline = Instant::now() + wait;
        // How far the buffer was searched for the head's end: a client that
        // sends its head a byte at a time costs one scan, not one parse per byte.
        let mut scan = Scan::default();
        let parsed = loop {
            if head_may_end(&mut c.buf, &mut scan) || c.buf.len() > max_head {
                match head::parse_request(&c.buf, max_head, s.max_headers) {
                    Ok(Some(found)) => break Ok(found),
                    Ok(None) => {}
                    Err(refusal) => break Err(refusal),
                }
            }
            if c.eof {
                return;
            }
            if stopping {
                deadline = deadline.min(Instant::now() + LINGER);
            }
            let read = tokio::select! {
                read = c.read() => read,
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(%peer, "no complete request within the header timeout; closed");
                    return;
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    continue;
                }
            };
            match read {
                Ok(0) if c.buf.is_empty() => return,
                Ok(0) => {
                    tracing::debug!(%peer, "connection closed inside a request head");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "connection failed while reading a request head");
                    return;
                }
            }
        };
        let (len, head) = match parsed {
            Ok(found) => found,
            Err(refusal) => {
                tracing::debug!(%peer, status = refusal.status.as_u16(), reason = refusal.reason, "request refused");
                log_refused(peer, refusal.status.as_u16(), &s, metrics);
                let _ = c.io.write_all(&head::refusal(refusal.status)).await;
                c.linger().await;
                return;
            }
        };
        let _ = c.buf.split_to(len);
        served += 1;
        let last = served >= s.max_requests || stopping || *stop.borrow();
        match c.exchange(head, last, max_head, &handler).await {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close { linger }) => {
                if linger {
                    c.linger().await;
                } else {
                    let _ = c.io.shutdown().await;
                }
                return;
            }
            Ok(Next::Upgraded(to)) => {
                let rest = c.buf.split().freeze();
                let _ = to.send(Box::new(Rewind::new(rest, c.io)) as Upgraded);
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                return;
            }
        }
        if c.buf.is_empty() {
            // Idle until the next request: hold no buffer (the next read makes one).
            c.buf = BytesMut::new();
        }
    }
}

/// How far a buffer was searched for the end of a head.
#[derive(Default)]
struct Scan {
    searched: usize,
    /// The request line has ended (and was parsed once, to refuse garbage early).
    line: bool,
}

/// Whether the head in `buf` should be parsed now: its request line has just
/// ended, a line end followed by an empty line (CRLF or bare LF) or a bare CR
/// came after what was searched before. A client that sends its head a byte
/// at a time so costs a scan of each byte, not a parse of the whole head per
/// byte. Empty lines before a request line (RFC 9112 section 2.2) are dropped
/// first, so they never count.
fn head_may_end(buf: &mut BytesMut, scan: &mut Scan) -> bool {
    loop {
        let skip = if buf.starts_with(b"\r\n") {
            2
        } else if buf.starts_with(b"\n") {
            1
        } else {
            break;
        };
        let _ = buf.split_to(skip);
        *scan = Scan::default();
    }
    let from = scan.searched.saturating_sub(2);
    scan.searched = buf.len();
    let mut ends = buf[from..].iter().enumerate().filter(|&(_, &b)| b == b'\n' || b == b'\r').map(|(i, _)| from + i);
    let line = &mut scan.line;
    ends.any(|at| match (buf[at], buf.get(at + 1)) {
        (b'\n', _) if !*line => {
            *line = true;
            true
        }
        (b'\n', _) => buf[at + 1..].starts_with(b"\n") || buf[at + 1..].starts_with(b"\r\n"),
        // A bare CR: the parser refuses it at once.
        (_, Some(&next)) => next != b'\n',
        (_, None) => false,
    })
}

/// What the connection does after an exchange.
enum Next {
    KeepAlive,
    /// Close; `linger` when the client may still be sending a body.
    Close {
        linger: bool,
    },
    /// The response switched protocols: hand the connection over.
    Upgraded(tokio::sync::oneshot::Sender<Upgraded>),
}

/// The request body's feeding, while the handler holds the body.
struct Feeding {
    feed: Feed,
    decoder: Decoder,
    /// `100 Continue` owed at the body's first read.
    expect_continue: bool,
    /// Framing broke or the client closed inside the body.
    broken: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    async fn read(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx)).await
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ / 4 {
            self.buf.reserve(READ);
        }
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        self.eof |= n == 0;
        Poll::Ready(Ok(n))
    }

    /// Writes out what `out` holds.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let _ = self.out.split_to(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Feeds the body what it asks for: reads the socket only then.
    fn pump(&mut self, cx: &mut Context<'_>, feeding: &mut Option<Feeding>) {
        let Some(f) = feeding else { return };
        loop {
            if f.decoder.is_done() || f.broken || !f.feed.wants(cx) {
                return;
            }
            if std::mem::take(&mut f.expect_continue) {
                self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            match f.decoder.decode(&mut self.buf) {
                Ok(Decoded::Data(data)) => f.feed.put(Ok(Frame::data(data)), f.decoder.is_done()),
                // Request trailers are not passed on (as on hyper's engine): the
                // origin gets the body alone, framed by relais.
                Ok(Decoded::Trailers(_)) => f.feed.end(),
                Ok(Decoded::End) => f.feed.end(),
                Ok(Decoded::More) => {
                    if !self.out.is_empty() && self.poll_out(cx).is_ready() {
                        // A 100 written (or failed: the read below finds out).
                    }
                    match self.poll_read(cx) {
                        Poll::Ready(Ok(0)) => {
                            let e = f.decoder.eof().err().map_or("", |_| "closed inside the request body");
                            f.feed.put(Err(e.into()), true);
                            f.broken = true;
                        }
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Ready(Err(e)) => {
                            f.feed.put(Err(Box::new(e)), true);
                            f.broken = true;
                        }
                        Poll::Pending => return,
                    }
                }
                Err(e) => {
                    f.feed.put(Err(Box::new(e)), true);
                    f.broken = true;
                }
            }
        }
    }

    /// Whether the client has gone while no body is being read from it: its
    /// end of the connection read (nginx's 499, hyper's default). What a
    /// pipelining client sends meanwhile is kept, up to `max_head`. The last
    /// request of a connection (`Connection: close`) is not watched: its
    /// client may well have shut its side already.
    fn gone(&mut self, cx: &mut Context<'_>, feeding: &Option<Feeding>, max_head: usize) -> Option<io::Error> {
        if max_head == 0 || feeding.as_ref().is_some_and(|f| !f.decoder.is_done() && !f.broken) {
            return None;
        }
        while self.buf.len() < max_head && !self.eof {
            match self.poll_read(cx) {
                Poll::Ready(Ok(0)) => return Some(io::Error::new(io::ErrorKind::UnexpectedEof, "client closed")),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Some(e),
                Poll::Pending => return None,
            }
        }
        None
    }

    /// Writes informational heads the origin sent, as they come.
    fn interim(&mut self, cx: &mut Context<'_>, interim: &Interim) -> io::Result<()> {
        while let Poll::Ready((status, headers)) = interim.poll_next(cx) {
            head::write_interim(status, &headers, &mut self.out);
        }
        match self.poll_out(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// One request and its response.
    async fn exchange<H, F, B>(
        &mut self,
        head: RequestHead,
        last: bool,
        max_head: usize,
        handler: &H,
    ) -> io::Result<Next>
    where
        H: Fn(Request<Body>) -> F,
        F: Future<Output = Result<Response<B>, std::convert::Infallible>>,
        B: http_body::Body<Data = Bytes, Error = BoxError>,
    {
        let RequestHead { request, framing, keep_alive, expect_continue, trailers } = head;
        let watch = if keep_alive { max_head } else { 0 };
        let mut keep_alive = keep_alive && !last;
        let client = request.version();
        let head_request = request.method() == http::Method::HEAD;
        let (body, mut feeding) = match framing {
            Framing::Length(0) => (Body::empty(), None),
            _ => {
                let length = match framing {
                    Framing::Length(n) => Some(n),
                    _ => None,
                };
                let (inner, feed) = incoming::pair(length);
                let feeding = Feeding { feed, decoder: Decoder::new(framing), expect_continue, broken: false };
                (Body::Own { inner }, Some(feeding))
            }
        };
        let mut request = request.map(|()| body);
        let interim = self.interim.clone();
        interim.next_request();
        // Only a request that asks to upgrade gets the way to hand the connection over.
        let mut upgrade = None;
        if request.headers().contains_key(http::header::UPGRADE) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            request.extensions_mut().insert(OnUpgrade::own(rx));
            upgrade = Some(tx);
        }

        let mut handling = pin!(handler(request));
        let response = poll_fn(|cx| {
            self.pump(cx, &mut feeding);
            if let Err(e) = self.interim(cx, &interim) {
                return Poll::Ready(Err(e));
            }
            if let Some(e) = self.gone(cx, &feeding, watch) {
                return Poll::Ready(Err(e));
            }
            handling.as_mut().poll(cx).map(|Ok(res)| Ok(res))
        })
        .await?;
        let (parts, body) = response.into_parts();
        let mut body = pin!(body);

        if parts.status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(to) = upgrade
        {
            head::write_response(&parts, false, client, None, &mut keep_alive, &mut self.out);
            poll_fn(|cx| self.poll_out(cx)).await?;
            self.io.flush().await?;
            return Ok(Next::Upgraded(to));
        }
        let length = body.size_hint().exact();
        let out = head::write_response(&parts, head_request, client, length, &mut keep_alive, &mut self.out);
        let send_trailers = trailers && out == Out::Chunked;
        let mut left = match out {
            Out::Length(n) => n,
            _ => u64::MAX,
        };
        let mut whole = true;
        if out != Out::None {
            loop {
                let frame = poll_fn(|cx| {
                    self.pump(cx, &mut feeding);
                    match body.as_mut().poll_frame(cx) {
                        Poll::Pending => {
                            if let Some(e) = self.gone(cx, &feeding, watch) {
                                return Poll::Ready(Some(Err(Box::new(e) as BoxError)));
                            }
                            // Nothing to send with the head yet: send it alone.
                            if let Poll::Ready(Err(e)) = self.poll_out(cx) {
                                return Poll::Ready(Some(Err(Box::new(e) as BoxError)));
                            }
                            Poll::Pending
                        }
                        ready => ready,
                    }
                })
                .await;
                match frame {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "response body failed; connection closed");
                        whole = false;
                        break;
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(mut data) => {
                            if data.is_empty() {
                                continue;
                            }
                            if out == Out::Chunked {
                                encode::chunk_line(data.len(), &mut self.out);
                                self.send(&data, b"\r\n").await?;
                            } else {
                                if data.len() as u64 > left {
                                    // More than the length said: cut, and end the connection.
                                    data.truncate(left as usize);
                                    whole = false;
                                }
                                left -= data.len() as u64;
                                self.send(&data, b"").await?;
                                if !whole {
                                    break;
                                }
                            }
                        }
                        Err(frame) => {
                            if let (Ok(t), true) = (frame.into_trailers(), send_trailers) {
                                encode::last_chunk(&t, &mut self.out);
                                left = 0;
                                break;
                            }
                        }
                    },
                }
            }
            if whole {
                match out {
                    Out::Chunked if left != 0 => self.out.extend_from_slice(encode::LAST_CHUNK),
                    Out::Length(_) if left != 0 => whole = false,
                    _ => {}
                }
            }
        }
        poll_fn(|cx| self.poll_out(cx)).await?;
        if !whole || out == Out::Close {
            return Ok(Next::Close { linger: false });
        }
        // What the handler left of the body is finished from what has arrived
        // already; a body that has not all arrived (a client still waiting
        // for its `100 Continue`, say) ends the connection.
        let unread = match &mut feeding {
            None => false,
            Some(f) if f.broken => return Ok(Next::Close { linger: false }),
            Some(f) => !self.finish_body(f),
        };
        if unread {
            return Ok(Next::Close { linger: true });
        }
        Ok(if keep_alive { Next::KeepAlive } else { Next::Close { linger: false } })
    }

    /// Writes `out` (a head or chunk line), `data` and `tail` in one vectored write.
    async fn send(&mut self, data: &[u8], tail: &[u8]) -> io::Result<()> {
        let mut parts: [&[u8]; 3] = [&[], data, tail];
        let head = std::mem::take(&mut self.out);
        parts[0] = &head;
        let mut total: usize = parts.iter().map(|p| p.len()).sum();
        while total > 0 {
            let slices = [IoSlice::new(parts[0]), IoSlice::new(parts[1]), IoSlice::new(parts[2])];
            let mut n = self.io.write_vectored(&slices).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            total -= n;
            for p in &mut parts {
                let k = n.min(p.len());
                *p = &p[k..];
                n -= k;
            }
        }
        // Keep the buffer's allocation for the next head.
        let mut head = head;
        head.clear();
        self.out = head;
        Ok(())
    }

    /// Decodes what is left of the request body from what was read already;
    /// true if it reached its end.
    fn finish_body(&mut self, f: &mut Feeding) -> bool {
        let mut drained = 0;
        while !f.decoder.is_done() {
            match f.decoder.decode(&mut self.buf) {
                Ok(Decoded::Data(d)) => drained += d.len(),
                Ok(Decoded::Trailers(_) | Decoded::End) => {}
                Ok(Decoded::More) | Err(_) => return false,
            }
            if drained > READ * 4 {
                return false;
            }
        }
        true
    }

    /// Closes after an answer the client may not have read all of: stops
    /// writing, then reads and drops what it still sends, for a bounded time,
    /// so the answer is not lost to a reset.
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let mut read = 0;
        let end = Instant::now() + LINGER_TIME;
        while read < LINGER_BYTES && !self.eof {
            self.buf.clear();
            match tokio::time::timeout_at(end, self.read()).await {
                Ok(Ok(n)) if n > 0 => read += n,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{Scan, head_may_end};

    fn may_end(bytes: &[u8]) -> bool {
        head_may_end(&mut BytesMut::from(bytes), &mut Scan { line: true, ..Scan::default() })
    }

    #[test]
    fn a_head_is_parsed_only_once_it_may_have_ended() {
        let head = b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let mut ends = Vec::new();
        let (mut buf, mut scan) = (BytesMut::new(), Scan::default());
        for (n, &b) in head.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            if head_may_end(&mut buf, &mut scan) {
                ends.push(n + 1);
            }
        }
        // Twice: once the request line has ended, and at the very end; the
        // empty lines before it are dropped.
        assert_eq!(ends, [19, head.len()]);
        assert_eq!(&buf[..], &head[3..]);
        assert!(may_end(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(!may_end(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(may_end(b"GET / HTTP/1.1\rHost"));
    }
}
