//! The stream under a client connection: it replays the bytes the server read
//! to choose the protocol, and on HTTP/2 it gathers the frames a connection
//! writes in one pass into one write.
//!
//! The h2 crate flushes by itself after every DATA frame of 256 bytes or more,
//! so a connection answering ten streams made ten `writev` calls, each paying
//! for a TCP segment and a wake-up of the peer. On an HTTP/2 connection this
//! stream keeps what is written and flushed, wakes its own task, and writes it
//! all when the connection next reads — which h2 does on every poll, right
//! after it has queued everything it could. HTTP/1 connections (hyper writes
//! one response per `writev` already) pass writes straight through.
//!
//! On HTTP/2 it also follows the frames the client sends, and ends a
//! connection that floods ([`super::frames`]).
//!
//! It holds `server.send_timeout` for the connection: a write that the
//! socket has refused for that long (the client reads nothing) fails with
//! `TimedOut`, which ends the connection. The timer is armed only while a
//! write waits, so a client that reads costs no timer at all.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::frames::Frames;

/// What is gathered before it is written without waiting for the next read.
const GATHER: usize = 64 * 1024;

/// A buffer grown past this by a large pass is freed once written: idle
/// connections keep little.
const KEEP: usize = 16 * 1024;

pub(super) struct Gather<T> {
    io: T,
    /// HTTP/2: gather writes.
    gather: bool,
    /// Read already, to be read again first.
    replay: Bytes,
    out: BytesMut,
    /// The socket refused the last write: its readiness will wake the task.
    stalled: bool,
    /// HTTP/2: the client's frames, watched for floods.
    frames: Option<Box<Frames>>,
    /// How long a write may wait on the client (`server.send_timeout`).
    send_timeout: Option<Duration>,
    /// Runs while a write waits; made at the first wait.
    stall: Option<Pin<Box<Sleep>>>,
    /// A write is waiting and `stall` is set for it.
    waiting: bool,
}

impl<T> Gather<T> {
    /// `replay` is what was read from `io` before; `http2` turns gathering on.
    pub(super) fn new(io: T, http2: bool, replay: Bytes) -> Self {
        let frames = http2.then(Box::default);
        Gather {
            io,
            gather: http2,
            replay,
            out: BytesMut::new(),
            stalled: false,
            frames,
            send_timeout: None,
            stall: None,
            waiting: false,
        }
    }

    /// Fails writes that wait on the client for longer than `timeout`.
    pub(super) fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }

    /// `polled`, unless it is a write that has now waited past the send timeout.
    fn timed<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        let Some(timeout) = self.send_timeout else { return polled };
        if polled.is_ready() {
            self.waiting = false;
            return polled;
        }
        let stall = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.waiting {
            stall.as_mut().reset(Instant::now() + timeout);
            self.waiting = true;
        }
        ready!(stall.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client read nothing for server.send_timeout")))
    }

    /// HTTP/2: set once the connection is ended for a flood.
    pub(super) fn flood_alarm(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        self.frames.as_ref().map(|f| f.alarm.clone())
    }
}

impl<T: AsyncWrite + Unpin> Gather<T> {
    /// Writes out what is gathered, together with `more` if given, in one call.
    /// Returns how many bytes of `more` were taken.
    fn poll_send(&mut self, cx: &mut Context<'_>, more: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            let io = Pin::new(&mut self.io);
            let written = if more.is_empty() {
                if self.out.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                io.poll_write(cx, &self.out)
            } else {
                let mut slices = Vec::with_capacity(1 + more.len());
                slices.push(IoSlice::new(&self.out));
                slices.extend(more.iter().map(|s| IoSlice::new(s)));
                io.poll_write_vectored(cx, &slices)
            };
            self.stalled = written.is_pending();
            let n = ready!(self.timed(cx, written))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let own = n.min(self.out.len());
            if own == self.out.len() && self.out.capacity() > KEEP {
                self.out = BytesMut::new();
            } else {
                self.out.advance(own);
            }
            if n > own {
                return Poll::Ready(Ok(n - own));
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Gather<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.out.is_empty() {
            // Pending leaves the task registered for writability; read meanwhile.
            if let Poll::Ready(Err(e)) = this.poll_send(cx, &[]) {
                return Poll::Ready(Err(e));
            }
        }
        let before = buf.filled().len();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
        } else {
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        }
        if let Some(frames) = &mut this.frames {
            frames.feed(&buf.filled()[before..]).map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gather<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.gather {
            let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
            return this.timed(cx, written);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.out.len() + len <= GATHER {
            for b in bufs {
                this.out.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        this.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.out.is_empty() {
            if !self.stalled {
                // The write happens in the read the connection makes when polled
                // again; more frames queued before then go out with it.
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            // A full socket: waking now would spin; wait for it like any writer.
            while !self.out.is_empty() {
                ready!(self.poll_send(cx, &[]))?;
            }
        }
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        self.timed(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            ready!(self.poll_send(cx, &[]))?;
        }
        let shut = Pin::new(&mut self.io).poll_shutdown(cx);
        self.timed(cx, shut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes past the gathering limit into a socket with small buffers: partial
    /// writes of gathered and new bytes together lose and reorder nothing.
    #[tokio::test]
    async fn a_slow_peer_gets_every_byte_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        near.set_nodelay(true).unwrap();
        socket2::SockRef::from(&near).set_send_buffer_size(4096).unwrap();
        let mut g = Gather::new(near, true, Bytes::new());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            got
        });
        for (i, chunk) in data.chunks(9_000).enumerate() {
            let (a, b) = chunk.split_at(chunk.len() / 3);
            let mut bufs = [IoSlice::new(a), IoSlice::new(b)];
            let mut bufs = &mut bufs[..];
            while !bufs.is_empty() {
                let n = g.write_vectored(bufs).await.unwrap();
                IoSlice::advance_slices(&mut bufs, n);
            }
            if i % 5 == 0 {
                g.flush().await.unwrap();
            }
        }
        g.shutdown().await.unwrap();
        assert!(g.out.capacity() <= KEEP, "a drained buffer of {} bytes kept", g.out.capacity());
        drop(g);
        assert!(reader.await.unwrap() == data);
    }

    /// A peer that reads nothing: once the socket is full, writes wait, and
    /// fail after the send timeout, gathering or not.
    #[tokio::test]
    async fn a_write_the_peer_never_takes_times_out() {
        for http2 in [false, true] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let near = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (_far, _) = listener.accept().await.unwrap();
            socket2::SockRef::from(&near).set_send_buffer_size(4096).unwrap();
            let mut g = Gather::new(near, http2, Bytes::new()).send_timeout(std::time::Duration::from_millis(200));
            let chunk = vec![0u8; 64 * 1024];
            let failed = loop {
                let written = g.write(&chunk).await.and(g.flush().await);
                if let Err(e) = written {
                    break e;
                }
            };
            assert_eq!(failed.kind(), io::ErrorKind::TimedOut);
        }
    }

    #[tokio::test]
    async fn replayed_bytes_are_read_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut near = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (far, _) = listener.accept().await.unwrap();
        near.write_all(b" world").await.unwrap();
        drop(near);
        let mut g = Gather::new(far, false, Bytes::from_static(b"hello"));
        let mut got = String::new();
        g.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello world");
    }
}
