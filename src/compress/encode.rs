//! The encoders: a body compressed as it streams, flushed whenever the origin
//! pauses (so server-sent events stay live), and whole bodies at once; and the
//! decoders, whose output is taken in bounded pieces whatever the ratio.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::Encoding;
use crate::http::body::{Body, BoxError};

/// Output is passed on once this much has built up.
const OUTPUT_CHUNK: usize = 16 * 1024;
/// Input is written in pieces of this size: a gzip decoder's output per piece
/// is bounded (deflate inflates at most about 1,000 times), whatever a frame
/// holds. brotli and zstd have no such bound (a few bytes of brotli are 16 MiB,
/// four of zstd 128 KiB): their decoders are run step by step ([`Stepped`]).
const INPUT_PIECE: usize = 1024;

/// One encoder (or decoder) writing into a buffer that is taken after each flush.
enum Coder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Gunzip(flate2::write::GzDecoder<Vec<u8>>),
    Unbr(Box<Stepped<Unbr>>),
    Unzstd(Box<Stepped<Unzstd>>),
}

type BrotliState =
    brotli::BrotliState<brotli::writer::StandardAlloc, brotli::writer::StandardAlloc, brotli::writer::StandardAlloc>;

/// A decoder fed by steps whose output goes into `out` and never past
/// [`OUTPUT_CHUNK`]: what is left waits in the decoder for the next step.
struct Stepped<D> {
    decoder: D,
    out: Vec<u8>,
}

/// One step of a decoder.
trait Step {
    /// Decodes from `input` (advancing it) into `out` from `at` on; returns
    /// where the output ends and whether the decoder stopped because `out` is full.
    fn step(&mut self, input: &mut Bytes, out: &mut [u8], at: usize) -> io::Result<(usize, bool)>;
    /// The body ended: is the stream complete?
    fn complete(&self) -> bool;
}

struct Unbr {
    state: BrotliState,
    done: bool,
}

struct Unzstd {
    context: zstd::stream::raw::Decoder<'static>,
    /// Inside a frame: its end has not been decoded yet.
    open: bool,
}

impl Step for Unbr {
    fn step(&mut self, input: &mut Bytes, out: &mut [u8], at: usize) -> io::Result<(usize, bool)> {
        use brotli::BrotliResult;
        if self.done {
            return Err(io::Error::other("data after the end of the brotli stream"));
        }
        let (mut avail_in, mut in_at) = (input.len(), 0);
        let (mut avail_out, mut out_at, mut total) = (out.len() - at, at, 0);
        let result = brotli::BrotliDecompressStream(
            &mut avail_in,
            &mut in_at,
            input,
            &mut avail_out,
            &mut out_at,
            out,
            &mut total,
            &mut self.state,
        );
        bytes::Buf::advance(input, in_at);
        match result {
            BrotliResult::ResultSuccess => {
                self.done = true;
                if !input.is_empty() {
                    return Err(io::Error::other("data after the end of the brotli stream"));
                }
                Ok((out_at, false))
            }
            BrotliResult::NeedsMoreInput => Ok((out_at, false)),
            BrotliResult::NeedsMoreOutput => Ok((out_at, true)),
            BrotliResult::ResultFailure => Err(io::Error::new(io::ErrorKind::InvalidData, "invalid brotli stream")),
        }
    }

    fn complete(&self) -> bool {
        self.done
    }
}

impl Step for Unzstd {
    fn step(&mut self, input: &mut Bytes, out: &mut [u8], at: usize) -> io::Result<(usize, bool)> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut src = InBuffer::around(input);
        let mut dst = OutBuffer::around_pos(out, at);
        // 0 once a frame is decoded whole and all its output given; the next bytes start another.
        let hint = self.context.run(&mut src, &mut dst)?;
        let (read, end) = (src.pos(), dst.pos());
        bytes::Buf::advance(input, read);
        if read > 0 || end > at {
            self.open = hint != 0;
        } else if !input.is_empty() {
            return Err(io::Error::other("the zstd decoder took nothing"));
        }
        Ok((end, end == out.len()))
    }

    fn complete(&self) -> bool {
        !self.open
    }
}

