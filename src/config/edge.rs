//! The small rules around proxying that an nginx site uses every day: a
//! route's fixed answer (`return`), its rewrites, error pages and
//! `[maintenance]`. Values are checked here once; templates and regexes are
//! compiled by the pipeline.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::{Cidrs, ConfigError, Dur, FieldValue};

/// `return`: the route answers by itself, with a redirect or a fixed body.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReturnConfig {
    /// 200 to 599. A redirect (301, 302, 303, 307, 308) needs `location`.
    pub status: u16,
    /// Where a redirect goes: an absolute URL or a path, with variables.
    pub location: Option<String>,
    /// The body, with variables. Default: none (a redirect), or the status line.
    pub body: Option<String>,
    /// Default `text/plain; charset=utf-8`.
    pub content_type: Option<FieldValue>,
}

/// One `rewrite` rule: a regex on the path and its replacement.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RewriteRule {
    pub regex: String,
    /// The new path (`$1`, `${name}` are the regex's captures); a `?` in it
    /// sets the query, to which the request's is added unless it ends in `?`.
    pub replace: String,
    /// What follows a match; absent: the next rule, then route again if the path changed.
    pub flag: Option<RewriteFlag>,
}

/// nginx's rewrite flags.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RewriteFlag {
    /// Stop rewriting; route the new path again.
    Last,
    /// Stop rewriting; this route sends the new path upstream.
    Break,
    /// 302 to the new path.
    Redirect,
    /// 301 to the new path.
    Permanent,
}

/// An `error_pages` entry: a file's path, or a table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ErrorPageConfig {
    File(PathBuf),
    Table(ErrorPageTable),
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorPageTable {
    /// A page read from this file at load (and at each reload).
    pub file: Option<PathBuf>,
    /// A page fetched from this upstream, at `path`, when it is needed.
    pub upstream: Option<String>,
    pub path: Option<String>,
    /// The status sent with the page (nginx's `error_page 404 =200`). Default: the error's.
    pub status: Option<u16>,
    /// Also replace the origin's own responses with this status (nginx's
    /// `proxy_intercept_errors`). Default false: only the errors relais makes.
    #[serde(default)]
    pub origin: bool,
}

/// Error pages by status: `{ "502" = "/srv/errors/502.html" }`.
pub type ErrorPages = BTreeMap<String, ErrorPageConfig>;

/// A page file, as read at load.
#[derive(Clone, Debug, PartialEq)]
pub struct PageFile {
    pub body: Bytes,
    pub content_type: &'static str,
}

/// An error page, checked: where it comes from and how it is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorPage {
    pub status: StatusCode,
    pub source: PageSource,
    /// The status sent instead, if any.
    pub answer: Option<StatusCode>,
    pub origin: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PageSource {
    File(PathBuf),
    Upstream { upstream: String, path: String },
}

/// The largest page file read into memory.
const MAX_PAGE: u64 = 1 << 20;

impl ErrorPageConfig {
    /// The file this page is read from, for resolving relative paths.
    pub fn file_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            ErrorPageConfig::File(p) => Some(p),
            ErrorPageConfig::Table(t) => t.file.as_mut(),
        }
    }
}

/// Checks `pages` (under `key`, such as `routes[2].error_pages`) against the
/// upstreams defined.
pub(super) fn pages(
    key: &str,
    pages: &ErrorPages,
    upstreams: &dyn Fn(&str) -> bool,
) -> Result<Vec<ErrorPage>, (String, String)> {
    let mut out = Vec::with_capacity(pages.len());
    for (code, page) in pages {
        let here = format!("{key}.\"{code}\"");
        let status = code
            .parse::<u16>()
            .ok()
            .filter(|c| (400..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| (here.clone(), format!("{code:?} is not an error status (400 to 599)")))?;
        let (source, answer, origin) = match page {
            ErrorPageConfig::File(p) => (PageSource::File(p.clone()), None, false),
            ErrorPageConfig::Table(t) => {
                let source = match (&t.file, &t.upstream, &t.path) {
                    (Some(f), None, None) => PageSource::File(f.clone()),
                    (None, Some(u), Some(p)) => {
                        if !upstreams(u) {
                            return Err((format!("{here}.upstream"), format!("unknown upstream {u:?}")));
                        }
                        if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                            return Err((format!("{here}.path"), format!("{p:?} is not a path")));
                        }
                        PageSource::Upstream { upstream: u.clone(), path: p.clone() }
                    }
                    _ => return Err((here, "needs either file, or upstream and path".into())),
                };
                let answer = match t.status {
                    None => None,
                    Some(s) => Some(
                        StatusCode::from_u16(s)
                            .ok()
                            .filter(|s| (200..=599).contains(&s.as_u16()) && !matches!(s.as_u16(), 204 | 304))
                            .ok_or_else(|| {
                                (format!("{here}.status"), format!("{s} cannot carry a page (200 to 599)"))
                            })?,
                    ),
                };
                (source, answer, t.origin)
            }
        };
        out.push(ErrorPage { status, source, answer, origin });
    }
    Ok(out)
}

