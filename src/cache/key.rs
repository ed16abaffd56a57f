//! Cache keys: hex SHA-256 strings that name an entry in both tiers.
//!
//! The primary key covers `GET` (HEAD is served from GET), the scheme, the
//! lower-cased host with a non-default port, and path?query. A response with
//! `Vary` adds a variant key over the primary key, the variant generation of
//! its Vary record, and the request's normalised value of each named header
//! in sorted order (an absent header differs from an empty one).

use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// The canonical URL a key stands for: `scheme://host[:port]/path?q` with the
/// host lower-cased and a default port dropped, so that every spelling of one
/// URL (a request's Host, a Location header, a purge) gives one key.
pub fn url(scheme: &str, authority: &str, path_and_query: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    let authority = authority.strip_suffix('.').unwrap_or(authority);
    let path = if path_and_query.is_empty() { "/" } else { path_and_query };
    format!("{scheme}://{authority}{path}")
}

/// [`url`] of an absolute URI; `None` for a relative one.
pub fn url_of(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    Some(url(scheme, authority, uri.path_and_query().map_or("/", |p| p.as_str())))
}

/// Primary key of a canonical URL (from [`url`]).
pub fn primary(url: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"GET\0");
    h.update(url.as_bytes());
    hex(&h.finalize())
}

/// Variant key of `primary` for a request, given the Vary record's names and generation.
pub fn variant(primary: &str, generation: u64, names: &[HeaderName], request: &HeaderMap) -> String {
    let mut h = Sha256::new();
    h.update(primary.as_bytes());
    h.update(generation.to_le_bytes());
    for name in names {
        let values: Vec<&HeaderValue> = request.get_all(name).iter().collect();
        let normalised = cache_policy::normalize_vary_value(name, Some(&values));
        h.update(name.as_str().as_bytes());
        match normalised {
            // Absent and empty must differ: tag each.
            None => h.update(b"\0-"),
            Some(v) => {
                h.update(b"\0+");
                h.update(v.as_bytes());
                h.update(b"\0");
            }
        }
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::try_from(*k).unwrap(), HeaderValue::try_from(*v).unwrap())).collect()
    }

    #[test]
    fn primary_is_stable_hex() {
        let k = primary(&url("http", "Example.TEST:80", "/a?b=1"));
        assert_eq!(k.len(), 64);
        assert_eq!(k, primary("http://example.test/a?b=1"));
        assert_eq!(url("http", "h:8080", ""), "http://h:8080/");
        assert_eq!(url_of(&"http://H:80/x".parse().unwrap()).unwrap(), "http://h/x");
        assert_ne!(k, primary("http://example.test/a?b=2"));
    }

    #[test]
    fn variants_normalise_and_distinguish_absent_from_empty() {
        let names = [http::header::ACCEPT_LANGUAGE];
        let p = primary("http://h/");
        let a = variant(&p, 1, &names, &headers(&[("accept-language", "en-US, fr")]));
        let b = variant(&p, 1, &names, &headers(&[("accept-language", "en-us,fr")]));
        assert_eq!(a, b);
        let absent = variant(&p, 1, &names, &HeaderMap::new());
        let empty = variant(&p, 1, &names, &headers(&[("accept-language", "")]));
        assert_ne!(absent, empty);
        assert_ne!(a, variant(&p, 2, &names, &headers(&[("accept-language", "en-US, fr")])));
    }
}
