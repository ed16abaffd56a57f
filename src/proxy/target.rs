//! The request target: which host a request is for, validated and normalised
//! once, before routing, the cache key and the request sent upstream, so that
//! all three see the same host.
//!
//! The authority comes from an absolute-form target if there is one (it wins
//! over Host, RFC 9112 §3.2.2), else from the one Host header (several are a
//! 400, RFC 9112 §3.2), else from HTTP/2's `:authority`; an HTTP/2 request
//! whose Host differs from its `:authority` is malformed (RFC 9113 §8.3.1).
//! What is not a valid authority is a 400: user info, a path, query or
//! fragment character, whitespace, an empty or out-of-range port, an empty
//! label. The host is lower-cased and loses a trailing dot and the scheme's
//! default port; the origin is asked with exactly that host.

use http::header::{self, HeaderValue};
use http::{Request, Version};

/// A request's host, as every later stage uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Authority {
    /// `host[:port]`, lower-case, the port only when not the scheme's default:
    /// the Host relais sends upstream and the authority of the cache key.
    pub value: HeaderValue,
    /// Length of the host in `value`.
    host_len: usize,
}

impl Authority {
    /// Lower-case host without port (IPv6 in brackets), for routing.
    pub(crate) fn host(&self) -> &str {
        // `value` was built from a str and is ASCII.
        self.value.to_str().map_or("", |v| &v[..self.host_len])
    }
}

/// The request's authority; `None` for an HTTP/1.0 request without one.
pub(crate) fn authority<B>(req: &Request<B>, scheme: &str) -> Result<Option<Authority>, &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("several Host headers");
    }
    let host = host.map(|h| h.to_str().map_err(|_| "Host is not text")).transpose()?;
    let uri = req.uri().authority().map(|a| a.as_str());
    if uri.is_some() && !matches!(req.uri().scheme_str(), Some("http" | "https")) {
        return Err("request target has a scheme other than http or https");
    }
    let raw = match (req.version(), uri, host) {
        (Version::HTTP_2 | Version::HTTP_3, Some(a), Some(h)) => {
            let (a, h) = (parse(a, scheme)?, parse(h, scheme)?);
            if a != h {
                return Err("Host differs from :authority");
            }
            return Ok(Some(a));
        }
        (_, Some(a), _) => a,
        (_, None, Some(h)) => {
            // Already in normal form (the common case): keep the header value as it is.
            if let Some(host_len) = normal(h, scheme)? {
                let value = req.headers().get(header::HOST).cloned().ok_or("missing Host header")?;
                return Ok(Some(Authority { value, host_len }));
            }
            h
        }
        (Version::HTTP_10 | Version::HTTP_09, None, None) => return Ok(None),
        (_, None, None) => return Err("missing Host header"),
    };
    parse(raw, scheme).map(Some)
}

/// Validates `raw`; if it is in normal form already, the length of its host.
fn normal(raw: &str, scheme: &str) -> Result<Option<usize>, &'static str> {
    let (host, port) = split_port(raw)?;
    let lower = if let Some(literal) = host.strip_prefix('[') {
        let inner = literal.strip_suffix(']').ok_or("unclosed IPv6 literal")?;
        inner.parse::<std::net::Ipv6Addr>().map_err(|_| "invalid IPv6 literal in Host")?;
        !inner.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        let name = host.strip_suffix('.').unwrap_or(host);
        let valid_label =
            |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name.split('.').all(valid_label) {
            return Err("invalid host name");
        }
        name.len() == host.len() && !name.bytes().any(|b| b.is_ascii_uppercase())
    };
    let default_port = port == Some(if scheme == "https" { 443 } else { 80 });
    let plain_port = port.is_none_or(|p| raw.len() == host.len() + 1 + decimal_len(p));
    Ok((lower && !default_port && plain_port).then_some(host.len()))
}

fn decimal_len(n: u16) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Validates and normalises `raw`, an authority (`host[:port]`) of `scheme`.
pub(crate) fn parse(raw: &str, scheme: &str) -> Result<Authority, &'static str> {
    normal(raw, scheme)?;
    let (host, port) = split_port(raw)?;
    let bare = if host.starts_with('[') { host } else { host.strip_suffix('.').unwrap_or(host) };
    let host = bare.to_ascii_lowercase();
    let default = if scheme == "https" { 443 } else { 80 };
    let value = match port {
        Some(p) if p != default => format!("{host}:{p}"),
        _ => host.clone(),
    };
    let value = HeaderValue::try_from(value).map_err(|_| "invalid host")?;
    Ok(Authority { value, host_len: host.len() })
}

