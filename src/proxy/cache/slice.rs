//! nginx's slice model (`cache.slice`): a route's responses are fetched and
//! stored as fixed-size ranges, so a large file is cached piece by piece as
//! clients read it, and a range request costs the origin one slice, not the file.
//!
//! Slice `n` of a URL is asked for as `Range: bytes=n*size-(n+1)*size-1`, stored
//! as a part under a key of its own (`URL#slice=start`, which no request URL can
//! have) and indexed under the URL, so purging the URL purges every slice.
//! Each slice is looked up, collapsed and stored like any response. The client
//! gets a 200 (or its single range as a 206) assembled from the slices its
//! range spans, fetched one after the other as it reads. A slice whose
//! length, total or ETag does not match the first ends the response with an
//! error, as in nginx: two versions of a file are never spliced.

use tokio::sync::mpsc;

use super::*;
use crate::cache::key::Keyed;
use crate::http::body::BoxError;
use bytes::Bytes;
use cache_policy::{Bypass, ByteRange, CacheStatus, Ranged};

/// What every slice of one client's request is fetched with.
#[derive(Clone)]
struct Ask {
    origin: ToOrigin,
    /// The client's request as the fills ask it (GET).
    head: Arc<Parts>,
}

/// Answers a GET or HEAD on a sliced route.
pub(super) async fn serve(
    p: &Arc<Pipeline>,
    route: &Arc<Route>,
    conn: &Arc<Conn>,
    host: Option<HeaderValue>,
    parts: Parts,
    url: Keyed,
    size: u64,
) -> Result<Answer, ProxyError> {
    let method = parts.method.clone();
    let origin =
        ToOrigin { p: p.clone(), route: route.clone(), conn: conn.clone(), host, ask_owner: false, interim: None };
    let ask = Ask { origin, head: fill_head(parts) };
    let client = &ask.head.headers;
    let spec = Some(client).filter(|_| method == Method::GET).and_then(|h| h.get(header::RANGE));
    let first = spec.and_then(|v| first_byte(v.to_str().ok()?)).map_or(0, |b| b / size * size);
    let mut head = one(&ask, &url, first, size).await?;
    let mut got = fits(&head.response, first, size, None, None);
    if got.is_none() && first > 0 && head.response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        // Past the end: slice 0 says how long the file is, for the 416.
        head = one(&ask, &url, 0, size).await?;
        got = fits(&head.response, 0, size, None, None);
    }
    let Some(part) = got else {
        if head.response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            // Slice 0 past the end: an empty file. Asked for as it is, not stored.
            let req = crate::cache::upstream_request(&ask.head, Method::GET);
            let fwd = ask.origin.fetch(req).await?;
            let answer = Answer { cache: Some(CacheStatus::bypass(Bypass::SliceEmpty)), ..fwd };
            return Ok(client_view(&method, &ask.head, answer));
        }
        // An error, or an origin that ignores ranges: shown as it is.
        return Ok(client_view(&method, &ask.head, head));
    };
    let total = part.total;
    let etag = head.response.headers().get(header::ETAG).cloned();
    let (want, ranged) = match present::client_range(&method, client, head.response.headers(), Some(total)) {
        Some(Ranged::One(want)) => (want, true),
        Some(Ranged::Unsatisfiable) => {
            return Ok(Answer { response: present::unsatisfiable(head.response, total), ..head });
        }
        None => (ByteRange { start: 0, end: total - 1, total }, false),
    };
    let at = want.start / size * size;
    if at != part.start {
        // A suffix range, or an If-Range that did not match: another first slice.
        head = one(&ask, &url, at, size).await?;
        if fits(&head.response, at, size, Some(total), etag.as_ref()).is_none() {
            return Err(ProxyError::Collapsed(StatusCode::BAD_GATEWAY));
        }
    }
    let (mut res_parts, body) = head.response.into_parts();
    res_parts.headers.remove(header::CONTENT_RANGE);
    res_parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(want.len()));
    res_parts.status = StatusCode::OK;
    if ranged {
        res_parts.status = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::try_from(want.content_range()) {
            res_parts.headers.insert(header::CONTENT_RANGE, v);
        }
    } else if cache_policy::not_modified(client, &res_parts.headers) {
        res_parts.status = StatusCode::NOT_MODIFIED;
        present::keep_304_headers(&mut res_parts.headers);
        return Ok(Answer { response: Response::from_parts(res_parts, Body::empty()), ..head });
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let (tx, rx) = mpsc::channel(4);
        let slices = Slices { ask, url, size, want, etag };
        tokio::spawn(slices.send(body, at, tx));
        Body::channel(rx)
    };
    Ok(Answer { response: Response::from_parts(res_parts, body), ..head })
}

