//! Which response header fields are stored, and small header helpers.
//!
//! Invariant: a stored header map never holds `Set-Cookie` nor a hop-by-hop field,
//! so nothing personal or connection-specific is replayed to another client.

use std::time::{Duration, SystemTime};

use http::header::{CONNECTION, HeaderName, HeaderValue, SET_COOKIE};
use http::{HeaderMap, header};

use crate::Rules;
use crate::cache_control::parse_delta;

/// Connection-specific fields (RFC 9110 §7.6.1), plus the legacy ones still
/// seen: the one list, for what is stored and for what is forwarded.
pub static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The obsolete `Set-Cookie2` (RFC 2965), still sent by some origins: a cookie
/// like any other.
pub(crate) static SET_COOKIE2: HeaderName = HeaderName::from_static("set-cookie2");

/// Whether a response sets a cookie, by either field.
pub(crate) fn sets_cookie(headers: &HeaderMap) -> bool {
    headers.contains_key(SET_COOKIE) || headers.contains_key(&SET_COOKIE2)
}

/// The response headers to store with an entry: all of `res` except `Set-Cookie`
/// (and the obsolete `Set-Cookie2`) and hop-by-hop fields, including those named in
/// `Connection`.
///
/// `Set-Cookie` is dropped whatever the rules say: when `rules.store_set_cookie` is
/// off, [`crate::Policy::new`] refuses the response anyway, and when it is on the
/// cookie belongs to one client only. `_rules` is kept for per-route filters.
pub fn storable_headers(res: &HeaderMap, _rules: &Rules) -> HeaderMap {
    let mut stored = res.clone();
    stored.remove(SET_COOKIE);
    stored.remove(&SET_COOKIE2);
    remove_hop_by_hop(&mut stored, res);
    stored
}

/// Removes hop-by-hop fields of `original` (and those its `Connection` names) from `map`.
pub(crate) fn remove_hop_by_hop(map: &mut HeaderMap, original: &HeaderMap) {
    for name in connection_named(original) {
        map.remove(name);
    }
    for name in &HOP_BY_HOP {
        map.remove(name);
    }
}

/// Whether `name` must not be carried from one message into a stored one.
pub(crate) fn is_hop_by_hop(name: &HeaderName, message: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(name) || connection_named(message).any(|n| n == *name)
}

/// The header names a message's `Connection` field lists (case-insensitive).
pub fn connection_named(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
}

/// The value of a field that must appear once, as text.
pub(crate) fn single_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    let mut values = headers.get_all(name).into_iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().map(str::trim)
}

/// A field holding one HTTP-date (any of the three RFC 9110 formats, read leniently).
pub(crate) fn single_date(headers: &HeaderMap, name: HeaderName) -> Option<SystemTime> {
    single_str(headers, name).and_then(crate::date::parse)
}

/// The `Age` field in seconds: the first member when several were sent (in one
/// line or several), zero if that one is not valid (RFC 9111 §5.1); saturates at
/// 2^31 like any delta-seconds.
pub(crate) fn age_value(headers: &HeaderMap) -> Duration {
    let first = headers.get(header::AGE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next());
    Duration::from_secs(first.and_then(|v| parse_delta(v.trim())).unwrap_or(0))
}

/// An IMF-fixdate value (`Sun, 06 Nov 1994 08:49:37 GMT`), or `None` for a time
/// httpdate cannot represent (before 1970 or after 9999), where it would panic.
pub(crate) fn http_date(time: SystemTime) -> Option<HeaderValue> {
    const YEAR_10000: Duration = Duration::from_secs(253_402_300_800);
    let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    if since_epoch >= YEAR_10000 {
        return None;
    }
    HeaderValue::try_from(httpdate::fmt_http_date(time)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_headers_drop_cookies_and_hop_by_hop() {
        let mut res = HeaderMap::new();
        res.insert("content-type", "text/plain".parse().unwrap());
        res.insert("set-cookie", "id=1".parse().unwrap());
        res.insert("connection", "close, x-secret".parse().unwrap());
        res.insert("x-secret", "1".parse().unwrap());
        res.insert("keep-alive", "timeout=5".parse().unwrap());
        let stored = storable_headers(&res, &Rules::default());
        let names: Vec<_> = stored.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }

    #[test]
    fn http_date_is_imf_fixdate_and_never_panics() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t).unwrap(), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert!(http_date(SystemTime::UNIX_EPOCH - Duration::from_secs(1)).is_none());
        assert!(http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40)).is_none());
    }

    #[test]
    fn age_takes_the_first_member() {
        let mut h = HeaderMap::new();
        h.append("age", "5, x".parse().unwrap());
        h.append("age", "12".parse().unwrap());
        assert_eq!(age_value(&h), Duration::from_secs(5));
        h.insert("age", "0, 7200".parse().unwrap());
        assert_eq!(age_value(&h), Duration::ZERO);
        h.insert("age", "0".parse().unwrap());
        h.append("age", "7200".parse().unwrap());
        assert_eq!(age_value(&h), Duration::ZERO);
        h.insert("age", "x, 60".parse().unwrap());
        assert_eq!(age_value(&h), Duration::ZERO, "an invalid first member: the field is ignored");
        assert_eq!(age_value(&HeaderMap::new()), Duration::ZERO);
        h.insert("age", "999999999999999999999999999".parse().unwrap());
        assert_eq!(age_value(&h), Duration::from_secs(1 << 31));
    }
}
