//! A route's `return`: a redirect or a fixed body, filled with a few
//! variables of the request. Templates were checked at load: a `Location`
//! filled with anything a request holds is still a URL.

use http::{HeaderValue, Response, StatusCode, header};
use regex::Regex;

use super::error::ProxyError;
use crate::config::ReturnConfig;
use crate::http::body::Body;

pub(crate) struct Fixed {
    status: StatusCode,
    location: Option<Template>,
    body: Option<Template>,
    content_type: HeaderValue,
}

/// A string with `{name}` variables.
struct Template(Vec<Piece>);

enum Piece {
    Text(String),
    Scheme,
    Host,
    Uri,
    Path,
    Query,
    Capture(usize),
}

/// What a template may be filled with.
pub(crate) struct Vars<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The route's `path_regex` and the path it matched.
    pub regex: Option<&'a Regex>,
}

impl Template {
    /// `{name}` of a known variable becomes it; anything else stays text (a
    /// body may be JSON; a location's names were checked at load).
    fn parse(s: &str) -> Template {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open..];
            let var = after.find('}').and_then(|close| {
                let piece = match &after[1..close] {
                    "scheme" => Piece::Scheme,
                    "host" => Piece::Host,
                    "uri" => Piece::Uri,
                    "path" => Piece::Path,
                    "query" => Piece::Query,
                    n => Piece::Capture(n.parse().ok().filter(|&i| i > 0)?),
                };
                Some((piece, close))
            });
            match var {
                Some((piece, close)) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                    rest = &after[close + 1..];
                }
                None => {
                    text.push('{');
                    rest = &after[1..];
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Template(pieces)
    }

    fn fill(&self, v: &Vars<'_>) -> String {
        let captures = self
            .0
            .iter()
            .any(|p| matches!(p, Piece::Capture(_)))
            .then(|| v.regex.and_then(|r| r.captures(v.path)))
            .flatten();
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Scheme => out.push_str(v.scheme),
                Piece::Host => out.push_str(v.host),
                Piece::Path => out.push_str(v.path),
                Piece::Query => out.push_str(v.query.unwrap_or("")),
                Piece::Uri => {
                    out.push_str(v.path);
                    if let Some(q) = v.query {
                        out.push('?');
                        out.push_str(q);
                    }
                }
                Piece::Capture(i) => out.push_str(captures.as_ref().and_then(|c| c.get(*i)).map_or("", |m| m.as_str())),
            }
        }
        out
    }
}

impl Fixed {
    /// From a checked `return`.
    pub(crate) fn new(r: &ReturnConfig) -> Fixed {
        Fixed {
            status: StatusCode::from_u16(r.status).expect("checked at load"),
            location: r.location.as_deref().map(Template::parse),
            body: r.body.as_deref().map(Template::parse),
            content_type: r
                .content_type
                .as_ref()
                .map_or(HeaderValue::from_static("text/plain; charset=utf-8"), |c| c.0.clone()),
        }
    }

    /// The answer. An error status without a body of its own is answered as
    /// relais's errors are, so error pages apply (as nginx's `return 404`).
    pub(crate) fn answer(&self, v: &Vars<'_>) -> Result<Response<Body>, ProxyError> {
        let Some(body) = &self.body else {
            if self.status.as_u16() >= 400 {
                return Err(ProxyError::Returned(self.status));
            }
            let mut res = Response::new(Body::empty());
            *res.status_mut() = self.status;
            if let Some(location) = &self.location {
                res.headers_mut().insert(header::LOCATION, location_value(&location.fill(v))?);
            }
            return Ok(res);
        };
        let mut res = Response::new(Body::full(body.fill(v)));
        *res.status_mut() = self.status;
        res.headers_mut().insert(header::CONTENT_TYPE, self.content_type.clone());
        if let Some(location) = &self.location
            && let Ok(value) = location_value(&location.fill(v))
        {
            res.headers_mut().insert(header::LOCATION, value);
        }
        Ok(res)
    }
}

/// A `Location` from a filled template or a rewrite. A path that would begin
/// with `//` (or `/\\`) names another host to a browser: its slashes are one.
pub(super) fn location_value(location: &str) -> Result<HeaderValue, ProxyError> {
    let one_host = match location.strip_prefix('/') {
        Some(rest) if rest.starts_with(['/', '\\']) => format!("/{}", rest.trim_start_matches(['/', '\\'])),
        _ => location.to_string(),
    };
    // Checked at load for any path; a value still unfit is the request's doing.
    HeaderValue::try_from(one_host).map_err(|_| ProxyError::BadRequest("cannot redirect this URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_fill_and_other_braces_stay() {
        let re = Regex::new("^/old/([^/]+)/(.*)$").unwrap();
        let v = Vars { scheme: "https", host: "a.test", path: "/old/x/y", query: Some("q=1"), regex: Some(&re) };
        let t = Template::parse("{scheme}://{host}{uri} {path}?{query} {2}-{1} {\"ok\":true} {9} {x");
        assert_eq!(t.fill(&v), "https://a.test/old/x/y?q=1 /old/x/y?q=1 y-x {\"ok\":true}  {x");
        assert_eq!(location_value("//evil.example/x").unwrap(), "/evil.example/x");
        assert_eq!(location_value("/\\\\evil.example").unwrap(), "/evil.example");
        assert_eq!(location_value("https://a.test//x").unwrap(), "https://a.test//x");
        let v = Vars { query: None, ..v };
        assert_eq!(Template::parse("{uri}|{query}").fill(&v), "/old/x/y|");
    }
}
