//! Writing what [`super::decode`] and [`super::head`] read: fields, status
//! lines, lengths, chunk lines and the last chunk.

use bytes::{BufMut, BytesMut};

/// Ends a chunked body that has no trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `name: value` and its line end.
pub(crate) fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Appends a `content-length` field.
pub(crate) fn length_field(out: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    field(out, b"content-length", &digits[at..]);
}

/// Appends a response's status line.
pub(crate) fn status_line(out: &mut BytesMut, status: http::StatusCode) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
}

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
        field(out, name.as_str().as_bytes(), value.as_bytes());
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
        let mut out = BytesMut::new();
        length_field(&mut out, 0);
        length_field(&mut out, 1024);
        status_line(&mut out, http::StatusCode::NOT_FOUND);
        assert_eq!(&out[..], b"content-length: 0\r\ncontent-length: 1024\r\nHTTP/1.1 404 Not Found\r\n");
    }
}
