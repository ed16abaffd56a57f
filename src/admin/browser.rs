//! What a web page can make a browser send to the admin listener, refused.
//!
//! Loopback and no token is the admin API's default, and any page a browser
//! on that machine opens can reach loopback: a cross-site form or `fetch` can
//! POST `text/plain` or a form without asking first (CSRF), and a name of the
//! attacker's that resolves to 127.0.0.1 makes the admin API the page's own
//! origin (DNS rebinding). So, on every endpoint but `GET /health`:
//!
//! - the Host must be an IP literal (a rebound name is never one),
//!   `localhost`, or a name in `admin.hosts` (not for `PURGE`, whose Host
//!   names the site to purge);
//! - an `Origin`, which browsers send with every POST and every cross-site
//!   request, must be the admin API's own: a Host allowed as above, and the
//!   very one the request was sent to;
//! - an action (`POST`, `PURGE`) whose body is not `application/json` gets
//!   415, as a browser cannot send JSON across sites without asking (this
//!   one after the token: without it, 401 says all there is to say).
//!
//! curl and scripts send no `Origin`, and say `Content-Type: application/json`.

use std::net::IpAddr;

use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode};

use crate::config::HostPattern;
use crate::proxy::target;

/// Whether `req`'s Host and Origin are the admin API's own: an error with
/// the status and reason if not.
pub(super) fn check<B>(req: &Request<B>, hosts: &[HostPattern]) -> Result<(), (StatusCode, String)> {
    let forbidden = |why: String| Err((StatusCode::FORBIDDEN, why));
    let own = match target::authority(req, "http") {
        Ok(a) => a,
        Err(e) => return Err((StatusCode::BAD_REQUEST, e.to_string())),
    };
    if req.method() != "PURGE"
        && let Some(a) = &own
        && !allowed(a.host(), hosts)
    {
        return forbidden(format!("Host {:?} is not the admin listener's (see admin.hosts)", a.host()));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = match (origin.split_once("://"), &own) {
            (Some((scheme @ ("http" | "https"), rest)), Some(own)) => {
                target::parse(rest, scheme).is_ok_and(|o| allowed(o.host(), hosts) && o.value == own.value)
            }
            _ => false,
        };
        if !same {
            return forbidden(format!("a request from the web page {origin:?}"));
        }
    }
    Ok(())
}

/// 415 for an action whose body is not declared JSON (`POST /purge` must be).
pub(super) fn check_body<B>(req: &Request<B>) -> Result<(), (StatusCode, String)> {
    let action = req.method() == Method::POST || req.method() == "PURGE";
    let json = is_json(req.headers());
    let needs_body = req.method() == Method::POST && req.uri().path() == "/purge";
    if action && (json == Some(false) || (needs_body && json.is_none())) {
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the body as Content-Type: application/json".into()));
    }
    Ok(())
}

/// An IP literal, `localhost`, or a configured name.
fn allowed(host: &str, hosts: &[HostPattern]) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse::<IpAddr>().is_ok()
        || host == "localhost"
        || hosts.iter().any(|p| match p {
            HostPattern::Exact(name) => name == host,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        })
}

/// Whether the body is declared JSON; None without a Content-Type.
fn is_json(headers: &HeaderMap) -> Option<bool> {
    let v = headers.get(header::CONTENT_TYPE)?;
    let media = v.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
    Some(media.eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn status(method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
        let hosts = [HostPattern::try_from("admin.internal".to_string()).unwrap()];
        let req = req(method, path, headers);
        check(&req, &hosts).and_then(|()| check_body(&req)).map_or_else(|(s, _)| s.as_u16(), |()| 200)
    }

    #[test]
    fn hosts() {
        for ok in
            ["127.0.0.1", "127.0.0.1:9090", "[::1]:9090", "10.1.2.3", "localhost:9090", "LocalHost", "admin.internal."]
        {
            assert_eq!(status("GET", "/stats", &[("host", ok)]), 200, "{ok}");
        }
        for bad in ["rebind.evil.example", "localhost.evil.example", "evil.example:9090", "x.admin.internal"] {
            assert_eq!(status("GET", "/stats", &[("host", bad)]), 403, "{bad}");
        }
        assert_eq!(status("GET", "/stats", &[("host", "a b")]), 400);
        assert_eq!(status("PURGE", "/p", &[("host", "shop.example.com")]), 200, "PURGE names the site in Host");
    }

    #[test]
    fn origins() {
        let host = ("host", "127.0.0.1:9090");
        let json = ("content-type", "application/json");
        assert_eq!(status("POST", "/purge", &[host, json, ("origin", "http://127.0.0.1:9090")]), 200);
        for bad in
            ["http://evil.example", "null", "http://127.0.0.1:9091", "http://1.2.3.4:9090", "ftp://127.0.0.1:9090", ""]
        {
            assert_eq!(status("POST", "/purge", &[host, json, ("origin", bad)]), 403, "{bad:?}");
        }
        let own = ("origin", "http://shop.example.com");
        assert_eq!(status("PURGE", "/p", &[("host", "shop.example.com"), own]), 403, "a page of the site itself");
    }

    #[test]
    fn bodies() {
        let host = ("host", "127.0.0.1");
        assert_eq!(status("POST", "/purge", &[host, ("content-type", "Application/JSON; charset=utf-8")]), 200);
        assert_eq!(status("POST", "/purge", &[host]), 415);
        assert_eq!(status("POST", "/purge", &[host, ("content-type", "text/plain")]), 415);
        assert_eq!(status("POST", "/reload", &[host]), 200, "no body, nothing to declare");
        assert_eq!(status("POST", "/reload", &[host, ("content-type", "multipart/form-data; boundary=x")]), 415);
        assert_eq!(status("GET", "/stats", &[host, ("content-type", "text/plain")]), 200);
    }
}
