//! Header rewriting between client and origin.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are
//! removed in both directions, with every header the `Connection` field names.
//! The origin learns who asked (X-Forwarded-*, Via); the client does not learn
//! what runs behind relais (`server.hide_headers`).

use std::net::IpAddr;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http::names::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};

static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The protocol a client asked to switch to (`Connection: upgrade` and
/// `Upgrade`), kept as a request extension once the headers are stripped;
/// after routing, only what the route allows of it (see `Route::upgrade`).
#[derive(Clone, Debug)]
pub(crate) struct Upgrade(pub HeaderValue);

/// Removes hop-by-hop headers. Returns the `Upgrade` value when the message
/// asked for a protocol upgrade (`Connection: upgrade` + `Upgrade`), which the
/// caller restores if it tunnels.
///
/// A request is stripped once, as it arrives, before the guard, the router
/// and the cache key look at it: a header the client names in `Connection`
/// is not sent upstream, so nothing may decide by it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // Most requests carry none: one pass over the names, instead of a lookup each.
    if !headers.keys().any(|n| cache_policy::HOP_BY_HOP.contains(n) || *n == HTTP2_SETTINGS) {
        return None;
    }
    let mut upgrade = false;
    // `TE: trailers` says the sender takes trailers, and relais forwards them
    // end to end, so it passes (gRPC requires it); other TE codings are the hop's.
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = cache_policy::connection_named(headers).collect();
        for name in named {
            if name == header::UPGRADE {
                upgrade = true;
            } else {
                headers.remove(&name);
            }
        }
    }
    let upgrade_value = headers.get(header::UPGRADE).cloned().filter(|_| upgrade);
    for name in &cache_policy::HOP_BY_HOP {
        headers.remove(name);
    }
    // Connection-specific by definition (RFC 7540 §3.2.1), named in Connection or not.
    headers.remove(&HTTP2_SETTINGS);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    upgrade_value
}

/// Sets the headers that tell the origin about the client: `client` is
/// appended to `X-Forwarded-For` (None: it is complete already).
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client: Option<IpAddr>,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    if let Some(client) = client {
        let ip = HeaderValue::from_str(&client.to_string()).expect("an IP is a valid header value");
        // Several X-Forwarded-For lines are one list (RFC 9110 §5.3).
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
            .collect();
        let joined =
            if prior.is_empty() { None } else { HeaderValue::try_from(format!("{}, {client}", prior.join(", "))).ok() };
        headers.insert(X_FORWARDED_FOR.clone(), joined.unwrap_or(ip));
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
}

/// Appends relais to `Via` with the protocol version of the hop it received.
pub(crate) fn add_via(headers: &mut HeaderMap, version: Version) {
    let me = match version {
        Version::HTTP_10 => "1.0 relais",
        Version::HTTP_2 => "2 relais",
        Version::HTTP_3 => "3 relais",
        _ => "1.1 relais",
    };
    headers.append(header::VIA, HeaderValue::from_static(me));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::try_from(*k).unwrap(), HeaderValue::try_from(*v).unwrap());
        }
        h
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic realm=x"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("accept", "*/*"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn keeps_te_trailers_only() {
        let mut h = map(&[("te", "gzip, Trailers"), ("connection", "te")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn reports_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        assert!(h.is_empty());
        let mut h = map(&[("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        add_forwarded(&mut h, Some("127.0.0.1".parse().unwrap()), "http", Some(&HeaderValue::from_static("a.test")));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.test");
    }
}
