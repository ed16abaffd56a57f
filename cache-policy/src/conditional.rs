//! Client conditionals evaluated against a stored response (RFC 9110 §13.2.2,
//! RFC 9111 §4.3.2), so a fresh hit can answer 304 without the origin.
//!
//! `If-None-Match` takes precedence: when present, `If-Modified-Since` is ignored.
//! The cache answers only the 304-producing conditionals; `If-Match` and
//! `If-Unmodified-Since` make [`crate::lookup_allowed`] send the request to the
//! origin. A server that holds the representation itself (static files) asks
//! [`precondition_failed`] first, then [`not_modified`].

use http::HeaderMap;
use http::header::{DATE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE, LAST_MODIFIED};

use crate::etag::{self, Member};
use crate::headers::single_date;

/// Whether the client's conditionals say it already has the stored representation,
/// i.e. whether to answer 304 instead of the stored response.
///
/// `req` are the client's request headers, `stored` the stored response's headers.
/// Meaningful for GET and HEAD only, the only methods served from the cache.
pub fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    if req.contains_key(IF_NONE_MATCH) {
        let stored_tag = stored.get(ETAG).and_then(|v| v.to_str().ok()).and_then(etag::parse_one);
        return req.get_all(IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(etag::parse_list).any(
            |member| match member {
                Member::Any => true,
                Member::Tag(tag) => stored_tag.is_some_and(|s| s.weak_eq(&tag)),
            },
        );
    }
    // An invalid or repeated If-Modified-Since is ignored (RFC 9110 §13.1.3).
    let Some(since) = single_date(req, IF_MODIFIED_SINCE) else {
        return false;
    };
    // Without Last-Modified, a cache uses the stored Date (RFC 9111 §4.3.2).
    let modified = single_date(stored, LAST_MODIFIED).or_else(|| single_date(stored, DATE));
    modified.is_some_and(|modified| modified <= since)
}

/// Whether `If-Match` or `If-Unmodified-Since` fails against the current
/// representation (`res` its headers): a 412 (RFC 9110 §13.2.2, steps 1–2).
/// `If-Match` compares strongly and, when present, `If-Unmodified-Since` is ignored.
pub fn precondition_failed(req: &HeaderMap, res: &HeaderMap) -> bool {
    if req.contains_key(IF_MATCH) {
        let current = res.get(ETAG).and_then(|v| v.to_str().ok()).and_then(etag::parse_one);
        let matched =
            req.get_all(IF_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(etag::parse_list).any(|member| {
                match member {
                    Member::Any => current.is_some(),
                    Member::Tag(tag) => current.is_some_and(|c| c.strong_eq(&tag)),
                }
            });
        return !matched;
    }
    let Some(since) = single_date(req, IF_UNMODIFIED_SINCE) else {
        return false;
    };
    single_date(res, LAST_MODIFIED).is_some_and(|modified| modified > since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn preconditions() {
        let res = headers(&[("etag", "\"a\""), ("last-modified", "Sun, 06 Dec 2026 10:00:00 GMT")]);
        let failed = |req: &[(&'static str, &str)]| precondition_failed(&headers(req), &res);
        assert!(!failed(&[]));
        assert!(!failed(&[("if-match", "\"a\"")]));
        assert!(!failed(&[("if-match", "\"x\", \"a\"")]));
        assert!(!failed(&[("if-match", "*")]));
        assert!(failed(&[("if-match", "\"b\"")]));
        assert!(failed(&[("if-match", "W/\"a\"")]), "If-Match compares strongly");
        assert!(!failed(&[("if-unmodified-since", "Sun, 06 Dec 2026 10:00:00 GMT")]));
        assert!(failed(&[("if-unmodified-since", "Sun, 06 Dec 2026 09:59:59 GMT")]));
        assert!(!failed(&[("if-unmodified-since", "yesterday")]), "an invalid date is ignored");
        assert!(
            !failed(&[("if-match", "\"a\""), ("if-unmodified-since", "Sun, 06 Dec 2026 09:00:00 GMT")]),
            "If-Match decides when present"
        );
        assert!(precondition_failed(&headers(&[("if-match", "*")]), &HeaderMap::new()));
    }
}
