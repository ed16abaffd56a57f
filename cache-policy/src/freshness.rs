//! Freshness lifetime (RFC 9111 §4.2.1, §4.2.2) under the route's [`Rules`].
//!
//! Order: `override_ttl`, else `no-cache` (zero: every use revalidates), else
//! `s-maxage` > `max-age` > `Expires` − `Date` (an invalid `Expires` means already
//! expired) > `default_ttl` > 10% of `Date` − `Last-Modified`; then `min_ttl` and
//! `max_ttl` clamp the result (`max_ttl` wins if they cross). Which statuses may use
//! the implicit sources is decided by [`status_storable`].

use std::time::{Duration, SystemTime};

use http::header::{EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use crate::Rules;
use crate::cache_control::CacheControl;
use crate::headers::{single_date, single_str};

/// Heuristically cacheable statuses (RFC 9110 §15.1). A 206 is stored only with
/// a single `Content-Range` of known length (see `Policy::new`).
const HEURISTIC: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Statuses whose caching requirements relais knows and meets, for
/// `must-understand` (RFC 9111 §5.2.2.3): those RFC 9110 defines for final
/// responses, except 205 and 304.
const UNDERSTOOD: [u16; 39] = [
    200, 201, 202, 203, 204, 206, 300, 301, 302, 303, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410,
    411, 412, 413, 414, 415, 416, 417, 421, 422, 426, 500, 501, 502, 503, 504, 505,
];

/// Whether http-cache-semantics, the cross-check, knows this status.
pub(crate) fn cross_checked(code: u16) -> bool {
    (HEURISTIC.contains(&code) && code != 206) || [302, 303, 307].contains(&code)
}

/// The share of `Date` − `Last-Modified` used as heuristic lifetime.
const HEURISTIC_FRACTION: u32 = 10;

/// Whether the origin stated a lifetime (RFC 9111 §4.2.1), valid or not.
pub(crate) fn has_explicit(cc: &CacheControl, res: &HeaderMap) -> bool {
    cc.has("s-maxage") || cc.has("max-age") || res.contains_key(EXPIRES)
}

/// Whether a response with this status may be stored at all: a heuristically
/// cacheable one, or any final status with explicit freshness (RFC 9111 §3),
/// unless `must-understand` names a status relais does not understand. Never
/// a 425: it says the request came too early (RFC 8470), not what the resource is.
pub(crate) fn status_storable(status: StatusCode, explicit: bool, must_understand: bool) -> bool {
    let code = status.as_u16();
    if !(200..=599).contains(&code) || code == 304 || code == 425 || (must_understand && !UNDERSTOOD.contains(&code)) {
        return false;
    }
    HEURISTIC.contains(&code) || explicit
}

/// The freshness lifetime; `date` is the response's `Date` (or its arrival time).
pub(crate) fn lifetime(cc: &CacheControl, res: &HeaderMap, rules: &Rules, date: SystemTime) -> Duration {
    let base = match rules.override_ttl {
        Some(ttl) => ttl,
        // min_ttl must not turn "revalidate every time" into "serve without asking".
        None if cc.has("no-cache") => return Duration::ZERO,
        None => origin_lifetime(cc, res, date)
            .or(rules.default_ttl)
            .or_else(|| heuristic(res, date))
            .unwrap_or(Duration::ZERO),
    };
    clamp(base, rules)
}

/// Applies `min_ttl` then `max_ttl`.
pub(crate) fn clamp(lifetime: Duration, rules: &Rules) -> Duration {
    let lifetime = rules.min_ttl.map_or(lifetime, |min| lifetime.max(min));
    rules.max_ttl.map_or(lifetime, |max| lifetime.min(max))
}

/// Explicit freshness; a shared cache prefers `s-maxage` and ignores `Expires`
/// when either directive is present.
fn origin_lifetime(cc: &CacheControl, res: &HeaderMap, date: SystemTime) -> Option<Duration> {
    if let Some(s_maxage) = cc.seconds("s-maxage") {
        return Some(s_maxage);
    }
    if let Some(max_age) = cc.seconds("max-age") {
        return Some(max_age);
    }
    if !res.contains_key(EXPIRES) {
        return None;
    }
    // Invalid dates ("0", "-1", two lines, anything but the three forms of
    // RFC 9110 §5.6.7) mean "already expired" (RFC 9111 §5.3).
    let expires = single_str(res, EXPIRES).and_then(crate::date::parse_strict);
    Some(expires.map_or(Duration::ZERO, |e| e.duration_since(date).unwrap_or_default()))
}

fn heuristic(res: &HeaderMap, date: SystemTime) -> Option<Duration> {
    let last_modified = single_date(res, LAST_MODIFIED)?;
    let unchanged_for = date.duration_since(last_modified).ok()?;
    Some(unchanged_for / HEURISTIC_FRACTION)
}
