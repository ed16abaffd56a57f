//! Fitting a full GET response to one client's request: a HEAD gets no body,
//! a matching `If-None-Match`/`If-Modified-Since` gets a 304, a `Range` gets
//! a 206 (or 416), as RFC 9110 §13–14 says. The cache stores and shares full
//! responses only; this is where each client's view of them is cut.
//!
//! Ranges: one `bytes=` range is served as 206 with Content-Range; several
//! ranges are answered with the whole 200 (allowed by RFC 9110 §14.2, simpler
//! for clients than multipart); `If-Range` that does not match gets the 200.
//!
//! A body the client will not read (HEAD, 304, 416) is dropped at once, never
//! read to its end here: a body being stored is read by its fill's own task,
//! and any other only costs its upstream connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Frame, SizeHint};

use cache_policy::{ByteRange, Ranged};

use crate::http::body::{Body, BoxError};

/// Cuts `res` (a full 200, a stored or fetched part, or any other status,
/// passed as is) to what the client's `method` and `headers` asked for.
pub(super) fn present(method: &Method, headers: &HeaderMap, res: Response<Body>) -> Response<Body> {
    if res.status() == StatusCode::PARTIAL_CONTENT {
        // A part is cut only when its body is known to be the range it claims:
        // one that disagrees (an origin's lie), or whose length is not known
        // before it ends (chunked), is passed on as it came, never cut into a
        // response that would break off.
        let length =
            crate::http::body::content_length(res.headers()).or_else(|| http_body::Body::size_hint(res.body()).exact());
        return match (cache_policy::content_range(res.headers()), client_range(method, headers, res.headers(), None)) {
            (Some(part), Some(Ranged::One(want))) if part.covers(&want) && length == Some(part.len()) => {
                cut(method, res, want, want.start - part.start)
            }
            _ => head_only(method, res),
        };
    }
    if res.status() != StatusCode::OK {
        return head_only(method, res);
    }
    if cache_policy::not_modified(headers, res.headers()) {
        let (mut parts, _unread) = res.into_parts();
        parts.status = StatusCode::NOT_MODIFIED;
        keep_304_headers(&mut parts.headers);
        return Response::from_parts(parts, Body::empty());
    }
    let Some(len) = crate::http::body::content_length(res.headers()) else { return head_only(method, res) };
    match client_range(method, headers, res.headers(), Some(len)) {
        Some(Ranged::One(want)) => cut(method, res, want, want.start),
        Some(Ranged::Unsatisfiable) => unsatisfiable(res, len),
        None => head_only(method, res),
    }
}

/// A 416 for a representation of `total` bytes, with `res`'s other fields.
pub(super) fn unsatisfiable(res: Response<Body>, total: u64) -> Response<Body> {
    let (mut parts, _unread) = res.into_parts();
    parts.status = StatusCode::RANGE_NOT_SATISFIABLE;
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::try_from(format!("bytes */{total}")) {
        parts.headers.insert(header::CONTENT_RANGE, v);
    }
    Response::from_parts(parts, Body::empty())
}

fn head_only(method: &Method, res: Response<Body>) -> Response<Body> {
    if method != Method::HEAD {
        return res;
    }
    let (parts, _unread) = res.into_parts();
    Response::from_parts(parts, Body::empty())
}

/// The single range a GET asks of the representation `res` describes (of
/// `len` bytes, or of the whole a part's `Content-Range` names), if `If-Range` allows.
pub(super) fn client_range(method: &Method, headers: &HeaderMap, res: &HeaderMap, len: Option<u64>) -> Option<Ranged> {
    cache_policy::asked(method, headers, res, len)
}

