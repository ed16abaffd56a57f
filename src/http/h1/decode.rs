//! Message bodies as RFC 9112 frames them (section 6): a length, the chunked
//! coding, or (a response only) the end of the connection.
//!
//! The decoder takes bytes from the connection's read buffer and hands back
//! pieces split off it, so a body's bytes are never copied. It is strict
//! where leniency lets two parsers disagree about where a message ends: a
//! chunk size is hex digits only (no sign, no `0x`, at most 16 digits), its
//! line ends in CRLF, data is followed by exactly CRLF, and extensions and
//! trailers are bounded.

use bytes::{Buf, Bytes, BytesMut};

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (zero: no body).
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Until the peer closes: only a response without length or chunking.
    Close,
}

/// What one call to [`Decoder::decode`] found.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Body bytes, never empty.
    Data(Bytes),
    /// The trailer section of a chunked body; the body ends after it.
    Trailers(http::HeaderMap),
    /// The body is complete.
    End,
    /// More bytes must be read first.
    More,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("chunk size too large")]
    ChunkTooLarge,
    #[error("chunk extensions too long")]
    Extensions,
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    #[error("invalid trailer section")]
    Trailers,
    #[error("connection closed before the body's end")]
    Truncated,
}

/// Bytes of chunk extensions a whole body may carry (hyper allows the same).
const MAX_EXTENSIONS: u64 = 16 * 1024;
/// The largest trailer section read, and its most fields.
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_TRAILER_FIELDS: usize = 64;

#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
    extensions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Close,
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section up to its empty line.
    Trailers,
    Done,
}

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
            Framing::Close => State::Close,
        };
        Decoder { state, extensions: 0 }
    }

    /// The body has been read to its end.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes still to come, when the framing says (a length).
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Takes what it can of `buf`: body bytes (split off, not copied), the
    /// trailers, the end, or a request for more.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    self.state = if left == n as u64 { State::Done } else { State::Length(left - n as u64) };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::Size => {
                    let Some(line) = line_end(buf)? else {
                        // A size line with no end in sight: only extensions make it long.
                        if buf.len() as u64 + self.extensions > MAX_EXTENSIONS + 18 {
                            return Err(DecodeError::Extensions);
                        }
                        return Ok(Decoded::More);
                    };
                    let size = self.size_line(&buf[..line])?;
                    buf.advance(line + 2);
                    self.state = if size == 0 { State::Trailers } else { State::Data(size) };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    self.state = if left == n as u64 { State::DataEnd } else { State::Data(left - n as u64) };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(DecodeError::ChunkEnd);
                        }
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(DecodeError::ChunkEnd);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.state = State::Done;
                        return Ok(Decoded::End);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        if buf.len() > MAX_TRAILERS {
                            return Err(DecodeError::Trailers);
                        }
                        return Ok(Decoded::More);
                    };
                    if end + 4 > MAX_TRAILERS {
                        return Err(DecodeError::Trailers);
                    }
                    let section = buf.split_to(end + 4);
                    self.state = State::Done;
                    return trailers(&section).map(Decoded::Trailers);
                }
            }
        }
    }

    /// The peer closed: the end of a close-delimited body, else an error if unfinished.
    pub(crate) fn eof(&mut self) -> Result<Decoded, DecodeError> {
        match self.state {
            State::Done => Ok(Decoded::End),
            State::Close => {
                self.state = State::Done;
                Ok(Decoded::End)
            }
            _ => Err(DecodeError::Truncated),
        }
    }

    /// `chunk-size [ chunk-ext ]`, the line without its CRLF.
    fn size_line(&mut self, line: &[u8]) -> Result<u64, DecodeError> {
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(DecodeError::ChunkSize);
        }
        let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
        if significant > 15 {
            return Err(DecodeError::ChunkTooLarge);
        }
        let size = line[..digits].iter().fold(0u64, |n, &b| n * 16 + u64::from(hex(b)));
        let rest = &line[digits..];
        // BWS before `;`, as RFC 9112 section 7.1.1 allows.
        let rest = trim_start(rest);
        if rest.is_empty() {
            return Ok(size);
        }
        if rest[0] != b';' {
            return Err(DecodeError::ChunkSize);
        }
        self.extensions += rest.len() as u64;
        if self.extensions > MAX_EXTENSIONS {
            return Err(DecodeError::Extensions);
        }
        // Extensions are ignored, but must be visible text: no control bytes.
        if rest.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Err(DecodeError::ChunkSize);
        }
        Ok(size)
    }
}

