//! Byte ranges (RFC 9110 §14): what a `Range` asks of a representation of
//! known length, and which part of it a `206`'s `Content-Range` carries.
//!
//! Only single ranges are served: several ranges get the whole response
//! (allowed by §14.2), and a multipart 206 is neither stored nor cut.

use http::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use http::{HeaderMap, Method};

/// A part of a representation: inclusive byte positions and the whole length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
    pub total: u64,
}

impl ByteRange {
    /// Bytes in it (never zero: a range holds its first and last byte).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Whether `other` lies within this part.
    pub fn covers(&self, other: &ByteRange) -> bool {
        self.total == other.total && self.start <= other.start && other.end <= self.end
    }

    /// The `Content-Range` value describing it.
    pub fn content_range(&self) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, self.total)
    }
}

/// What a `Range` header asks of a representation of `total` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranged {
    One(ByteRange),
    /// Nothing of it exists: answered 416 with `Content-Range: bytes */total`.
    Unsatisfiable,
}

/// The single range a `Range` value asks of `total` bytes; `None` when the
/// header is to be ignored (not bytes, several ranges, invalid).
pub fn resolve(spec: &str, total: u64) -> Option<Ranged> {
    let ranges = spec.trim().strip_prefix("bytes=")?;
    let mut parts = ranges.split(',').map(str::trim).filter(|r| !r.is_empty());
    let first = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let (a, b) = first.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 || total == 0 {
                return Some(Ranged::Unsatisfiable);
            }
            (total.saturating_sub(n), total - 1)
        }
        (s, "") => (s.parse().ok()?, total.saturating_sub(1)),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().ok()?, e.parse().ok()?);
            if e < s {
                return None;
            }
            (s, e.min(total.saturating_sub(1)))
        }
    };
    if start >= total {
        return Some(Ranged::Unsatisfiable);
    }
    Some(Ranged::One(ByteRange { start, end, total }))
}

/// The part a `206` carries: one `Content-Range: bytes a-b/N` with a known
/// whole length and `a <= b < N`; `None` for anything else.
pub fn content_range(headers: &HeaderMap) -> Option<ByteRange> {
    let mut values = headers.get_all(CONTENT_RANGE).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let digits = |s: &str| Some(s).filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?.parse().ok();
    let part = ByteRange { start: digits(start)?, end: digits(end)?, total: digits(total)? };
    (part.start <= part.end && part.end < part.total).then_some(part)
}

/// The single range a GET (`method`, `req` its headers) asks of the
/// representation `res` describes (of `len` bytes, or of the whole a part's
/// `Content-Range` names), if `If-Range` allows.
pub fn asked(method: &Method, req: &HeaderMap, res: &HeaderMap, len: Option<u64>) -> Option<Ranged> {
    if method != Method::GET {
        return None;
    }
    let spec = req.get(RANGE)?.to_str().ok()?;
    let total = len.or_else(|| content_range(res).map(|p| p.total))?;
    if !if_range_matches(req, res) {
        return None;
    }
    resolve(spec, total)
}

/// Whether a stored part answers a request on its own: a single range within it.
pub fn part_covers(method: &Method, req: &HeaderMap, stored: &HeaderMap) -> bool {
    match (content_range(stored), asked(method, req, stored, None)) {
        (Some(part), Some(Ranged::One(want))) => part.covers(&want),
        _ => false,
    }
}

/// `If-Range`: a strong ETag equal to the response's, or its exact Last-Modified date.
fn if_range_matches(req: &HeaderMap, res: &HeaderMap) -> bool {
    let Some(cond) = req.get(IF_RANGE) else { return true };
    let Ok(cond) = cond.to_str() else { return false };
    if cond.starts_with('"') {
        return res.get(ETAG).and_then(|e| e.to_str().ok()).is_some_and(|e| e == cond);
    }
    res.get(LAST_MODIFIED).and_then(|l| l.to_str().ok()).is_some_and(|l| l == cond)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(start: u64, end: u64, total: u64) -> Option<Ranged> {
        Some(Ranged::One(ByteRange { start, end, total }))
    }

    #[test]
    fn ranges_resolve_against_the_length() {
        assert_eq!(resolve("bytes=0-3", 10), one(0, 3, 10));
        assert_eq!(resolve("bytes=7-", 10), one(7, 9, 10));
        assert_eq!(resolve("bytes=-2", 10), one(8, 9, 10));
        assert_eq!(resolve("bytes=-20", 10), one(0, 9, 10));
        assert_eq!(resolve("bytes=5-100", 10), one(5, 9, 10));
        assert_eq!(resolve("bytes=10-", 10), Some(Ranged::Unsatisfiable));
        assert_eq!(resolve("bytes=-0", 10), Some(Ranged::Unsatisfiable));
        assert_eq!(resolve("bytes=0-1,4-5", 10), None);
        assert_eq!(resolve("items=0-1", 10), None);
        assert_eq!(resolve("bytes=5-2", 10), None);
        assert_eq!(resolve("bytes=x-2", 10), None);
    }

    #[test]
    fn content_ranges_are_single_complete_and_ordered() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(CONTENT_RANGE, v.parse().unwrap());
            m
        };
        assert_eq!(content_range(&h("bytes 4-9/10")), Some(ByteRange { start: 4, end: 9, total: 10 }));
        for bad in
            ["bytes 4-9/*", "bytes */10", "bytes 9-4/10", "bytes 4-10/10", "bytes +4-9/10", "items 0-1/2", "bytes 0-1"]
        {
            assert_eq!(content_range(&h(bad)), None, "{bad}");
        }
        let mut two = h("bytes 0-1/10");
        two.append(CONTENT_RANGE, "bytes 2-3/10".parse().unwrap());
        assert_eq!(content_range(&two), None);
        let part = ByteRange { start: 4, end: 9, total: 10 };
        assert!(part.covers(&ByteRange { start: 6, end: 8, total: 10 }));
        assert!(!part.covers(&ByteRange { start: 3, end: 8, total: 10 }));
        assert!(!part.covers(&ByteRange { start: 6, end: 8, total: 11 }));
        assert_eq!(part.len(), 6);
    }
}