/// A 206 of `want`, whose first byte is at `offset` in `res`'s body.
fn cut(method: &Method, res: Response<Body>, want: ByteRange, offset: u64) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    parts.status = StatusCode::PARTIAL_CONTENT;
    let n = want.len();
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    if let Ok(v) = HeaderValue::try_from(want.content_range()) {
        parts.headers.insert(header::CONTENT_RANGE, v);
    }
    let (from, to) = (offset as usize, (offset + n) as usize);
    let file = parts.extensions.get::<crate::cache::disk::BodyFile>().filter(|f| offset + n <= f.len());
    let body = match (body, file) {
        // A body left in its disk file: read from the range's first byte.
        (_unread, Some(file)) => file.range(offset, n),
        // A stored body: cut it without copying. (Stored bodies match their
        // framing, which the range was checked against; `get` keeps a
        // mismatch from panicking all the same.)
        (Body::Full { data: Some(data) }, None) if data.get(from..to).is_some() => Body::full(data.slice(from..to)),
        (other, None) => Body::boxed(RangeBody { inner: other, skip: offset, left: n }),
    };
    head_only(method, Response::from_parts(parts, body))
}

/// RFC 9110 §15.4.5: a 304 carries the fields a 200 would have that describe
/// caching and validation, and no content fields.
pub(super) fn keep_304_headers(headers: &mut HeaderMap) {
    const KEEP: [HeaderName; 8] = [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::AGE,
        header::LAST_MODIFIED,
    ];
    let kept: HeaderMap =
        KEEP.iter().flat_map(|n| headers.get_all(n).iter().map(move |v| (n.clone(), v.clone()))).collect();
    *headers = kept;
}

pin_project_lite::pin_project! {
    /// Passes on `left` bytes after skipping `skip`, then ends; a body that
    /// ends sooner is an error, never a short range that looks complete.
    struct RangeBody {
        #[pin]
        inner: Body,
        skip: u64,
        left: u64,
    }
}

