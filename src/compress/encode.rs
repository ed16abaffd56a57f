//! The encoders: a body compressed as it streams, flushed whenever the origin
//! pauses (so server-sent events stay live), and whole bodies at once.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::Encoding;
use crate::body::{Body, BoxError};

/// Output is passed on once this much has built up.
const OUTPUT_CHUNK: usize = 16 * 1024;
/// Input is written in pieces of this size: a decoder's output per piece is
/// bounded (deflate inflates at most about 1,000 times), whatever a frame holds.
const INPUT_PIECE: usize = 1024;

/// One encoder (or decoder) writing into a buffer that is taken after each flush.
enum Coder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Gunzip(flate2::write::GzDecoder<Vec<u8>>),
    Unbr(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Unzstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl Coder {
    fn new(encoding: Encoding, level: i32) -> io::Result<Coder> {
        Ok(match encoding {
            Encoding::Gzip => Coder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.clamp(1, 9) as u32),
            )),
            // 4 KiB of buffer, a 2^22 window (brotli's default).
            Encoding::Br => {
                Coder::Br(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, level.clamp(0, 11) as u32, 22)))
            }
            Encoding::Zstd => Coder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level.clamp(1, 22))?),
        })
    }

    /// A decoder; a zstd one refuses frames whose window passes `2^window_log`.
    fn decoder(encoding: Encoding, window_log: Option<u32>) -> io::Result<Coder> {
        Ok(match encoding {
            Encoding::Gzip => Coder::Gunzip(flate2::write::GzDecoder::new(Vec::new())),
            Encoding::Br => Coder::Unbr(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            Encoding::Zstd => {
                let mut d = zstd::stream::write::Decoder::new(Vec::new())?;
                d.window_log_max(window_log.unwrap_or(super::window::ZSTD_WINDOW_LOG_MAX))?;
                Coder::Unzstd(d)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Coder::Gzip(w) => w.write_all(data),
            Coder::Br(w) => w.write_all(data),
            Coder::Zstd(w) => w.write_all(data),
            Coder::Gunzip(w) => w.write_all(data),
            Coder::Unbr(w) => w.write_all(data),
            Coder::Unzstd(w) => w.write_all(data),
        }
    }

    /// The encoder's output so far.
    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Coder::Gzip(w) => w.get_mut(),
            Coder::Br(w) => w.get_mut(),
            Coder::Zstd(w) => w.get_mut(),
            Coder::Gunzip(w) => w.get_mut(),
            Coder::Unbr(w) => w.get_mut(),
            Coder::Unzstd(w) => w.get_mut(),
        }
    }

    /// Flushes what was written so far and takes the output.
    fn flush(&mut self) -> io::Result<Bytes> {
        match self {
            Coder::Gzip(w) => w.flush()?,
            Coder::Br(w) => w.flush()?,
            Coder::Zstd(w) => w.flush()?,
            Coder::Gunzip(w) => w.flush()?,
            Coder::Unbr(w) => w.flush()?,
            Coder::Unzstd(w) => w.flush()?,
        }
        Ok(Bytes::from(std::mem::take(self.output())))
    }

    fn finish(self) -> io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Coder::Gzip(w) => w.finish()?,
            Coder::Br(w) => w.into_inner(),
            Coder::Zstd(w) => w.finish()?,
            Coder::Gunzip(w) => w.finish()?,
            // A brotli stream that did not end is a broken body.
            Coder::Unbr(w) => w.into_inner().map_err(|_| io::Error::other("brotli stream ended early"))?,
            Coder::Unzstd(mut w) => {
                w.flush()?;
                w.into_inner()
            }
        }))
    }
}

/// `data` encoded whole.
pub fn encode_all(data: &[u8], encoding: Encoding, level: i32) -> io::Result<Bytes> {
    let mut coder = Coder::new(encoding, level)?;
    coder.write(data)?;
    coder.finish()
}

pin_project_lite::pin_project! {
    /// `inner` encoded as it streams.
    pub struct Encoded {
        #[pin]
        inner: Body,
        coder: Option<Coder>,
        // Written since the last flush.
        pending: bool,
        // Input not written yet: fed in pieces, so one frame cannot inflate without bound.
        rest: Bytes,
        // A decoder's share of `buffering.memory`, given back with the body.
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    }
}

impl Encoded {
    /// `inner` encoded with `encoding` at `level`; the body back, unread, if no encoder starts.
    pub fn new(inner: Body, encoding: Encoding, level: i32) -> Result<Encoded, (Body, io::Error)> {
        match Coder::new(encoding, level) {
            Ok(coder) => Ok(Encoded { inner, coder: Some(coder), pending: false, rest: Bytes::new(), budget: None }),
            Err(e) => Err((inner, e)),
        }
    }

    /// `started` then `inner`, encoded with `encoding`, decoded (see [`super::window`]
    /// for `window_log`), holding `budget` until done.
    pub fn decoding(
        started: Bytes,
        inner: Body,
        encoding: Encoding,
        window_log: Option<u32>,
        budget: tokio::sync::OwnedSemaphorePermit,
    ) -> io::Result<Encoded> {
        let coder = Some(Coder::decoder(encoding, window_log)?);
        Ok(Encoded { inner, coder, pending: false, rest: started, budget: Some(budget) })
    }
}

impl http_body::Body for Encoded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            let Some(coder) = this.coder.as_mut() else { return Poll::Ready(None) };
            if !this.rest.is_empty() {
                let piece = this.rest.split_to(this.rest.len().min(INPUT_PIECE));
                coder.write(&piece)?;
                *this.pending = true;
                if coder.output().len() >= OUTPUT_CHUNK {
                    let out = Bytes::from(std::mem::take(coder.output()));
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                continue;
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped: a transformed body is a new message.
                    let Ok(data) = frame.into_data() else { continue };
                    // Written in pieces above; output passes on as it comes, so memory
                    // stays bounded however long the body.
                    *this.rest = data;
                }
                Poll::Ready(Some(Err(e))) => {
                    (*this.coder, *this.budget) = (None, None);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    let out = this.coder.take().map(Coder::finish).transpose()?.unwrap_or_default();
                    *this.budget = None;
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Pending => {
                    // The origin paused: send what we have, so a live stream stays live.
                    if !*this.pending {
                        return Poll::Pending;
                    }
                    *this.pending = false;
                    let out = coder.flush()?;
                    if out.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.coder.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
