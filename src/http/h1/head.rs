//! Request heads read, response heads written, by relais's HTTP/1 server.
//!
//! Parsing is `httparse` plus RFC 9112's framing rules, applied strictly: a
//! request whose length two parsers could read differently is refused, not
//! guessed at. `Transfer-Encoding` must be exactly `chunked` and comes
//! without `Content-Length`; `Content-Length` is one field of digits; a
//! `Transfer-Encoding` on HTTP/1.0 is refused. Each refusal closes the
//! connection.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};

use super::Framing;
use super::encode::{field, length_field, status_line};

/// A request head, parsed.
pub(crate) struct RequestHead {
    pub request: Request<()>,
    pub framing: Framing,
    /// The connection may serve another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (HTTP/1.1).
    pub expect_continue: bool,
    /// `TE: trailers`: the client takes trailers on a chunked response.
    pub trailers: bool,
}

/// Why a head was refused: the status to answer with and a reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

const fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// Fields parsed at most at once on the stack; a larger `max_headers` parses into the heap.
const STACK_FIELDS: usize = 64;

/// Parses the head at the start of `buf`: `None` until it is complete, then
/// its length and the head. `max_size` bounds the head (431, or 414 while
/// the request line is still incomplete), `max_fields` its fields (431).
pub(crate) fn parse_request(
    buf: &BytesMut,
    max_size: usize,
    max_fields: usize,
) -> Result<Option<(usize, RequestHead)>, Refusal> {
    if max_fields <= STACK_FIELDS {
        let mut fields = [httparse::EMPTY_HEADER; STACK_FIELDS];
        parse_into(buf, max_size, &mut fields[..max_fields])
    } else {
        let mut fields = vec![httparse::EMPTY_HEADER; max_fields];
        parse_into(buf, max_size, &mut fields)
    }
}

fn parse_into<'b>(
    buf: &'b BytesMut,
    max_size: usize,
    fields: &mut [httparse::Header<'b>],
) -> Result<Option<(usize, RequestHead)>, Refusal> {
    let mut req = httparse::Request::new(fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_size => len,
        Ok(_) if buf.len() > max_size => {
            let line_done = buf[..max_size].contains(&b'\n');
            return Err(match line_done {
                true => refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request header too large"),
                false => refuse(StatusCode::URI_TOO_LONG, "request line too long"),
            });
        }
        Ok(_) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields"));
        }
        Err(_) => return Err(refuse(StatusCode::BAD_REQUEST, "malformed request head")),
    };
    let bad = |reason| refuse(StatusCode::BAD_REQUEST, reason);
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes()).map_err(|_| bad("invalid method"))?;
    let target = req.path.unwrap_or("");
    let uri = Uri::try_from(target).map_err(|_| bad("invalid request target"))?;
    let version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };

    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut framing = Framing::Length(0);
    let (mut lengths, mut chunked, mut codings) = (0, false, false);
    let (mut close, mut keep_alive, mut expect_continue, mut trailers) = (false, false, false, false);
    for f in req.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_bytes(f.value).map_err(|_| bad("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            lengths += 1;
            framing = Framing::Length(content_length(f.value).ok_or(bad("invalid Content-Length"))?);
        } else if name == header::TRANSFER_ENCODING {
            for coding in list(f.value) {
                // Only the last coding may be chunked, and only once.
                if chunked {
                    return Err(bad("Transfer-Encoding after chunked"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    codings = true;
                }
            }
        } else if name == header::CONNECTION {
            for token in list(f.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            expect_continue |= f.value.eq_ignore_ascii_case(b"100-continue");
        } else if name == header::TE {
            trailers |= list(f.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
        }
        headers.append(name, value);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding on HTTP/1.0"));
        }
        if lengths > 0 {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        if !chunked {
            return Err(bad("Transfer-Encoding without chunked last"));
        }
        if codings {
            return Err(refuse(StatusCode::NOT_IMPLEMENTED, "unsupported transfer coding"));
        }
        framing = Framing::Chunked;
    } else if lengths > 1 {
        return Err(bad("several Content-Length fields"));
    }
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive);
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let expect_continue = expect_continue && version == Version::HTTP_11 && framing != Framing::Length(0);
    Ok(Some((len, RequestHead { request, framing, keep_alive, expect_continue, trailers })))
}

/// `Content-Length`: digits only (no sign, no list), at most 18 of them.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The non-empty elements of a comma-separated field value, trimmed.
pub(crate) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|e| !e.is_empty())
}

