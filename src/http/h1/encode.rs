//! Writing what [`super::decode`] reads: chunk lines and the last chunk.

use bytes::{BufMut, BytesMut};

/// Ends a chunked body that has no trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the line that starts a chunk of `len` bytes (never zero: that is the last chunk).
pub(crate) fn chunk_line(len: usize, out: &mut BytesMut) {
    debug_assert!(len > 0);
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4) as usize;
    for i in (0..digits).rev() {
        out.put_u8(b"0123456789abcdef"[(len >> (i * 4)) & 0xf]);
    }
    out.put_slice(b"\r\n");
}

/// Appends the last chunk with `trailers` (fields relais may send) and the empty line.
pub(crate) fn last_chunk(trailers: &http::HeaderMap, out: &mut BytesMut) {
    out.put_slice(b"0\r\n");
    for (name, value) in trailers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_are_hex() {
        for (n, want) in [(1, "1\r\n"), (15, "f\r\n"), (16, "10\r\n"), (65536, "10000\r\n")] {
            let mut out = BytesMut::new();
            chunk_line(n, &mut out);
            assert_eq!(&out[..], want.as_bytes());
        }
        let mut t = http::HeaderMap::new();
        t.insert("x-sum", http::HeaderValue::from_static("1"));
        let mut out = BytesMut::new();
        last_chunk(&t, &mut out);
        assert_eq!(&out[..], b"0\r\nx-sum: 1\r\n\r\n");
    }
}
