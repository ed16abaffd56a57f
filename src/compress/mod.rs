//! Compression on the way out (`[compression]`): which responses, which
//! coding, and the header changes a transformed body needs.
//!
//! A leaf: it knows HTTP and the encoders, not the cache or the routes. The
//! pipeline asks [`Compression::to_decode`], [`Compression::eligible`] and
//! [`choose`] for each response and [`encode()`]s it.

mod encode;
mod negotiate;
mod stored;
mod window;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

pub use encode::encode_all;
pub use negotiate::{Encoding, accepts, choose};
pub use stored::{Encodings, Source};

use crate::config::CompressionConfig;
use crate::http::body::Body;

/// `[compression]`, compiled once per configuration.
pub struct Compression {
    pub enabled: bool,
    /// Undo the origin's coding for clients that do not accept it.
    decode: bool,
    preference: Vec<Encoding>,
    min_length: u64,
    /// The media types compressed, parsed once.
    types: Vec<MediaPattern>,
    levels: [i32; 3],
    /// Levels of the copies made once for cached bodies.
    stored_levels: [i32; 3],
    /// Encoded copies of cached bodies.
    pub copies: Encodings,
}

/// Levels for compressing on the fly (zstd, br, gzip): cheap enough per
/// response (`cargo bench --bench compress`: zstd 3 600 MiB/s, br 4 120 MiB/s,
/// gzip 5 89 MiB/s on a 100 KiB page; brotli 11 runs at 1 MiB/s).
const DEFAULT_LEVELS: [i32; 3] = [3, 4, 5];
/// Levels for the copies of cached bodies, made once: smaller output for a
/// few milliseconds per 100 KiB (zstd 9 80 MiB/s, br 9 16 MiB/s, gzip 6 31 MiB/s;
/// gzip 6 is 7% smaller than nginx's level 5).
const STORED_LEVELS: [i32; 3] = [9, 9, 6];

impl Compression {
    pub fn new(c: &CompressionConfig) -> Compression {
        let configured = |defaults: [i32; 3], set: &std::collections::BTreeMap<String, i32>| {
            let mut levels = defaults;
            for (name, level) in set {
                if let Some(e) = Encoding::parse(name) {
                    levels[e as usize] = *level;
                }
            }
            levels
        };
        let levels = configured(DEFAULT_LEVELS, &c.levels);
        let stored_levels = configured(STORED_LEVELS, &c.stored_levels);
        let types = c.types.iter().map(|t| MediaPattern::new(t)).collect();
        Compression {
            enabled: c.enabled,
            decode: c.decode,
            preference: c.encodings.iter().filter_map(|e| Encoding::parse(e)).collect(),
            min_length: c.min_length.bytes(),
            types,
            levels,
            stored_levels,
            copies: Encodings::new(if c.enabled { c.stored_memory.bytes() } else { 0 }),
        }
    }

    pub fn preference(&self) -> &[Encoding] {
        &self.preference
    }

    pub fn level(&self, e: Encoding) -> i32 {
        self.levels[e as usize]
    }

    /// Whether relais would compress a response like this one for some client:
    /// then every answer for it says `Vary: Accept-Encoding`.
    pub fn eligible(&self, method: &Method, status: StatusCode, res: &HeaderMap) -> bool {
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
    pub fn to_decode(&self, status: StatusCode, request: &HeaderMap, res: &HeaderMap) -> Option<Encoding> {
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

/// A `compression.types` entry: `text/html`, a family `text/*`, or a
/// structured suffix `application/*+json` (any `application/...+json`).
enum MediaPattern {
    Exact(String),
    /// `text/`.
    Family(String),
    /// `application/` and `+json`.
    Suffixed(String, String),
}

impl MediaPattern {
    fn new(t: &str) -> MediaPattern {
        let t = t.to_ascii_lowercase();
        if let Some((family, suffix)) = t.split_once("/*+") {
            return MediaPattern::Suffixed(format!("{family}/"), format!("+{suffix}"));
        }
        match t.strip_suffix('*') {
            Some(family) if family.ends_with('/') => MediaPattern::Family(family.to_string()),
            _ => MediaPattern::Exact(t),
        }
    }

    /// `media` is compared without regard to case, and without allocating.
    fn matches(&self, media: &str) -> bool {
        let starts = |p: &str| media.len() >= p.len() && media.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
        match self {
            MediaPattern::Exact(t) => media.eq_ignore_ascii_case(t),
            MediaPattern::Family(f) => starts(f),
            MediaPattern::Suffixed(f, s) => {
                starts(f)
                    && media.len() >= f.len() + s.len()
                    && media.as_bytes()[media.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
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
pub fn vary_on_encoding(headers: &mut HeaderMap) {
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
pub fn encoded_headers(headers: &mut HeaderMap, e: Encoding, len: Option<u64>) {
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

/// `res`, whose body is the cached `source`, with its stored copy in `e`;
/// encoded as it streams while that copy is being made.
pub fn encode_stored(res: Response<Body>, source: &Source, e: Encoding, c: &Compression) -> Response<Body> {
    match c.copies.get(source, e, c.stored_levels[e as usize]) {
        Some(bytes) => {
            let (mut parts, _identity) = res.into_parts();
            encoded_headers(&mut parts.headers, e, Some(bytes.len() as u64));
            Response::from_parts(parts, Body::full(bytes))
        }
        None => encode(res, e, c.level(e)),
    }
}

/// Why a body was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
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
    pub fn status(&self) -> StatusCode {
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
pub async fn decode(
    res: Response<Body>,
    e: Encoding,
    head: bool,
    memory: impl FnOnce(u64) -> Option<tokio::sync::OwnedSemaphorePermit>,
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
pub fn encode(res: Response<Body>, e: Encoding, level: i32) -> Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::MediaPattern;

    #[test]
    fn media_patterns_match_without_regard_to_case() {
        let exact = MediaPattern::new("application/json");
        assert!(exact.matches("application/json") && exact.matches("Application/JSON"));
        assert!(!exact.matches("application/json5"));
        let family = MediaPattern::new("text/*");
        assert!(family.matches("text/html") && family.matches("TEXT/plain"));
        assert!(!family.matches("textual/html") && !family.matches("text"));
        let suffixed = MediaPattern::new("application/*+json");
        assert!(suffixed.matches("application/problem+json") && suffixed.matches("application/LD+JSON"));
        assert!(!suffixed.matches("application/json") && !suffixed.matches("text/x+json"));
        assert!(!suffixed.matches("application/+jso"));
    }
}
