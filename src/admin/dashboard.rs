//! `GET /dashboard`: one page, compiled in, that shows the admin API's
//! figures live and sends its actions. The page holds no data, so it needs no
//! token; it asks for one and sends it with each request it makes, as any
//! client of the API does.
//!
//! Its only script and style are inline, allowed by their hashes in the
//! `Content-Security-Policy` (computed once from the page itself, so they
//! cannot drift from it); nothing else loads, it connects only to its own
//! origin, and no other page may frame it.

use std::sync::OnceLock;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::http::body::Body;

const PAGE: &str = include_str!("dashboard.html");

/// The page with its security headers.
pub(super) fn page() -> Response<Body> {
    let mut res = Response::new(Body::full(Bytes::from_static(PAGE.as_bytes())));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, policy().clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /`: to the page.
pub(super) fn redirect() -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    res.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    res
}

fn policy() -> &'static HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY.get_or_init(|| {
        let hashes =
            |tag| inline(PAGE, tag).iter().map(|text| format!(" 'sha256-{}'", sha256(text))).collect::<String>();
        let csp = format!(
            "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; img-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hashes("script"),
            hashes("style"),
        );
        HeaderValue::try_from(csp).expect("base64 and ASCII")
    })
}

/// The text inside each `<tag>…</tag>` of `page`.
fn inline<'a>(page: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    page.split(open.as_str()).skip(1).filter_map(|rest| rest.split_once(close.as_str()).map(|(text, _)| text)).collect()
}

fn sha256(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inline_script_and_style_is_hashed_and_nothing_else_is_allowed() {
        let csp = policy().to_str().unwrap();
        assert_eq!(inline(PAGE, "script").len(), 1);
        assert_eq!(inline(PAGE, "style").len(), 1);
        for tag in ["script", "style"] {
            for text in inline(PAGE, tag) {
                assert!(csp.contains(&format!("'sha256-{}'", sha256(text))), "{tag}");
            }
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        // What a hash cannot cover: attributes, handlers, other tags' sources.
        for banned in [" style=", " onclick", " onload", " onsubmit", " onchange", "<script ", "<link", " src=", "url("]
        {
            assert!(!PAGE.contains(banned), "{banned}");
        }
        assert!(PAGE.len() < 100 * 1024, "{} bytes", PAGE.len());
    }
}