/// Where the line's CRLF starts, once it is all in `buf`; a bare CR or LF is an error.
fn line_end(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(at) = buf.iter().position(|&b| b == b'\n' || b == b'\r') else { return Ok(None) };
    match (buf[at], buf.get(at + 1)) {
        (b'\r', None) => Ok(None),
        (b'\r', Some(b'\n')) => Ok(Some(at)),
        _ => Err(DecodeError::ChunkSize),
    }
}

fn find(buf: &[u8], needle: &[u8]) -> Option<usize> {
    buf.windows(needle.len()).position(|w| w == needle)
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A trailer section, its final empty line included.
fn trailers(section: &[u8]) -> Result<http::HeaderMap, DecodeError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => {
            let mut map = http::HeaderMap::with_capacity(parsed.len());
            for f in parsed {
                let name = http::HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| DecodeError::Trailers)?;
                let value = http::HeaderValue::from_bytes(f.value).map_err(|_| DecodeError::Trailers)?;
                map.append(name, value);
            }
            Ok(map)
        }
        _ => Err(DecodeError::Trailers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framing: Framing, input: &[u8]) -> Result<(Vec<u8>, Option<http::HeaderMap>, usize), DecodeError> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::from(input);
        let mut body = Vec::new();
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::Trailers(t) => return Ok((body, Some(t), buf.len())),
                Decoded::End => return Ok((body, None, buf.len())),
                Decoded::More => match d.eof()? {
                    Decoded::End => return Ok((body, None, buf.len())),
                    _ => unreachable!(),
                },
            }
        }
    }

    #[test]
    fn lengths_and_chunks_end_where_they_say() {
        assert_eq!(all(Framing::Length(3), b"abcdef").unwrap(), (b"abc".to_vec(), None, 3));
        assert_eq!(all(Framing::Chunked, b"3\r\nabc\r\n0\r\n\r\nNEXT").unwrap(), (b"abc".to_vec(), None, 4));
        assert_eq!(all(Framing::Chunked, b"3;x=\"y\"\r\nabc\r\n0 ;a\r\n\r\n").unwrap().0, b"abc");
        assert_eq!(all(Framing::Close, b"abc").unwrap().0, b"abc");
        let (_, t, left) = all(Framing::Chunked, b"0\r\nx-sum: 1\r\n\r\nN").unwrap();
        assert_eq!(t.unwrap()["x-sum"], "1");
        assert_eq!(left, 1);
    }

    #[test]
    fn hostile_chunking_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"-1\r\n",
            b"+1\r\nabc",
            b"0x3\r\nabc\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"3;\x00\r\nabc\r\n",
            b"3\rabc",
            b"0\r\nbad header\r\n\r\n",
        ] {
            assert!(all(Framing::Chunked, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(all(Framing::Chunked, b"3\r\nab"), Err(DecodeError::Truncated));
        assert_eq!(all(Framing::Length(5), b"ab"), Err(DecodeError::Truncated));
        let long = format!("1;{}\r\n", "a".repeat(20_000));
        assert_eq!(all(Framing::Chunked, long.as_bytes()), Err(DecodeError::Extensions));
        // Leading zeros are not size.
        assert_eq!(all(Framing::Chunked, b"00000000000000000003\r\nabc\r\n0\r\n\r\n").unwrap().0, b"abc");
    }

    #[test]
    fn pieces_arrive_one_byte_at_a_time() {
        let input = b"5\r\nhello\r\n6;e\r\n world\r\n0\r\nt: v\r\n\r\n";
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        for &b in input {
            buf.extend_from_slice(&[b]);
            loop {
                match d.decode(&mut buf).unwrap() {
                    Decoded::Data(x) => body.extend_from_slice(&x),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::End | Decoded::More => break,
                }
            }
        }
        assert_eq!(body, b"hello world");
        assert!(d.is_done());
        assert_eq!(trailers.unwrap()["t"], "v");
    }
}
