//! Invalidation after unsafe requests (RFC 9111 §4.4).
//!
//! A successful POST, PUT, DELETE, PATCH (any method other than GET, HEAD, OPTIONS
//! and TRACE) invalidates the request URI and, when they are on the same origin,
//! the `Location` and `Content-Location` URIs. Other origins are never invalidated,
//! so a response cannot purge someone else's entries. Results are absolute URIs.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, Method, StatusCode, Uri};

/// URIs whose stored responses must be invalidated after this exchange.
///
/// `request_uri` should be the canonical absolute request URI; if it is not
/// absolute, it is returned alone, since relative references cannot be resolved.
pub fn invalidations(method: &Method, status: StatusCode, request_uri: &Uri, response: &HeaderMap) -> Vec<Uri> {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
    if safe.contains(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut uris = vec![request_uri.clone()];
    let Some(base) = Base::of(request_uri) else {
        return uris;
    };
    for name in [LOCATION, CONTENT_LOCATION] {
        if let Some(uri) = location(response, name).and_then(|r| base.resolve(r))
            && same_origin(&uri, request_uri)
            && !uris.contains(&uri)
        {
            uris.push(uri);
        }
    }
    uris
}

fn location(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    // The fragment is never part of a cached URI.
    let value = value.split('#').next().unwrap_or_default();
    (!value.is_empty()).then_some(value)
}

/// An absolute URI split for reference resolution (RFC 3986 §5.2).
struct Base<'a> {
    scheme: &'a Scheme,
    authority: &'a Authority,
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> Base<'a> {
    fn of(uri: &'a Uri) -> Option<Self> {
        Some(Base { scheme: uri.scheme()?, authority: uri.authority()?, path: uri.path(), query: uri.query() })
    }

    fn resolve(&self, reference: &str) -> Option<Uri> {
        let resolved = if has_scheme(reference) {
            reference.to_owned()
        } else if reference.starts_with("//") {
            format!("{}:{reference}", self.scheme)
        } else {
            let (path, query) = match reference.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (reference, None),
            };
            let path = if path.is_empty() {
                self.path.to_owned()
            } else if path.starts_with('/') {
                remove_dot_segments(path)
            } else {
                let dir = self.path.rsplit_once('/').map_or("", |(dir, _)| dir);
                remove_dot_segments(&format!("{dir}/{path}"))
            };
            // Only an empty reference keeps the base query (RFC 3986 §5.2.2).
            let query = query.or(if reference.is_empty() { self.query } else { None });
            match query {
                Some(q) => format!("{}://{}{path}?{q}", self.scheme, self.authority),
                None => format!("{}://{}{path}", self.scheme, self.authority),
            }
        };
        resolved.parse().ok()
    }
}

/// `scheme ":"` at the start (RFC 3986 §3.1).
fn has_scheme(reference: &str) -> bool {
    match reference.split_once(':') {
        Some((scheme, _)) => {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                // A trailing dot segment still denotes a directory.
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Same scheme, host and port (default ports made explicit), case-insensitively.
fn same_origin(a: &Uri, b: &Uri) -> bool {
    let origin = |u: &Uri| {
        let scheme = u.scheme_str()?.to_ascii_lowercase();
        let host = u.host()?.to_ascii_lowercase();
        let port = u.port_u16().or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        Some((scheme, host, port))
    };
    origin(a).is_some() && origin(a) == origin(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_references() {
        let base: Uri = "http://a/b/c/d;p?q".parse().unwrap();
        let base = Base::of(&base).unwrap();
        let table = [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("g;x=1/../y", "http://a/b/c/y"),
            ("https://other/x", "https://other/x"),
        ];
        for (reference, expected) in table {
            let resolved = base.resolve(reference).unwrap();
            assert_eq!(resolved, expected.parse::<Uri>().unwrap(), "{reference}");
        }
    }

    #[test]
    fn origins() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        assert!(same_origin(&u("http://A.example/x"), &u("http://a.example:80/y")));
        assert!(same_origin(&u("https://a/x"), &u("HTTPS://a:443/")));
        assert!(!same_origin(&u("http://a/x"), &u("https://a/x")));
        assert!(!same_origin(&u("http://a:8080/x"), &u("http://a/x")));
        assert!(!same_origin(&u("http://a/x"), &u("http://b/x")));
    }
}
