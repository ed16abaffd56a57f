//! A connection once it has switched protocols (101): either engine's, on
//! either side, as one type the tunnel joins.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// A byte stream in both directions.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An upgraded connection.
pub(crate) type Upgraded = Box<dyn Io>;

/// One side of an upgrade, ready once the 101 is through: the client's (a
/// request extension) or the origin's (a response extension), by either
/// engine; shared, as extensions are.
#[derive(Clone)]
pub(crate) enum OnUpgrade {
    Hyper(hyper::upgrade::OnUpgrade),
    /// relais's engine hands over the connection once it has written the 101.
    Own(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>),
}

impl OnUpgrade {
    pub(crate) fn own(rx: oneshot::Receiver<Upgraded>) -> OnUpgrade {
        OnUpgrade::Own(Arc::new(Mutex::new(Some(rx))))
    }

    /// A connection switched already: relais's origin side, with the bytes
    /// read past the 101's head.
    pub(crate) fn ready<T: Io + 'static>(io: T, read: Bytes) -> OnUpgrade {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Box::new(Rewind::new(read, io)) as Upgraded);
        OnUpgrade::own(rx)
    }

    pub(crate) async fn upgraded(self) -> io::Result<Upgraded> {
        match self {
            OnUpgrade::Hyper(on) => {
                let up = on.await.map_err(io::Error::other)?;
                Ok(Box::new(hyper_util::rt::TokioIo::new(up)))
            }
            OnUpgrade::Own(rx) => {
                let rx = rx.lock().unwrap_or_else(PoisonError::into_inner).take();
                let rx = rx.ok_or_else(|| io::Error::other("upgrade taken twice"))?;
                rx.await.map_err(|_| io::Error::other("connection closed before switching"))
            }
        }
    }
}

/// `io` with `read` (bytes read past the head) to be read again first.
pub(crate) struct Rewind<T> {
    read: Bytes,
    io: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(read: Bytes, io: T) -> Self {
        Rewind { read, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
