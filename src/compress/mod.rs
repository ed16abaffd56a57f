//! Compression on the way out (`[compression]`, a route's `compression`):
//! which responses, which coding, and the header changes a transformed body needs.
//!
//! A leaf: it knows HTTP and the encoders, not the cache or the routes. One
//! entry point decides: [`Compression::for_route`] says whether relais
//! compresses a route's responses at all; the [`RoutePlan`] it returns
//! [`apply`](RoutePlan::apply)s to each response on its way out, and answers
//! the cache stage's questions (ask the origin for identity, key without
//! `Accept-Encoding`, name a stored body for its copies).

mod encode;
mod negotiate;
mod stored;
mod window;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use tokio::sync::OwnedSemaphorePermit;

pub use encode::encode_all;
pub(crate) use negotiate::{Encoding, accepts, choose};
pub(crate) use stored::{Encodings, Source};

use crate::config::{CompressionConfig, Levels, MediaType, RouteCompression};
use crate::http::body::Body;

/// `[compression]`, compiled once per configuration.
pub(crate) struct Compression {
    pub enabled: bool,
    /// Undo the origin's coding for clients that do not accept it.
    decode: bool,
    preference: Vec<Encoding>,
    min_length: u64,
    types: Vec<MediaType>,
    /// Encoded copies of cached bodies, kept for the life of the process.
    pub copies: Arc<Encodings>,
}

/// Levels for compressing on the fly (zstd, br, gzip): cheap enough per
/// response (`cargo bench --bench compress`: zstd 3 600 MiB/s, br 4 120 MiB/s,
/// gzip 5 89 MiB/s on a 100 KiB page; brotli 11 runs at 1 MiB/s).
const DEFAULT_LEVELS: [i32; 3] = [3, 4, 5];
/// Levels for the copies of cached bodies, made once: smaller output for a
/// few milliseconds per 100 KiB (zstd 9 80 MiB/s, br 9 16 MiB/s, gzip 6 31 MiB/s;
/// gzip 6 is 7% smaller than nginx's level 5).
const STORED_LEVELS: [i32; 3] = [9, 9, 6];

/// A route's part of compression, built with the route: whether
/// `[compression]` applies there, and its levels (the route's own over
/// `[compression]`'s over the defaults), indexed by [`Encoding`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteSettings {
    on: bool,
    levels: [i32; 3],
    stored_levels: [i32; 3],
}

impl RouteSettings {
    pub(crate) fn new(c: &CompressionConfig, route: &RouteCompression) -> RouteSettings {
        let resolve = |set: Levels, defaults: [i32; 3]| {
            [Encoding::Zstd, Encoding::Br, Encoding::Gzip].map(|e| set.get(e).unwrap_or(defaults[e as usize]))
        };
        RouteSettings {
            on: route.on,
            levels: resolve(route.levels.or(c.levels), DEFAULT_LEVELS),
            stored_levels: resolve(route.stored_levels.or(c.stored_levels), STORED_LEVELS),
        }
    }
}

/// What relais does with one route's responses, when it compresses them.
#[derive(Clone, Copy)]
pub(crate) struct RoutePlan<'a> {
    c: &'a Compression,
    levels: [i32; 3],
    stored_levels: [i32; 3],
}

impl Compression {
    /// `copies` is the process's store of encoded copies; its budget becomes
    /// this configuration's `stored_memory` (none when compression is off).
    pub(crate) fn new(c: &CompressionConfig, copies: Arc<Encodings>) -> Compression {
        copies.resize(if c.enabled { c.stored_memory.bytes() } else { 0 });
        Compression {
            enabled: c.enabled,
            decode: c.decode,
            preference: c.encodings.clone(),
            min_length: c.min_length.bytes(),
            types: c.types.clone(),
            copies,
        }
    }