impl<D: Step> Stepped<D> {
    fn new(decoder: D) -> Box<Stepped<D>> {
        Box::new(Stepped { decoder, out: Vec::new() })
    }

    /// Decodes from `input` until it is used up or [`OUTPUT_CHUNK`] is out;
    /// true in the second case (output may be left for input already taken).
    fn take(&mut self, input: &mut Bytes) -> io::Result<bool> {
        loop {
            let at = self.out.len();
            if at >= OUTPUT_CHUNK {
                return Ok(true);
            }
            self.out.resize(OUTPUT_CHUNK, 0);
            let (end, full) = self.decoder.step(input, &mut self.out, at).inspect_err(|_| self.out.truncate(at))?;
            self.out.truncate(end);
            if !full && input.is_empty() {
                return Ok(false);
            }
        }
    }

    fn finish(self) -> io::Result<Vec<u8>> {
        match self.decoder.complete() {
            true => Ok(self.out),
            false => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the body ended inside a compressed stream")),
        }
    }
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
            Encoding::Br => {
                let alloc = brotli::writer::StandardAlloc::default;
                Coder::Unbr(Stepped::new(Unbr { state: BrotliState::new(alloc(), alloc(), alloc()), done: false }))
            }
            Encoding::Zstd => {
                let mut context = zstd::stream::raw::Decoder::new()?;
                let log = window_log.unwrap_or(super::window::ZSTD_WINDOW_LOG_MAX);
                context.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(log))?;
                Coder::Unzstd(Stepped::new(Unzstd { context, open: false }))
            }
        })
    }

    /// Takes what it can of `rest`: a piece for an encoder or gzip, and for
    /// brotli and zstd as much as makes [`OUTPUT_CHUNK`] of output. True if
    /// output is left for input already taken: take again before giving more.
    fn take(&mut self, rest: &mut Bytes) -> io::Result<bool> {
        match self {
            Coder::Unbr(d) => d.take(rest),
            Coder::Unzstd(d) => d.take(rest),
            _ => {
                let piece = rest.split_to(rest.len().min(INPUT_PIECE));
                self.write(&piece).map(|()| false)
            }
        }
    }

    /// Writes all of `data` into an encoder or the gzip decoder.
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Coder::Gzip(w) => w.write_all(data),
            Coder::Br(w) => w.write_all(data),
            Coder::Zstd(w) => w.write_all(data),
            Coder::Gunzip(w) => w.write_all(data),
            // Fed through `take` only, so that their output stays bounded.
            Coder::Unbr(_) | Coder::Unzstd(_) => Err(io::Error::other("a stepped decoder is fed by steps")),
        }
    }

    /// The encoder's output so far.
    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Coder::Gzip(w) => w.get_mut(),
            Coder::Br(w) => w.get_mut(),
            Coder::Zstd(w) => w.get_mut(),
            Coder::Gunzip(w) => w.get_mut(),
            Coder::Unbr(d) => &mut d.out,
            Coder::Unzstd(d) => &mut d.out,
        }
    }

    /// Flushes what was written so far and takes the output.
    fn flush(&mut self) -> io::Result<Bytes> {
        match self {
            Coder::Gzip(w) => w.flush()?,
            Coder::Br(w) => w.flush()?,
            Coder::Zstd(w) => w.flush()?,
            Coder::Gunzip(w) => w.flush()?,
            // Each step gives all the output it can.
            Coder::Unbr(_) | Coder::Unzstd(_) => {}
        }
        Ok(Bytes::from(std::mem::take(self.output())))
    }

    fn finish(self) -> io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Coder::Gzip(w) => w.finish()?,
            Coder::Br(w) => w.into_inner(),
            Coder::Zstd(w) => w.finish()?,
            Coder::Gunzip(w) => w.finish()?,
            // A stream that did not end is a broken body.
            Coder::Unbr(d) => d.finish()?,
            Coder::Unzstd(d) => d.finish()?,
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
        // The decoder holds output for input it took: take it before more input.
        more: bool,
        // A decoder's share of `buffering.memory`, given back with the body.
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    }
}

