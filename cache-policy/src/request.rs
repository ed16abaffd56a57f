//! Request-side checks, made before the cache is consulted.
//!
//! A request that fails [`lookup_allowed`] is forwarded untouched and its response
//! is not stored; the returned [`Bypass`] is shown in `Cache-Status`.

use http::header::{COOKIE, IF_MATCH, IF_UNMODIFIED_SINCE};
use http::{Method, request};

use crate::cache_control::CacheControl;
use crate::{Bypass, Rules};

/// Whether this request may be answered from (and its response stored in) the cache.
///
/// Only GET and HEAD are looked up (a `Range` is cut from the full stored response,
/// so it looks up too). `Cache-Control: no-store` bypasses (RFC 9111 §5.2.1.5: the
/// cache must not store the response), as do the preconditions
/// `If-Match`/`If-Unmodified-Since`, whose 412 only the origin can judge. A request with `Cookie` bypasses where the
/// rules say so.
pub fn lookup_allowed(req: &request::Parts, rules: &Rules) -> Result<(), Bypass> {
    if rules.bypass {
        return Err(Bypass::Route);
    }
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(Bypass::Method);
    }
    if CacheControl::parse(&req.headers).has("no-store") {
        return Err(Bypass::RequestNoStore);
    }
    if req.headers.contains_key(IF_MATCH) || req.headers.contains_key(IF_UNMODIFIED_SINCE) {
        return Err(Bypass::Precondition);
    }
    if rules.bypass_cookie_requests && req.headers.contains_key(COOKIE) {
        return Err(Bypass::Cookie);
    }
    Ok(())
}

/// Whether the client forbids contacting the origin (`Cache-Control: only-if-cached`):
/// without a usable stored response the answer is 504 (RFC 9111 §5.2.1.7).
pub fn only_if_cached(req: &request::Parts) -> bool {
    CacheControl::parse(&req.headers).has("only-if-cached")
}