impl http_body::Body for RangeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.left == 0 {
                return Poll::Ready(None);
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err("the body ended before the range it was cut to".into())));
                }
                other => return other,
            };
            let Ok(mut data) = frame.into_data() else { continue };
            let len = data.len() as u64;
            if *this.skip >= len {
                *this.skip -= len;
                continue;
            }
            data = data.slice(*this.skip as usize..);
            *this.skip = 0;
            if data.len() as u64 > *this.left {
                data.truncate(*this.left as usize);
            }
            *this.left -= data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranged(range: &str, if_range: Option<&str>) -> Response<Body> {
        let mut req = http::Request::get("/").header(header::RANGE, range);
        if let Some(v) = if_range {
            req = req.header(header::IF_RANGE, v);
        }
        let (req, ()) = req.body(()).unwrap().into_parts();
        let res = Response::builder()
            .header(header::CONTENT_LENGTH, "10")
            .header(header::ETAG, "\"e\"")
            .body(Body::full("0123456789"))
            .unwrap();
        present(&req.method, &req.headers, res)
    }

    fn text(res: Response<Body>) -> (u16, Option<String>, String) {
        let status = res.status().as_u16();
        let cr = res.headers().get(header::CONTENT_RANGE).map(|v| v.to_str().unwrap().to_string());
        let body = match res.into_body() {
            Body::Full { data } => String::from_utf8(data.unwrap_or_default().to_vec()).unwrap(),
            Body::Empty => String::new(),
            _ => "<stream>".into(),
        };
        (status, cr, body)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(text(ranged("bytes=0-3", None)), (206, Some("bytes 0-3/10".into()), "0123".into()));
        assert_eq!(text(ranged("bytes=7-", None)), (206, Some("bytes 7-9/10".into()), "789".into()));
        assert_eq!(text(ranged("bytes=-2", None)), (206, Some("bytes 8-9/10".into()), "89".into()));
        assert_eq!(text(ranged("bytes=5-100", None)), (206, Some("bytes 5-9/10".into()), "56789".into()));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(text(ranged("bytes=10-", None)), (416, Some("bytes */10".into()), String::new()));
        assert_eq!(text(ranged("bytes=0-1,4-5", None)).0, 200);
        assert_eq!(text(ranged("items=0-1", None)).0, 200);
        assert_eq!(text(ranged("bytes=5-2", None)).0, 200);
    }

    #[test]
    fn if_range() {
        assert_eq!(text(ranged("bytes=0-0", Some("\"e\""))).0, 206);
        assert_eq!(text(ranged("bytes=0-0", Some("\"other\""))).0, 200);
    }

    #[test]
    fn a_part_answers_the_ranges_it_covers() {
        let asked = |range: &str| {
            let (req, ()) = http::Request::get("/").header(header::RANGE, range).body(()).unwrap().into_parts();
            let res = Response::builder()
                .status(206)
                .header(header::CONTENT_RANGE, "bytes 4-9/10")
                .header(header::CONTENT_LENGTH, "6")
                .body(Body::full("456789"))
                .unwrap();
            (
                cache_policy::part_covers(&req.method, &req.headers, res.headers()),
                text(present(&req.method, &req.headers, res)),
            )
        };
        assert_eq!(asked("bytes=6-8"), (true, (206, Some("bytes 6-8/10".into()), "678".into())));
        assert_eq!(asked("bytes=-1"), (true, (206, Some("bytes 9-9/10".into()), "9".into())));
        assert_eq!(asked("bytes=6-"), (true, (206, Some("bytes 6-9/10".into()), "6789".into())));
        // Not within the part: what the origin sent, as it is.
        assert_eq!(asked("bytes=0-5"), (false, (206, Some("bytes 4-9/10".into()), "456789".into())));
        assert!(!asked("bytes=0-1,6-7").0);
    }

    #[test]
    fn a_part_whose_body_is_not_its_range_is_passed_as_it_came() {
        // Content-Range says six bytes, the body has five: cutting from it would
        // promise bytes that never come.
        let (req, ()) = http::Request::get("/").header(header::RANGE, "bytes=-5").body(()).unwrap().into_parts();
        let res = Response::builder()
            .status(206)
            .header(header::CONTENT_RANGE, "bytes 4-9/10")
            .header(header::CONTENT_LENGTH, "5")
            .body(Body::full("56789"))
            .unwrap();
        assert_eq!(text(present(&req.method, &req.headers, res)), (206, Some("bytes 4-9/10".into()), "56789".into()));
    }

    #[test]
    fn a_part_of_unknown_length_is_passed_as_it_came_and_a_stored_one_is_cut() {
        let (req, ()) = http::Request::get("/").header(header::RANGE, "bytes=6-8").body(()).unwrap().into_parts();
        let part = |body: Body| {
            let res = Response::builder().status(206).header(header::CONTENT_RANGE, "bytes 4-9/10").body(body).unwrap();
            text(present(&req.method, &req.headers, res))
        };
        // Chunked from the origin: its length is known only at its end.
        let stream = http_body_util::StreamBody::new(futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(
            Bytes::from_static(b"45678"),
        ))]));
        assert_eq!(part(Body::boxed(stream)), (206, Some("bytes 4-9/10".into()), "<stream>".into()));
        // Stored, without a Content-Length field: the body's own length decides.
        assert_eq!(part(Body::full("456789")), (206, Some("bytes 6-8/10".into()), "678".into()));
        assert_eq!(part(Body::full("45678")), (206, Some("bytes 4-9/10".into()), "45678".into()));
    }

    #[tokio::test]
    async fn a_range_of_a_body_that_ends_short_is_an_error() {
        use http_body_util::BodyExt;
        let short = RangeBody {
            inner: Body::boxed(http_body_util::Full::new(Bytes::from_static(b"0123")).map_err(|e| match e {})),
            skip: 1,
            left: 5,
        };
        let mut short = std::pin::pin!(short);
        assert_eq!(short.frame().await.unwrap().unwrap().into_data().unwrap(), "123");
        assert!(short.frame().await.unwrap().is_err());
    }
}
