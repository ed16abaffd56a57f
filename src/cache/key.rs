//! Cache keys: hex SHA-256 strings that name an entry in both tiers.
//!
//! The primary key covers `GET` (HEAD is served from GET), the scheme, the
//! lower-cased host with a non-default port, and path?query. A response with
//! `Vary` adds a variant key over the primary key, the variant generation of
//! its Vary record, and the request's normalised value of each named header
//! in sorted order (an absent header differs from an empty one).
//!
//! A route's `cache.key` ([`KeyConfig`]) shapes the primary key, here and
//! only here ([`shape`]): the query is sorted, filtered or ignored and the
//! path's case folded in the URL itself ([`shape_url`]), which is what the
//! entries are indexed and purged by; the values of named headers and cookies
//! follow the URL in the string hashed ([`Keyed`]), so every one of them is
//! purged with the URL. Without `cache.key` the key is the canonical URL's,
//! byte for byte as before.
//!
//! In memory (the memory tier, the purge index) a key is held as its 32 bytes,
//! [`Key`].

use std::hash::{BuildHasher, Hash, Hasher};

use std::borrow::Cow;
use std::fmt::Write;

use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::config::{KeyConfig, QueryKey};

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
    Keyed::plain(url.to_string()).primary()
}

/// What a request is cached under: `url`, the canonical URL as the route's
/// `cache.key` shapes it (its entries are indexed and purged by it), and
/// `parts`, what follows it in the string the primary key is hashed from
/// (named headers' and cookies' values, a slice's start; empty by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyed {
    pub url: String,
    pub parts: String,
}

impl Keyed {
    /// The canonical URL, nothing added: the key as it always was.
    pub fn plain(url: String) -> Keyed {
        Keyed { url, parts: String::new() }
    }

    /// SHA-256 over `GET`, the URL and the parts.
    pub fn primary(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"GET\0");
        h.update(self.url.as_bytes());
        h.update(self.parts.as_bytes());
        hex::encode(h.finalize())
    }
}

/// The key of a request for `url` (canonical, from [`url`]) on a route whose
/// `cache.key` is `rules` (`None`: the default, which changes nothing).
pub fn shape(rules: Option<&KeyConfig>, url: String, request: &HeaderMap) -> Keyed {
    let Some(rules) = rules else { return Keyed::plain(url) };
    let mut parts = String::new();
    for name in &rules.headers {
        parts.push_str(" header:");
        parts.push_str(name.0.as_str());
        let mut values = request.get_all(&name.0).iter();
        if let Some(first) = values.next() {
            parts.push('=');
            escape(first.as_bytes(), &mut parts);
            for v in values {
                parts.push(',');
                escape(v.as_bytes(), &mut parts);
            }
        }
    }
    for name in &rules.cookies {
        parts.push_str(" cookie:");
        parts.push_str(name.as_str());
        if let Some(value) = cookie(request, name.as_str()) {
            parts.push('=');
            escape(value.as_bytes(), &mut parts);
        }
    }
    Keyed { url: shape_url(rules, url), parts }
}

/// `url` (canonical) with the query and path case `rules` ask for: what its
/// entries are indexed by, so a purge names them as a request does.
pub fn shape_url(rules: &KeyConfig, url: String) -> String {
    if !rules.fold_path_case && !rules.shapes_query() {
        return url;
    }
    // `url` is `scheme://authority/path?query`.
    let path_at = url.find("://").map_or(0, |i| i + 3);
    let path_at = url[path_at..].find('/').map_or(url.len(), |i| path_at + i);
    let (path_end, query) = match url[path_at..].find('?') {
        Some(i) => (path_at + i, Some(&url[path_at + i + 1..])),
        None => (url.len(), None),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..path_at]);
    if rules.fold_path_case {
        out.push_str(&url[path_at..path_end].to_ascii_lowercase());
    } else {
        out.push_str(&url[path_at..path_end]);
    }
    match query {
        Some(q) if rules.shapes_query() => push_query(rules, q, &mut out),
        Some(q) => {
            out.push('?');
            out.push_str(q);
        }
        None => {}
    }
    out
}

/// The query's parameters the rules keep, in the order they ask for.
fn push_query(rules: &KeyConfig, query: &str, out: &mut String) {
    if rules.query == QueryKey::Ignore {
        return;
    }
    let kept = |p: &&str| {
        let decoded = decode(name(p));
        if !rules.keep_params.is_empty() {
            return rules.keep_params.iter().any(|k| k.matches(&decoded));
        }
        !rules.drop_params.iter().any(|d| d.matches(&decoded))
    };
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).filter(kept).collect();
    if rules.query == QueryKey::Sorted {
        // Stable: repeated names keep their order, which the origin may read.
        params.sort_by(|a, b| name(a).cmp(name(b)));
    }
    for (i, p) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(p);
    }
}

/// The name of a `name=value` parameter.
fn name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(n, _)| n)
}