/// How a response's body goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// Writes a response head into `out` and says how its body goes. `length`
/// is the body's exact size if known; `keep_alive` is cleared when the
/// body's end must be the connection's.
pub(crate) fn write_response(
    parts: &http::response::Parts,
    head_request: bool,
    client: Version,
    length: Option<u64>,
    keep_alive: &mut bool,
    out: &mut BytesMut,
) -> Out {
    let status = parts.status;
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| content_length(v.as_bytes()));
    let framing = if bodiless {
        Out::None
    } else if head_request || status == StatusCode::NOT_MODIFIED {
        // The length of what a GET would get, as the origin or cache said; no body.
        Out::None
    } else if let Some(n) = length.or(declared) {
        Out::Length(n)
    } else if client == Version::HTTP_11 {
        Out::Chunked
    } else {
        Out::Close
    };
    if framing == Out::Close {
        *keep_alive = false;
    }
    if parts
        .headers
        .get(header::CONNECTION)
        .is_some_and(|v| list(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")))
    {
        *keep_alive = false;
    }
    out.reserve(256);
    status_line(out, status);
    for (name, value) in &parts.headers {
        // Framing and the connection's fields are this connection's to write.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        Out::Length(n) => length_field(out, n),
        Out::Chunked => field(out, b"transfer-encoding", b"chunked"),
        Out::None if !bodiless => {
            if let Some(n) = declared {
                length_field(out, n);
            }
        }
        _ => {}
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        field(out, b"connection", b"upgrade");
    } else if !*keep_alive {
        field(out, b"connection", b"close");
    } else if client == Version::HTTP_10 {
        field(out, b"connection", b"keep-alive");
    }
    if !parts.headers.contains_key(header::DATE) && !status.is_informational() {
        date::put(out);
    }
    out.put_slice(b"\r\n");
    framing
}

/// Writes an informational head (103 and the like) into `out`.
pub(crate) fn write_interim(status: StatusCode, headers: &HeaderMap, out: &mut BytesMut) {
    status_line(out, status);
    for (name, value) in headers {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// The answer to a request relais could not read: its status, no body, and
/// the connection closed (as hyper's engine answers).
pub(crate) fn refusal(status: StatusCode) -> Bytes {
    let mut out = BytesMut::with_capacity(128);
    status_line(&mut out, status);
    field(&mut out, b"content-length", b"0");
    field(&mut out, b"connection", b"close");
    date::put(&mut out);
    out.put_slice(b"\r\n");
    out.freeze()
}

/// The `Date` field, formatted once per second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    use bytes::{BufMut, BytesMut};

    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub(super) fn put(out: &mut BytesMut) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with_borrow_mut(|(at, text)| {
            if *at != secs || text.is_empty() {
                *at = secs;
                *text = httpdate::fmt_http_date(now);
            }
            out.put_slice(b"date: ");
            out.put_slice(text.as_bytes());
            out.put_slice(b"\r\n");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<(usize, RequestHead)>, Refusal> {
        parse_request(&BytesMut::from(raw.as_bytes()), 8192, 32)
    }

    fn status(raw: &str) -> u16 {
        parse(raw).err().map_or(0, |r| r.status.as_u16())
    }

    #[test]
    fn framing_is_read_strictly() {
        let (len, head) = parse("POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!(len, 50);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let (_, head) = parse("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        for (raw, want) in [
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("GET / HTTP/1.2\r\n\r\n", 400),
            ("GET /\x01 HTTP/1.1\r\n\r\n", 400),
        ] {
            assert_eq!(status(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn limits_answer_414_and_431() {
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long_line), 414);
        let long_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long_head), 431);
        let many: String = (0..40).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    #[test]
    fn keep_alive_follows_the_version() {
        let (_, h) = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (_, h) = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
        let (_, h) = parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn responses_are_framed_by_their_body() {
        let res = http::Response::new(());
        let (parts, ()) = res.into_parts();
        let mut keep = true;
        let mut out = BytesMut::new();
        assert_eq!(write_response(&parts, false, Version::HTTP_11, Some(3), &mut keep, &mut out), Out::Length(3));
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ndate: "), "{text}");
        let mut out = BytesMut::new();
        assert_eq!(write_response(&parts, false, Version::HTTP_10, None, &mut keep, &mut out), Out::Close);
        assert!(!keep);
        assert!(String::from_utf8(out.to_vec()).unwrap().contains("connection: close\r\n"));
    }
}