/// Reads a page file (at most 1 MiB), with its content type by extension.
pub fn read_page(file: &std::path::Path) -> Result<PageFile, String> {
    let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a file".into());
    }
    if meta.len() > MAX_PAGE {
        return Err(format!("is {} bytes; an error page may be 1MiB at most", meta.len()));
    }
    let body = std::fs::read(file).map_err(|e| e.to_string())?;
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let content_type = match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "txt" => "text/plain; charset=utf-8",
        _ => "text/html; charset=utf-8",
    };
    Ok(PageFile { body: Bytes::from(body), content_type })
}

/// `[maintenance]`: who still gets through while maintenance is on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Clients served as usual while maintenance is on (addresses or CIDR blocks).
    pub allow: Cidrs,
    /// `Retry-After` of the 503. Default 5 minutes.
    pub retry_after: Dur,
}

impl Default for MaintenanceConfig {
    fn default() -> MaintenanceConfig {
        MaintenanceConfig { allow: Cidrs::default(), retry_after: Dur(std::time::Duration::from_secs(300)) }
    }
}

/// The variables a `return` may use.
const VARIABLES: &[&str] = &["scheme", "host", "uri", "path", "query"];

/// Checks a route's `return` and `rewrite` (its regex's captures count for `{1}`…).
pub(super) fn answers(
    key: &dyn Fn(&str) -> String,
    ret: Option<&ReturnConfig>,
    rewrite: &[RewriteRule],
    path_regex: Option<&str>,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let captures = match path_regex {
        Some(re) => compile(re).map_err(|e| bad(key("path_regex"), e))?.captures_len() - 1,
        None => 0,
    };
    if let Some(r) = ret {
        let redirect = matches!(r.status, 301 | 302 | 303 | 307 | 308);
        if !(200..=599).contains(&r.status) || (300..400).contains(&r.status) && !redirect {
            return Err(bad(key("return.status"), format!("{} is not a status relais answers with", r.status)));
        }
        match (&r.location, redirect) {
            (None, true) => return Err(bad(key("return.location"), "a redirect needs a location".into())),
            (Some(_), false) => {
                return Err(bad(key("return.location"), format!("{} is not a redirect status", r.status)));
            }
            (Some(loc), true) => check_location(loc, captures).map_err(|e| bad(key("return.location"), e))?,
            (None, false) => {}
        }
        if let Some(body) = &r.body
            && body.len() > MAX_PAGE as usize
        {
            return Err(bad(key("return.body"), "is longer than 1MiB".into()));
        }
    }
    for (i, rule) in rewrite.iter().enumerate() {
        let here = |k: &str| key(&format!("rewrite[{i}].{k}"));
        compile(&rule.regex).map_err(|e| bad(here("regex"), e))?;
        let r = &rule.replace;
        let starts = r.starts_with('/') || r.starts_with("http://") || r.starts_with("https://") || r.starts_with('$');
        if !starts || r.bytes().any(|b| b <= b' ' || b == 0x7f) {
            let why = format!("{r:?} must be a path or an http(s) URL, without spaces or control bytes");
            return Err(bad(here("replace"), why));
        }
    }
    Ok(())
}

/// A regex of the configuration, with the guard's size limit.
pub fn compile(re: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(re).size_limit(super::REGEX_SIZE).build().map_err(|e| e.to_string())
}

/// A `location` template is valid once filled with anything a request can
/// give: each `{name}` known, and the result a URI a `Location` can hold.
fn check_location(loc: &str, captures: usize) -> Result<(), String> {
    let mut filled = String::new();
    let mut rest = loc;
    while let Some(open) = rest.find('{') {
        filled.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| format!("{loc:?} has a '{{' without '}}'"))? + open;
        let name = &rest[open + 1..close];
        let value = match name {
            "scheme" => "https",
            "host" => "example.com",
            "uri" => "/a/b?c=d",
            "path" => "/a/b",
            "query" => "c=d",
            n if n.parse::<usize>().is_ok_and(|i| (1..=captures).contains(&i)) => "x",
            n => {
                let known = format!("{}, and {{1}}…{{{captures}}} from path_regex", VARIABLES.join(", "));
                return Err(format!("{{{n}}} is not a variable ({known})"));
            }
        };
        filled.push_str(value);
        rest = &rest[close + 1..];
    }
    filled.push_str(rest);
    let absolute = filled.starts_with("http://") || filled.starts_with("https://");
    if !(absolute || filled.starts_with('/'))
        || filled.starts_with("//")
        || filled.parse::<http::Uri>().is_err()
        || http::HeaderValue::try_from(&filled).is_err()
    {
        return Err(format!("{loc:?} is not an http(s) URL or a path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_checked_once_filled() {
        for ok in ["https://www.example.com{uri}", "/new{path}", "{scheme}://{host}/x?{query}", "/{1}"] {
            assert!(check_location(ok, 1).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("https://x{hots}", "not a variable"),
            ("/{2}", "not a variable"),
            ("/a\r\nSet-Cookie: x", "not an http(s) URL"),
            ("//evil.example", "not an http(s) URL"),
            ("javascript:alert(1)", "not an http(s) URL"),
            ("/a{", "without"),
        ] {
            let e = check_location(bad, 1).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