    /// Whether relais compresses (and decodes) this route's responses itself:
    /// the one question every stage asks.
    pub(crate) fn for_route(&self, route: &RouteSettings) -> Option<RoutePlan<'_>> {
        (self.enabled && route.on).then_some(RoutePlan {
            c: self,
            levels: route.levels,
            stored_levels: route.stored_levels,
        })
    }

    /// Whether relais would compress a response like this one for some client:
    /// then every answer for it says `Vary: Accept-Encoding`.
    pub(crate) fn eligible(&self, method: &Method, status: StatusCode, res: &HeaderMap) -> bool {
        self.enabled
            && *method != Method::HEAD
            && status.is_success()
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::PARTIAL_CONTENT
            && !res.contains_key(header::CONTENT_RANGE)
            && res.get(header::CONTENT_ENCODING).is_none_or(|e| e.as_bytes().eq_ignore_ascii_case(b"identity"))
            && !no_transform(res)
            && crate::http::body::content_length(res).is_none_or(|n| n >= self.min_length)
            && self.media_type_listed(res)
    }

    /// The origin's coding to undo for a client that does not accept it (nginx's
    /// `gunzip`): gzip, br or zstd, alone, on a 2xx other than 206.
    fn to_decode(&self, status: StatusCode, request: &HeaderMap, res: &HeaderMap) -> Option<Encoding> {
        if !self.enabled
            || !self.decode
            || !status.is_success()
            || status == StatusCode::PARTIAL_CONTENT
            || no_transform(res)
        {
            return None;
        }
        let mut codings = res.get_all(header::CONTENT_ENCODING).iter();
        let e = Encoding::parse(codings.next()?.to_str().ok()?.trim())?;
        (codings.next().is_none() && !accepts(request, e)).then_some(e)
    }

    fn media_type_listed(&self, res: &HeaderMap) -> bool {
        let Some(ct) = res.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
        let media = ct.split(';').next().unwrap_or("").trim();
        self.types.iter().any(|t| t.matches(media))
    }
}

impl RoutePlan<'_> {
    /// The response as this client gets it: compressed on the fly when it
    /// accepts a coding (a HEAD gets the headers the GET would have; a cached
    /// body sent whole, marked by [`stored_source`](Self::stored_source), gets
    /// its copy made once), or with the origin's coding undone when it does
    /// not accept that one. `memory` gives a decoder its room in
    /// `buffering.memory`; a decoder refused is the error, which the caller
    /// answers with its status (502 or 503).
    pub(crate) async fn apply(
        self,
        method: &Method,
        accept: &HeaderMap,
        mut response: Response<Body>,
        memory: impl FnOnce(u64) -> Option<OwnedSemaphorePermit>,
    ) -> Result<Response<Body>, DecodeError> {
        let c = self.c;
        let head = *method == Method::HEAD;
        if let Some(e) = c.to_decode(response.status(), accept, response.headers()) {
            return decode(response, e, head, memory).await;
        }
        let get = if head { &Method::GET } else { method };
        if !c.eligible(get, response.status(), response.headers()) {
            return Ok(response);
        }
        let Some(e) = choose(accept, &c.preference) else {
            vary_on_encoding(response.headers_mut());
            return Ok(response);
        };
        if head {
            encoded_headers(response.headers_mut(), e, None);
            return Ok(response);
        }
        let level = self.levels[e as usize];
        let stored = response.extensions().get::<Source>().cloned();
        Ok(match stored {
            // A cached body sent whole: its stored copy in `e`.
            Some(source) if matches!(response.body(), Body::Full { .. }) => {
                encode_stored(response, &source, e, (level, self.stored_levels[e as usize]), &c.copies)
            }
            _ => encode(response, e, level),
        })
    }

    /// The origin is asked for the identity form (no `Accept-Encoding`): the
    /// one copy stored serves every client, and relais encodes it.
    pub(crate) fn ask_identity(&self, request: &mut HeaderMap) {
        request.remove(header::ACCEPT_ENCODING);
    }

    /// What a hit (`url`'s entry stored at `stored_at`, its body `body`)
    /// carries so that [`apply`](Self::apply) sends the copy made once per
    /// encoding; only a 200 with a body has copies.
    pub(crate) fn stored_source(
        &self,
        status: StatusCode,
        url: &str,
        stored_at: std::time::SystemTime,
        body: &Bytes,
    ) -> Option<Source> {
        (status == StatusCode::OK && !body.is_empty()).then(|| Source::new(url, stored_at, body))
    }
}

fn no_transform(res: &HeaderMap) -> bool {
    res.get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `Vary: *`).
