//! Heads on an origin connection: the request's written, the response's read.
//!
//! The response head is parsed with `httparse` as strictly as hyper's client
//! does (no obs-fold, no space before a colon, a bounded size and field
//! count), and its framing decided once, by RFC 9112 section 6.3.

use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, request};

use super::Error;
use crate::http::h1::Framing;
use crate::http::h1::encode::{field, length_field};
use crate::http::h1::head::{content_length as content_length_value, list};

/// The largest response head read (hyper's client buffer here was as large).
pub(super) const MAX_HEAD: usize = 256 * 1024;
/// The most response header fields (hyper's client default).
const MAX_FIELDS: usize = 100;

/// How a request's body goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sending {
    /// No body, and no framing field unless `Content-Length: 0` is due.
    Empty {
        length_zero: bool,
    },
    Length(u64),
    Chunked,
}

impl Sending {
    /// By the body actually sent: its exact length, else chunked. An empty body
    /// says `Content-Length: 0` where the pipeline did, or the method expects content.
    pub(super) fn of(parts: &request::Parts, body: &crate::http::body::Body) -> Sending {
        use http_body::Body as _;
        if body.is_end_stream() {
            let expects = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
            return Sending::Empty { length_zero: expects || parts.headers.contains_key(CONTENT_LENGTH) };
        }
        match body.size_hint().exact() {
            Some(n) => Sending::Length(n),
            None => Sending::Chunked,
        }
    }
}

/// Appends the request head: the request line, the fields as given (names as
/// they are) but the framing ones, then the framing of `sending`.
pub(super) fn write_request(parts: &request::Parts, sending: Sending, out: &mut BytesMut) {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.reserve(64 + target.len() + parts.headers.len() * 32);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match sending {
        Sending::Empty { length_zero: false } => {}
        Sending::Empty { length_zero: true } => length_field(out, 0),
        Sending::Length(n) => length_field(out, n),
        Sending::Chunked => field(out, b"transfer-encoding", b"chunked"),
    }
    out.put_slice(b"\r\n");
}

/// A parsed response head.
pub(super) struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this response has ended.
    pub reuse: bool,
}

/// Takes a complete response head off the front of `buf`, if there is one.
/// `method` is the request's (a HEAD's response has no body).
pub(super) fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut fields);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Error::Head("response head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Head("too many response header fields")),
        Err(_) => return Err(Error::Head("invalid response head")),
    };
    if len > MAX_HEAD {
        return Err(Error::Head("response head too large"));
    }
    let status = res.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(Error::Head("invalid status"))?;
    let version = if res.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    // The field values are kept as slices of the head, not copied.
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(res.headers.len());
    for f in res.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Error::Head("invalid field name"))?;
        let start = if f.value.is_empty() { 0 } else { f.value.as_ptr() as usize - base };
        fields.push((name, start, start + f.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, start, end) in fields {
        let value =
            HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| Error::Head("invalid field value"))?;
        headers.append(name, value);
    }
    let (framing, reuse) = framing(status, version, &headers, method)?;
    Ok(Some(Head { status, version, headers, framing, reuse }))
}

/// RFC 9112 section 6.3: how the body is delimited, and whether the
/// connection outlives it.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    method: &Method,
) -> Result<(Framing, bool), Error> {
    let close = version != Version::HTTP_11 || has_token(headers, CONNECTION, "close");
    if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), !close && status != StatusCode::SWITCHING_PROTOCOLS));
    }
    let length = content_length(headers)?;
    if *method == Method::HEAD {
        return Ok((Framing::Length(0), !close));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Chunked wins over a length; with both, the connection is not trusted for another.
        let chunked = last_coding_is_chunked(headers);
        return Ok(match chunked {
            true => (Framing::Chunked, !close && length.is_none()),
            false => (Framing::Close, false),
        });
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), !close),
        None => (Framing::Close, false),
    })
}

/// The one length every Content-Length field and list member agrees on.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = content_length_value(part.trim_ascii()).ok_or(Error::Head("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Head("conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    let last = headers.get_all(TRANSFER_ENCODING).iter().next_back();
    last.and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| list(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
}

/// The request asked for the connection to close after it.
pub(super) fn asks_close(parts: &request::Parts) -> bool {
    has_token(&parts.headers, CONNECTION, "close")
}
