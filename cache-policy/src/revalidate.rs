//! Revalidation: the conditional request sent upstream, and what its answer means
//! for the stored entry (RFC 9111 §4.3).
//!
//! A 304 refreshes an entry only if its validators select the stored response
//! (§4.3.4; a 304 without validators answers for the one response asked about); then the stored headers are updated with every header of the 304,
//! including headers new in it, except hop-by-hop fields, `Set-Cookie` and fields
//! describing the stored body (`Content-Length`, `Content-Encoding`, `Content-Range`,
//! `Content-MD5`, `Content-Digest`),
//! and a fresh [`Policy`] is computed from the result (§3.2). A 200 to a HEAD
//! sent instead of the stored GET updates the stored response the same way when
//! its validators and length agree with it (§4.3.5).

use std::time::SystemTime;

use http::header::{AGE, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG};
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, SET_COOKIE};
use http::{HeaderMap, HeaderName, StatusCode, request, response};

use crate::etag::{self, EntityTag};
use crate::headers::{SET_COOKIE2, http_date, is_hop_by_hop, single_date};
use crate::{Bypass, Policy, Rules};

/// Fields of a 304 that must not replace the stored ones: they describe the stored
/// body (its length, coding, range and digests), or belong to one client.
const NOT_MERGED: [HeaderName; 6] = [
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    CONTENT_RANGE,
    SET_COOKIE,
    HeaderName::from_static("content-md5"),
    HeaderName::from_static("content-digest"),
];

/// What the origin's answer to a revalidation means for the stored entry.
#[derive(Debug)]
pub enum Revalidation {
    /// 304 for the stored response: serve the stored body with `headers` and store
    /// `headers` and `policy` in place of the old ones.
    NotModified { policy: Policy, headers: HeaderMap },
    /// 304 for the stored response, but its updated headers may no longer be stored
    /// (e.g. the 304 says `no-store`): serve the stored body with `headers` this once
    /// and remove the entry.
    NotModifiedUncacheable { headers: HeaderMap, reason: Bypass },
    /// Not a usable 304: the response is a new representation (store it like any
    /// fetched response), or a 304 whose validators do not match the stored response,
    /// in which case refetch without conditions rather than pass the 304 on.
    Modified,
}

impl Policy {
    /// Conditional headers to add to the upstream request: `If-None-Match` from the
    /// stored `ETag` and `If-Modified-Since` from the stored `Last-Modified`; empty
    /// without a validator. The proxy should drop the client's own conditionals from
    /// the upstream request, so a 304 always refers to the stored response.
    pub fn revalidation_headers(&self, stored: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(etag) = stored.get(ETAG) {
            headers.insert(IF_NONE_MATCH, etag.clone());
        }
        if let Some(last_modified) = stored.get(LAST_MODIFIED) {
            headers.insert(IF_MODIFIED_SINCE, last_modified.clone());
        }
        headers
    }

