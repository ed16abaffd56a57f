//! The origin's side of a protocol upgrade: its 101 response carries an
//! [`OriginUpgrade`] in its extensions, whichever HTTP/1.1 engine read it,
//! and the tunnel takes the connection from it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connect::Stream;
use crate::http::body::BoxError;

/// The connection an origin switched protocols on, once it is free.
#[derive(Clone)]
pub(crate) struct OriginUpgrade(Arc<Mutex<Option<Side>>>);

enum Side {
    Hyper(hyper::upgrade::OnUpgrade),
    /// relais's own: the stream, and what was read past the 101's head.
    Own(Stream, Bytes),
}

impl OriginUpgrade {
    pub(super) fn hyper(on: hyper::upgrade::OnUpgrade) -> OriginUpgrade {
        OriginUpgrade(Arc::new(Mutex::new(Some(Side::Hyper(on)))))
    }

    pub(super) fn own(stream: Stream, read: Bytes) -> OriginUpgrade {
        OriginUpgrade(Arc::new(Mutex::new(Some(Side::Own(stream, read)))))
    }

    /// The connection, to read and write as the new protocol; taken once.
    pub(crate) async fn connection(self) -> Result<OriginIo, BoxError> {
        let side = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        match side {
            None => Err("the origin's upgraded connection was already taken".into()),
            Some(Side::Own(stream, read)) => Ok(OriginIo(Io::Own { stream, read })),
            Some(Side::Hyper(on)) => Ok(OriginIo(Io::Hyper(TokioIo::new(on.await?)))),
        }
    }
}

/// An upgraded origin connection.
pub(crate) struct OriginIo(Io);

enum Io {
    Hyper(TokioIo<hyper::upgrade::Upgraded>),
    Own { stream: Stream, read: Bytes },
}

impl AsyncRead for OriginIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Io::Hyper(io) => Pin::new(io).poll_read(cx, buf),
            Io::Own { stream, read } => {
                if read.is_empty() {
                    return Pin::new(stream).poll_read(cx, buf);
                }
                let n = read.len().min(buf.remaining());
                buf.put_slice(&read[..n]);
                read.advance(n);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for OriginIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Io::Hyper(io) => Pin::new(io).poll_write(cx, buf),
            Io::Own { stream, .. } => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Io::Hyper(io) => Pin::new(io).poll_flush(cx),
            Io::Own { stream, .. } => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Io::Hyper(io) => Pin::new(io).poll_shutdown(cx),
            Io::Own { stream, .. } => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
