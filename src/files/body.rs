//! A file's bytes as a response body, read 64 KiB at a time: memory stays
//! the same whatever the file's size.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Frame, SizeHint};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::http::body::BoxError;

const CHUNK: usize = 64 * 1024;

/// `left` bytes of a file from where it stands; a file that ends sooner
/// (truncated while it is sent) is an error, never a short body that looks whole.
pub(super) struct FileBody {
    stream: ReaderStream<tokio::io::Take<tokio::fs::File>>,
    left: u64,
}

impl FileBody {
    pub(super) fn new(file: std::fs::File, len: u64) -> FileBody {
        let file = tokio::fs::File::from_std(file).take(len);
        FileBody { stream: ReaderStream::with_capacity(file, CHUNK), left: len }
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.stream).poll_next(cx) {
            Poll::Ready(Some(Ok(data))) => {
                self.left -= data.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(Some(Err("the file ended before its length".into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