/// `host` and its port, if any: 1 to 65535, digits only.
fn split_port(raw: &str) -> Result<(&str, Option<u16>), &'static str> {
    let colon = match raw.rfind(':') {
        Some(i) if !raw.starts_with('[') || raw[..i].ends_with(']') => i,
        _ => return Ok((raw, None)),
    };
    let (host, digits) = (&raw[..colon], &raw[colon + 1..]);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid port in Host");
    }
    match digits.parse::<u16>() {
        Ok(0) | Err(_) => Err("port out of range in Host"),
        Ok(p) => Ok((host, Some(p))),
    }
}

/// The request's canonical URL, as the cache keys it.
pub(super) fn url_of(conn: &super::Conn, host: Option<&http::HeaderValue>, parts: &http::request::Parts) -> String {
    let authority = host.and_then(|h| h.to_str().ok()).unwrap_or("");
    crate::cache::key::url(conn.proto, authority, parts.uri.path_and_query().map_or("/", |pq| pq.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(version: Version, uri: &str, hosts: &[&str]) -> Result<Option<(String, String)>, &'static str> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        let req = b.body(()).unwrap();
        authority(&req, "http").map(|a| a.map(|a| (a.host().to_string(), a.value.to_str().unwrap().to_string())))
    }

    fn h1(host: &str) -> Result<Option<(String, String)>, &'static str> {
        of(Version::HTTP_11, "/", &[host])
    }

    fn ok(host: &str, value: &str) -> Result<Option<(String, String)>, &'static str> {
        Ok(Some((host.to_string(), value.to_string())))
    }

    #[test]
    fn hosts_are_folded() {
        assert_eq!(h1("Example.COM:8080"), ok("example.com", "example.com:8080"));
        assert_eq!(h1("example.com."), ok("example.com", "example.com"));
        assert_eq!(h1("example.com:80"), ok("example.com", "example.com"));
        assert_eq!(h1("[::1]:80"), ok("[::1]", "[::1]"));
        assert_eq!(h1("[::1]:8080"), ok("[::1]", "[::1]:8080"));
        assert_eq!(h1("127.0.0.1:3000"), ok("127.0.0.1", "127.0.0.1:3000"));
        assert_eq!(h1("a.test:0080"), ok("a.test", "a.test"), "leading zeros");
        assert_eq!(h1("a.test:08080"), ok("a.test", "a.test:8080"));
        assert_eq!(h1("[::AB]"), ok("[::ab]", "[::ab]"));
        let req = Request::builder().uri("/").header(header::HOST, "a.test:443").body(()).unwrap();
        assert_eq!(authority(&req, "https").unwrap().unwrap().value, "a.test");
    }

    #[test]
    fn what_is_not_an_authority_is_refused() {
        for bad in [
            "a.test/x",
            "a.test?x",
            "a.test#x",
            "u@a.test",
            "a test",
            "",
            "a.test:",
            "a.test:99999",
            "a.test:0",
            "a.test:+80",
            "a.test:080080",
            "[::1",
            "::1",
            "[zz::1]",
            "a..test",
            ".",
            "..",
            "a.test:80:80",
            "a\\b",
            "a%2eb",
            "a.test:8o",
        ] {
            assert!(h1(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn one_host_and_the_target_wins() {
        assert!(of(Version::HTTP_11, "/", &["a.test", "a.test"]).is_err());
        assert!(of(Version::HTTP_11, "/", &[]).is_err());
        assert_eq!(of(Version::HTTP_10, "/", &[]), Ok(None));
        assert_eq!(of(Version::HTTP_11, "http://B.test/p", &["a.test"]), ok("b.test", "b.test"));
        assert!(of(Version::HTTP_11, "ftp://b.test/p", &["b.test"]).is_err());
        assert_eq!(of(Version::HTTP_2, "http://a.test/p", &[]), ok("a.test", "a.test"));
        assert_eq!(of(Version::HTTP_2, "http://a.test:80/p", &["A.test"]), ok("a.test", "a.test"));
        assert!(of(Version::HTTP_2, "http://a.test/p", &["b.test"]).is_err());
        assert_eq!(of(Version::HTTP_2, "/p", &["a.test"]), ok("a.test", "a.test"));
    }
}