    /// Interprets the origin's answer `res` to a revalidation of the entry whose
    /// headers are `stored`. Times and arguments are as in [`Policy::new`].
    pub fn revalidate(
        &self,
        req: &request::Parts,
        stored: &HeaderMap,
        res: &response::Parts,
        rules: &Rules,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Revalidation {
        if res.status != StatusCode::NOT_MODIFIED || !selects_stored(stored, &res.headers) {
            return Revalidation::Modified;
        }
        self.refreshed(req, stored, &res.headers, rules, (request_time, response_time))
    }

    /// Interprets the origin's answer `res` to a HEAD sent in place of a stored GET
    /// response (whose headers are `stored` and body `stored_len` bytes) as RFC
    /// 9111 §4.3.5 says: a 200 whose validators (`ETag`, `Last-Modified`, each if it
    /// has one) and `Content-Length` (if it has one) agree with the stored response
    /// updates a stored 200 as a 304 would; a 304 (to a HEAD carrying the stored validators)
    /// is read as in [`Policy::revalidate`]; anything else is `Modified`: the stored
    /// response is not the one the origin now has.
    #[allow(clippy::too_many_arguments)]
    pub fn update_from_head(
        &self,
        req: &request::Parts,
        stored: &HeaderMap,
        stored_len: u64,
        res: &response::Parts,
        rules: &Rules,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Revalidation {
        if res.status == StatusCode::NOT_MODIFIED {
            return self.revalidate(req, stored, res, rules, request_time, response_time);
        }
        // A 200 says nothing of a stored error but that it is over.
        let describes = self.status() == 200 && head_matches(stored, stored_len, &res.headers);
        if res.status != StatusCode::OK || !describes {
            return Revalidation::Modified;
        }
        self.refreshed(req, stored, &res.headers, rules, (request_time, response_time))
    }

    /// The stored response updated with `new`'s headers, and its new policy.
    fn refreshed(
        &self,
        req: &request::Parts,
        stored: &HeaderMap,
        new: &HeaderMap,
        rules: &Rules,
        (request_time, response_time): (SystemTime, SystemTime),
    ) -> Revalidation {
        let headers = merge_304(stored, new, response_time);
        let (mut refreshed, ()) = http::Response::new(()).into_parts();
        refreshed.status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::OK);
        refreshed.headers = headers;
        match Policy::new(req, &refreshed, rules, request_time, response_time) {
            Ok(policy) => Revalidation::NotModified { policy, headers: refreshed.headers },
            Err(reason) => Revalidation::NotModifiedUncacheable { headers: refreshed.headers, reason },
        }
    }
}

/// RFC 9111 §4.3.4: does the 304 identify the stored response?
fn selects_stored(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let new_date = single_date(not_modified, LAST_MODIFIED);
    match (entity_tag(stored), entity_tag(not_modified)) {
        // A strong validator selects only responses with the same strong validator.
        (old, Some(new)) if !new.weak => old.is_some_and(|old| old.strong_eq(&new)),
        (Some(old), Some(new)) => old.weak_eq(&new),
        // A weak ETag the stored response lacks.
        (None, Some(_)) => false,
        // Last-Modified is the remaining (weak) validator.
        (_, None) if new_date.is_some() => single_date(stored, LAST_MODIFIED) == new_date,
        // A bare 304 answers the one stored response relais asked about: the
        // §4.3.4 rule for bare 304s chooses among several stored responses, and
        // relais sends the validators of exactly one.
        (_, None) => true,
    }
}

/// RFC 9111 §4.3.5: a HEAD's 200 describes the stored response when every
/// validator it carries is the stored one's, and so is its length.
fn head_matches(stored: &HeaderMap, stored_len: u64, head: &HeaderMap) -> bool {
    let etag_ok = match entity_tag(head) {
        Some(new) => entity_tag(stored).is_some_and(|old| old.weak == new.weak && old.weak_eq(&new)),
        None => !head.contains_key(ETAG),
    };
    let date_ok = match head.contains_key(LAST_MODIFIED) {
        true => single_date(head, LAST_MODIFIED).is_some_and(|d| single_date(stored, LAST_MODIFIED) == Some(d)),
        false => true,
    };
    let mut lengths = head.get_all(CONTENT_LENGTH).iter();
    let length_ok = match (lengths.next(), lengths.next()) {
        (None, _) => true,
        (Some(v), None) => v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) == Some(stored_len),
        _ => false,
    };
    etag_ok && date_ok && length_ok
}

fn entity_tag(headers: &HeaderMap) -> Option<EntityTag<'_>> {
    headers.get(ETAG).and_then(|v| v.to_str().ok()).and_then(etag::parse_one)
}

/// The stored headers updated with the 304's (RFC 9111 §3.2).
fn merge_304(stored: &HeaderMap, not_modified: &HeaderMap, response_time: SystemTime) -> HeaderMap {
    let mut merged = stored.clone();
    for name in not_modified.keys() {
        if NOT_MERGED.contains(name) || *name == SET_COOKIE2 || is_hop_by_hop(name, not_modified) {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    // The stored Date and Age describe the old response; the new policy's age is
    // computed from the 304's, so keep the headers consistent with it.
    if !not_modified.contains_key(DATE) {
        match http_date(response_time) {
            Some(date) => merged.insert(DATE, date),
            None => merged.remove(DATE),
        };
    }
    if !not_modified.contains_key(AGE) {
        merged.remove(AGE);
    }
    merged
}