/// A parameter name as the origin reads it: `+` is a space, `%XX` a byte.
fn decode(name: &str) -> Cow<'_, str> {
    if !name.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(name);
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The first value of cookie `name` in the request's `Cookie` lines.
fn cookie<'a>(request: &'a HeaderMap, name: &str) -> Option<&'a str> {
    request
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A value in the key: printable, and unable to pass for a separator (space)
/// or a slice's mark (`#`).
fn escape(value: &[u8], out: &mut String) {
    for &b in value {
        if b.is_ascii_graphic() && b != b'%' && b != b'#' {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The key as `Cache-Status` and `/cache?url=` show it: the shaped URL, then
/// the names of the headers and cookies whose values follow it (never the
/// values: a response does not repeat a client's cookie to whoever else sees it).
pub fn shown(rules: &KeyConfig, url: &str) -> String {
    let mut out = url.to_string();
    for name in &rules.headers {
        out.push_str(" header:");
        out.push_str(name.0.as_str());
    }
    for name in &rules.cookies {
        out.push_str(" cookie:");
        out.push_str(name.as_str());
    }
    out
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
    hex::encode(h.finalize())
}

/// A cache key (64 hex digits) as its 32 bytes: compared inline, no string to chase.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    pub fn of(key: &str) -> Key {
        let mut out = [0u8; 32];
        let hex = key.as_bytes();
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if hex.len() == 64 {
            let mut ok = true;
            for (i, pair) in hex.chunks_exact(2).enumerate() {
                match (digit(pair[0]), digit(pair[1])) {
                    (Some(h), Some(l)) => out[i] = h << 4 | l,
                    _ => ok = false,
                }
            }
            if ok {
                return Key(out);
            }
        }
        // Keys are SHA-256 hex; anything else is hashed to the same shape.
        Key(Sha256::digest(key.as_bytes()).into())
    }

    /// The hex form the rest of the cache names keys by.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

/// The key already is a SHA-256: its first 8 bytes are a uniform hash that no
/// client can steer, so hashing it again would only cost time.
#[derive(Clone, Default)]
pub struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    // Only `Key` is hashed here; anything else still gets a usable (FNV-1a) hash.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
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
    fn the_default_key_is_pinned() {
        // Caches written before `cache.key` existed must keep hitting.
        let url = url("http", "Example.TEST:80", "/a?b=1");
        let pinned = "e9b94da06eb835eed0753c42f60728c83779af25e5949c6c952ab744911b1568";
        assert_eq!(primary(&url), pinned);
        assert_eq!(shape(None, url.clone(), &headers(&[("x-tenant", "a")])).primary(), pinned);
        let defaults = KeyConfig::default();
        assert_eq!(shape_url(&defaults, url.clone()), url);
        let slice = Keyed { url, parts: "#slice=0".into() };
        assert_eq!(slice.primary(), "2a2e38984b7f387b86d07d9c93183172d54098b01bec7cb5e65d43cd0c00ad13");
    }

    fn rules(toml: &str) -> KeyConfig {
        let text = format!(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\ncache.key = {{ {toml} }}\n"
        );
        let config = crate::config::Config::from_toml(&text, "test.toml").unwrap();
        config.routes[0].cache.key.clone()
    }

    #[test]
    fn queries_are_shaped() {
        let drop = rules(r#"drop_params = ["utm_*", "fbclid", "gclid"]"#);
        let s = |r: &KeyConfig, u: &str| shape_url(r, u.to_string());
        assert_eq!(s(&drop, "http://h/p?utm_source=x&a=1&fbclid=2"), "http://h/p?a=1");
        assert_eq!(s(&drop, "http://h/p?utm_source=x"), "http://h/p");
        assert_eq!(s(&drop, "http://h/p?utm%5Fsource=x&gclid"), "http://h/p", "names are read decoded");
        assert_eq!(s(&drop, "http://h/p?a=1&&b"), "http://h/p?a=1&b");
        assert_eq!(s(&drop, "http://h/P?b=2&a=1"), "http://h/P?b=2&a=1", "order and case as sent");
        let keep = rules(r#"keep_params = ["page", "q*"]"#);
        assert_eq!(s(&keep, "http://h/p?x=1&page=2&query=3&pag%65=4"), "http://h/p?page=2&query=3&pag%65=4");
        let sorted = rules(r#"query = "sorted""#);
        assert_eq!(s(&sorted, "http://h/p?b=2&a=1&b=1&a"), "http://h/p?a=1&a&b=2&b=1", "stable for repeated names");
        let ignore = rules(r#"query = "ignore", fold_path_case = true"#);
        assert_eq!(s(&ignore, "http://h/A/B?x=1"), "http://h/a/b");
        assert_eq!(s(&ignore, "http://h:8080/"), "http://h:8080/");
    }

    #[test]
    fn headers_and_cookies_follow_the_url() {
        let r = rules(r#"headers = ["x-tenant"], cookies = ["session"]"#);
        let k = |pairs: &[(&str, &str)]| shape(Some(&r), "http://h/p".into(), &headers(pairs));
        let a = k(&[("x-tenant", "a b"), ("cookie", "x=1; session=s1")]);
        assert_eq!(a.url, "http://h/p");
        assert_eq!(a.parts, " header:x-tenant=a%20b cookie:session=s1");
        assert_ne!(a.primary(), k(&[("x-tenant", "a b"), ("cookie", "session=s2")]).primary());
        let absent = k(&[]);
        assert_eq!(absent.parts, " header:x-tenant cookie:session");
        assert_ne!(absent.primary(), k(&[("x-tenant", ""), ("cookie", "session=")]).primary());
        assert_ne!(absent.primary(), primary("http://h/p"));
        // A value cannot pass for the next part.
        let sneaky = k(&[("x-tenant", "a cookie:session=s1"), ("cookie", "")]);
        assert!(!sneaky.parts.contains(" cookie:session=s1"));
        assert_eq!(shown(&r, &a.url), "http://h/p header:x-tenant cookie:session");
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

    #[test]
    fn hex_keys_pack_and_others_hash() {
        let hex = "00ff".repeat(16);
        assert_eq!(Key::of(&hex).0[..2], [0x00, 0xff]);
        assert!(Key::of(&hex) != Key::of(&"00fe".repeat(16)));
        assert!(Key::of("not hex") != Key::of("not hex either"));
        assert!(Key::of(&"zz".repeat(32)) == Key::of(&"zz".repeat(32)));
        let k = format!("{}{}", "0a1b".repeat(8), "ff".repeat(16));
        assert_eq!(Key::of(&k).hex(), k);
    }
}
