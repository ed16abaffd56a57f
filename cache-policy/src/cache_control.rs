//! `Cache-Control` parsing (RFC 9111 §5.2), with the legacy `Pragma: no-cache`.
//!
//! Directive names are case-insensitive; arguments may be tokens or quoted strings
//! (commas inside quotes do not split). Delta-seconds that are malformed, or a
//! directive repeated with different arguments, read as zero: RFC 9111 §4.2.1 lets a
//! cache treat invalid freshness information as stale, the conservative choice.
//! Values beyond 2^31 saturate there (§1.2.2).

use std::time::Duration;

use http::HeaderMap;
use http::header::{CACHE_CONTROL, PRAGMA};

/// A Structured Field dictionary key (RFC 8941 §3.2), as lower-cased by the parser.
fn is_sf_key(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b))
}

/// RFC 9111 §1.2.2: the largest delta-seconds a cache needs to handle.
const MAX_DELTA: u64 = 1 << 31;

/// The directives of one message, names lower-cased, in order of appearance.
#[derive(Debug, Default)]
pub(crate) struct CacheControl {
    directives: Vec<(String, Option<String>)>,
}

impl CacheControl {
    /// Parses every `Cache-Control` line. Without any `Cache-Control` line,
    /// `Pragma: no-cache` counts as `no-cache` (RFC 9111 §5.4).
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            cc.parse_line(&String::from_utf8_lossy(value.as_bytes()));
        }
        if !headers.contains_key(CACHE_CONTROL) && pragma_no_cache(headers) {
            cc.directives.push(("no-cache".to_owned(), None));
        }
        cc
    }

    /// The first targeted field (RFC 9213) of `names` with a usable value: one
    /// made only of directives whose names are Structured Field keys. None:
    /// `Cache-Control` applies.
    pub(crate) fn targeted(headers: &HeaderMap, names: &[http::HeaderName]) -> Option<Self> {
        names.iter().find_map(|name| {
            let mut cc = CacheControl::default();
            for value in headers.get_all(name) {
                cc.parse_line(value.to_str().ok()?);
            }
            let valid = !cc.directives.is_empty() && cc.directives.iter().all(|(n, _)| is_sf_key(n));
            valid.then_some(cc)
        })
    }

    fn parse_line(&mut self, line: &str) {
        let mut rest = line;
        while !rest.is_empty() {
            let end = rest.find([',', '=']).unwrap_or(rest.len());
            let name = rest[..end].trim().to_ascii_lowercase();
            rest = &rest[end..];
            let mut value = None;
            if let Some(after_eq) = rest.strip_prefix('=') {
                let (v, after) = parse_value(after_eq);
                value = Some(v);
                rest = after;
            }
            // Skip anything up to the next separator (junk after a quoted value).
            rest = rest.find(',').map_or("", |i| &rest[i + 1..]);
            if !name.is_empty() {
                self.directives.push((name, value));
            }
        }
    }

    /// Whether the directive is present, with or without an argument.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.directives.iter().any(|(n, _)| n == name)
    }

    /// The argument of the first occurrence: `None` if absent, `Some(None)` if bare.
    pub(crate) fn arg(&self, name: &str) -> Option<Option<&str>> {
        self.directives.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_deref())
    }

    /// A delta-seconds argument: `None` if absent, zero if malformed or conflicting.
    pub(crate) fn seconds(&self, name: &str) -> Option<Duration> {
        let mut values =
            self.directives.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_deref().and_then(parse_delta));
        let first = values.next()?;
        if values.any(|v| v != first) {
            return Some(Duration::ZERO);
        }
        Some(Duration::from_secs(first.unwrap_or(0)))
    }
}

/// Reads a token or quoted-string argument; returns it and the unread rest.
fn parse_value(s: &str) -> (String, &str) {
    let s = s.trim_start();
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find(',').unwrap_or(s.len());
        return (s[..end].trim().to_owned(), &s[end..]);
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &quoted[i + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            c => out.push(c),
        }
    }
    // Unterminated quote: take what there is.
    (out, "")
}

/// Delta-seconds (RFC 9111 §1.2.2): digits only, saturating at 2^31.
pub(crate) fn parse_delta(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits, so a parse failure can only be overflow.
    Some(s.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA)))
}

/// `Pragma` contains the `no-cache` token.
fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(PRAGMA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("no-cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(lines: &[&str]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, line.parse().unwrap());
        }
        CacheControl::parse(&headers)
    }

    #[test]
    fn names_are_case_insensitive_and_values_unquoted() {
        let c = cc(&["Max-Age=\"60\", No-Cache", "private=\"a, b\", public"]);
        assert_eq!(c.seconds("max-age"), Some(Duration::from_secs(60)));
        assert!(c.has("no-cache"));
        assert_eq!(c.arg("private"), Some(Some("a, b")));
        assert!(c.has("public"));
        assert!(!c.has("b\""));
    }

    #[test]
    fn delta_seconds_edge_cases() {
        let secs = |line| cc(&[line]).seconds("max-age");
        assert_eq!(secs("max-age=10"), Some(Duration::from_secs(10)));
        assert_eq!(secs("max-age"), Some(Duration::ZERO));
        assert_eq!(secs("max-age=-1"), Some(Duration::ZERO));
        assert_eq!(secs("max-age=1.5"), Some(Duration::ZERO));
        assert_eq!(secs("max-age=99999999999999999999999"), Some(Duration::from_secs(MAX_DELTA)));
        assert_eq!(secs("max-age=10, max-age=10"), Some(Duration::from_secs(10)));
        assert_eq!(secs("max-age=10, max-age=20"), Some(Duration::ZERO));
        assert_eq!(secs("no-cache"), None);
    }

    #[test]
    fn pragma_counts_only_without_cache_control() {
        let mut headers = HeaderMap::new();
        headers.insert(PRAGMA, "no-cache".parse().unwrap());
        assert!(CacheControl::parse(&headers).has("no-cache"));
        headers.insert(CACHE_CONTROL, "max-age=5".parse().unwrap());
        assert!(!CacheControl::parse(&headers).has("no-cache"));
    }

    #[test]
    fn junk_is_skipped() {
        let c = cc(&[",, ,=x, max-age=5 junk, \"unterminated"]);
        assert_eq!(c.seconds("max-age"), Some(Duration::ZERO));
        let c = cc(&["s-maxage=\"7\"x, public"]);
        assert_eq!(c.seconds("s-maxage"), Some(Duration::from_secs(7)));
        assert!(c.has("public"));
    }
}
