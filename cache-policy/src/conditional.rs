//! Client conditionals evaluated against a stored response (RFC 9110 §13.2.2,
//! RFC 9111 §4.3.2), so a fresh hit can answer 304 without the origin.
//!
//! `If-None-Match` takes precedence: when present, `If-Modified-Since` is ignored.
//! Only the 304-producing conditionals are handled here; `If-Match` and
//! `If-Unmodified-Since` make [`crate::lookup_allowed`] send the request to the origin.

use http::HeaderMap;
use http::header::{DATE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

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