fn vary_on_encoding(headers: &mut HeaderMap) {
    let listed = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim() == "*" || n.trim().eq_ignore_ascii_case("accept-encoding"));
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// The header changes of a body encoded with `e`: the coding named, the length
/// dropped (or set, when known), a strong ETag made weak (RFC 9110 §8.8.1: the
/// bytes differ, the meaning does not), ranges no longer offered.
fn encoded_headers(headers: &mut HeaderMap, e: Encoding, len: Option<u64>) {
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e.token()));
    match len {
        Some(n) => headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n)),
        None => headers.remove(header::CONTENT_LENGTH),
    };
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
    vary_on_encoding(headers);
}

fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG)
        && etag.as_bytes().starts_with(b"\"")
        && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
    {
        headers.insert(header::ETAG, weak);
    }
}

/// `res`, whose body is the cached `source`, with its stored copy in `e` at
/// `stored_level`; encoded as it streams at `level` while that copy is being made.
fn encode_stored(
    res: Response<Body>,
    source: &Source,
    e: Encoding,
    (level, stored_level): (i32, i32),
    copies: &Arc<Encodings>,
) -> Response<Body> {
    match copies.get(source, e, stored_level) {
        Some(bytes) => {
            let (mut parts, _identity) = res.into_parts();
            encoded_headers(&mut parts.headers, e, Some(bytes.len() as u64));
            Response::from_parts(parts, Body::full(bytes))
        }
        None => encode(res, e, level),
    }
}

/// Why a body was not decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Its window is larger than relais decodes (zstd past 8 MiB, large-window brotli).
    #[error("the origin's {0} body needs a {1}-byte window, more than relais decodes")]
    Window(&'static str, u64),
    /// `buffering.memory` has no room for the decoder now.
    #[error("no room in buffering.memory for a {0}-byte decoder")]
    Memory(u64),
    /// The origin's body failed before its first bytes, or no decoder could be made.
    #[error("{0}")]
    Broken(String),
}

impl DecodeError {
    /// 502 for what the origin sent, 503 for relais's own lack of room.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            DecodeError::Memory(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// `res` with the origin's coding `e` undone as it streams (HEAD: the headers
/// only). The body's first bytes say what the decoder needs: a window larger
/// than relais decodes is refused, and the decoder's memory is taken with
/// `memory` (from `buffering.memory`) for as long as it runs, or refused when
/// there is no room; either before any of the response is sent.
async fn decode(
    res: Response<Body>,
    e: Encoding,
    head: bool,
    memory: impl FnOnce(u64) -> Option<OwnedSemaphorePermit>,
) -> Result<Response<Body>, DecodeError> {
    use http_body_util::BodyExt;
    let (mut parts, mut body) = res.into_parts();
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::ACCEPT_RANGES);
    weaken_etag(&mut parts.headers);
    vary_on_encoding(&mut parts.headers);
    if head {
        return Ok(Response::from_parts(parts, body));
    }
    let mut started = bytes::Bytes::new();
    let need = loop {
        let at_end = http_body::Body::is_end_stream(&body);
        match window::need(e, &started, at_end) {
            window::Need::More => {}
            need => break need,
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    started = if started.is_empty() { data } else { [started, data].concat().into() };
                }
            }
            Some(Err(err)) => return Err(DecodeError::Broken(err.to_string())),
            None => break window::need(e, &started, true),
        }
    };
    let (bytes, window_log) = match need {
        window::Need::Memory { bytes, window_log } => (bytes, window_log),
        window::Need::TooLarge { window } => return Err(DecodeError::Window(e.token(), window)),
        // Said only before the body's end.
        window::Need::More => return Err(DecodeError::Broken("the body ended early".into())),
    };
    let budget = memory(bytes).ok_or(DecodeError::Memory(bytes))?;
    let decoded = encode::Encoded::decoding(started, body, e, window_log, budget)
        .map_err(|err| DecodeError::Broken(format!("cannot start a decoder: {err}")))?;
    Ok(Response::from_parts(parts, Body::boxed(decoded)))
}

/// `res` with its body encoded as it streams.
fn encode(res: Response<Body>, e: Encoding, level: i32) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    match encode::Encoded::new(body, e, level) {
        Ok(encoded) => {
            encoded_headers(&mut parts.headers, e, None);
            Response::from_parts(parts, Body::boxed(encoded))
        }
        Err((body, e)) => {
            tracing::warn!(error = %e, "cannot start an encoder; sent as it is");
            Response::from_parts(parts, body)
        }
    }
}