/// One slice: its fresh stored part, or the origin's answer to its range
/// (stored as it streams, and shared with concurrent requests for it).
async fn one(ask: &Ask, url: &Keyed, start: u64, size: u64) -> Result<Answer, ProxyError> {
    let p = &ask.origin.p;
    let cache = HttpCache::new(&p.cache);
    let miss = match cache.lookup_slice(url, start, &ask.head).await {
        Phase::Fresh(hit) => return Ok(hit.into_answer()),
        Phase::StaleWhileRevalidate(_, miss) | Phase::Stale(miss) | Phase::Part(miss) | Phase::Miss(miss) => miss,
    };
    if cache_policy::only_if_cached(&ask.head) {
        return Err(ProxyError::NotCached);
    }
    admit_origin(p, &ask.origin.route, &ask.origin.conn, &ask.head).await?;
    let range = HeaderValue::try_from(format!("bytes={start}-{}", last_of(start, size))).ok();
    Box::pin(fill(cache, miss.with_range(range), ask.origin.clone(), ask.head.clone())).await
}

/// The part `res` carries if it is the slice at `start` of the file the first
/// slice described (its total and ETag, once known).
fn fits(
    res: &Response<Body>,
    start: u64,
    size: u64,
    total: Option<u64>,
    etag: Option<&HeaderValue>,
) -> Option<ByteRange> {
    if res.status() != StatusCode::PARTIAL_CONTENT {
        return None;
    }
    let part = cache_policy::content_range(res.headers())?;
    let end = last_of(start, size).min(part.total - 1);
    let same_file =
        total.is_none_or(|t| t == part.total) && (total.is_none() || res.headers().get(header::ETAG) == etag);
    (part.start == start && part.end == end && same_file).then_some(part)
}

/// The last byte of the slice at `start` (positions near u64::MAX come from clients).
fn last_of(start: u64, size: u64) -> u64 {
    start.saturating_add(size - 1)
}

/// The first byte a `Range` asks for, when it names one (`bytes=a-` or `bytes=a-b`).
fn first_byte(spec: &str) -> Option<u64> {
    let first = spec.trim().strip_prefix("bytes=")?.split(',').next()?;
    first.split_once('-')?.0.trim().parse().ok()
}

/// The bytes a client wants, read slice after slice.
struct Slices {
    ask: Ask,
    url: Keyed,
    size: u64,
    want: ByteRange,
    etag: Option<HeaderValue>,
}

impl Slices {
    /// Sends `want`'s bytes to `tx`, starting with `body`, the slice at `at`.
    /// Stops when the client is gone; an error ends the client's response.
    async fn send(self, mut body: Body, mut at: u64, tx: mpsc::Sender<Result<http_body::Frame<Bytes>, BoxError>>) {
        use http_body_util::BodyExt;
        let want = self.want;
        let mut pos = want.start;
        loop {
            let slice_end = last_of(at, self.size).min(want.total - 1);
            let mut offset = at;
            while let Some(frame) = body.frame().await {
                let data = match frame.map(|f| f.into_data()) {
                    Ok(Ok(data)) => data,
                    Ok(Err(_)) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let next = offset + data.len() as u64;
                let (from, to) = (pos.max(offset), (want.end + 1).min(next));
                if from < to {
                    let piece = data.slice((from - offset) as usize..(to - offset) as usize);
                    if tx.send(Ok(http_body::Frame::data(piece))).await.is_err() {
                        return;
                    }
                    pos = to;
                }
                offset = next;
                if pos > want.end {
                    return;
                }
            }
            if offset != slice_end + 1 {
                let _ = tx.send(Err(format!("slice at {at} of {} ended early", self.url.url).into())).await;
                return;
            }
            at = at.saturating_add(self.size);
            body = match one(&self.ask, &self.url, at, self.size).await {
                Ok(s) if fits(&s.response, at, self.size, Some(want.total), self.etag.as_ref()).is_some() => {
                    s.response.into_body()
                }
                Ok(s) => {
                    tracing::warn!(url = %self.url.url, at, status = %s.response.status(), "slice does not match the first (length or ETag); response cut short");
                    let _ = tx.send(Err("a slice of another version of the file".into())).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            };
        }
    }
}