impl Encoded {
    /// `inner` encoded with `encoding` at `level`; the body back, unread, if no encoder starts.
    pub(super) fn new(inner: Body, encoding: Encoding, level: i32) -> Result<Encoded, (Body, io::Error)> {
        match Coder::new(encoding, level) {
            Ok(coder) => {
                Ok(Encoded { inner, coder: Some(coder), pending: false, rest: Bytes::new(), more: false, budget: None })
            }
            Err(e) => Err((inner, e)),
        }
    }

    /// `started` then `inner`, encoded with `encoding`, decoded (see [`super::window`]
    /// for `window_log`), holding `budget` until done.
    pub(super) fn decoding(
        started: Bytes,
        inner: Body,
        encoding: Encoding,
        window_log: Option<u32>,
        budget: tokio::sync::OwnedSemaphorePermit,
    ) -> io::Result<Encoded> {
        let coder = Some(Coder::decoder(encoding, window_log)?);
        Ok(Encoded { inner, coder, pending: false, rest: started, more: false, budget: Some(budget) })
    }
}

impl http_body::Body for Encoded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            let Some(coder) = this.coder.as_mut() else { return Poll::Ready(None) };
            if !this.rest.is_empty() || *this.more {
                *this.more = coder.take(this.rest)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn decoding(encoded: Bytes, e: Encoding) -> Encoded {
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().unwrap();
        // As `compress::decode` starts it: the first bytes already read, the rest to come.
        let (started, rest) = (encoded.slice(..8.min(encoded.len())), encoded.slice(8.min(encoded.len())..));
        Encoded::decoding(started, Body::full(rest), e, None, budget).unwrap()
    }

    /// Bodies that inflate far more than deflate can: 405 bytes of brotli are
    /// 256 MiB of zeros (its decoder wrote them out in one call), 8 KiB of zstd
    /// as much (32 MiB a call). Each is decoded in pieces of about
    /// `OUTPUT_CHUNK`, gzip's in pieces of about 1 MiB, to the whole body.
    #[tokio::test]
    async fn bombs_are_decoded_in_bounded_pieces() {
        const LEN: usize = 64 << 20;
        let zeros = vec![0u8; LEN];
        for (e, level, most) in
            [(Encoding::Br, 5, OUTPUT_CHUNK), (Encoding::Zstd, 19, OUTPUT_CHUNK), (Encoding::Gzip, 9, 1100 << 10)]
        {
            let bomb = encode_all(&zeros, e, level).unwrap();
            assert!(bomb.len() < LEN / 200, "{e:?}: {} bytes", bomb.len());
            let mut body = decoding(bomb, e);
            let (mut total, mut largest) = (0, 0);
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap();
                assert!(data.iter().all(|b| *b == 0));
                total += data.len();
                largest = largest.max(data.len());
            }
            assert_eq!(total, LEN, "{e:?}");
            assert!(largest <= most, "{e:?}: a piece of {largest} bytes");
        }
    }

    #[tokio::test]
    async fn a_stream_cut_short_or_followed_by_more_is_an_error() {
        let page: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for e in [Encoding::Br, Encoding::Zstd, Encoding::Gzip] {
            let whole = encode_all(&page, e, 5).unwrap();
            let decoded = decoding(whole.clone(), e).collect().await.unwrap().to_bytes();
            assert!(decoded == page, "{e:?}");
            let cut = whole.slice(..whole.len() - 3);
            assert!(decoding(cut, e).collect().await.is_err(), "{e:?} cut short");
        }
        let mut trailing = encode_all(&page, Encoding::Br, 5).unwrap().to_vec();
        trailing.extend_from_slice(b"junk");
        assert!(decoding(trailing.into(), Encoding::Br).collect().await.is_err(), "brotli with bytes after its end");
    }
}
