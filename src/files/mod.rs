//! Static files: a route with `root` or `alias` answers from a directory
//! (nginx's `root`, `alias`, `index`, `try_files`, `gzip_static`).
//!
//! GET and HEAD only. A file gets its content type by extension, an `ETag`
//! made of its modification time and size (as nginx's), `Last-Modified`,
//! `Accept-Ranges`; conditional requests are answered here (412, 304), and one
//! byte range (206, 416; several ranges get the whole file, as the cache's
//! answers do). A `.br`, `.zst` or `.gz` sibling is sent, with its own ETag, to
//! a client that accepts its coding; ranges then count its bytes. Bodies are
//! read from the file as the client takes them. Nothing here goes through the
//! cache. A directory named without its slash is redirected to it; one
//! without an index file is 403 (no listing). A path that cannot name a file
//! under the directory is 404 (`path.rs`), and no answer names a path.

mod body;
mod path;

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Uri};

use cache_policy::Ranged;

use crate::compress::Encoding;
use crate::config::{Fallback, RouteConfig, Symlinks};
use crate::http::body::Body;

use path::{Found, Opened};

/// A route's static file settings, built once per configuration.
pub(crate) struct Files {
    dir: PathBuf,
    /// With `alias`: the route's prefix, which the directory replaces.
    alias_of: Option<String>,
    index: Vec<crate::config::IndexName>,
    fallback: Option<Fallback>,
    symlinks: Symlinks,
    precompressed: bool,
    /// Which sibling wins among codings the client likes equally.
    preference: Vec<Encoding>,
    /// The route's name, for the error log.
    label: Arc<str>,
}

/// What a static route does with a request.
pub(crate) enum Served {
    Response(Response<Body>),
    /// An answer with this status and the short body of errors (403, 404,
    /// 405 with `Allow: GET, HEAD`, 412).
    Refused(StatusCode),
    /// No file: the route's upstream answers (`fallback = "upstream"`).
    Upstream,
}

impl Files {
    /// The route's files, if it has `root` or `alias`.
    pub(crate) fn new(r: &RouteConfig, preference: &[Encoding], label: Arc<str>) -> Option<Arc<Files>> {
        let (dir, alias_of) = match (&r.root, &r.alias) {
            (Some(root), _) => (root.clone(), None),
            (None, Some(alias)) => (alias.clone(), Some(r.path.clone())),
            (None, None) => return None,
        };
        Some(Arc::new(Files {
            dir,
            alias_of,
            index: r.index.clone(),
            fallback: r.fallback.clone(),
            symlinks: r.symlinks,
            precompressed: r.precompressed,
            preference: preference.to_vec(),
            label,
        }))
    }

    /// Answers `method` on `uri` (normalised by the guard) with a file, or
    /// says who else should.
    pub(crate) async fn serve(
        self: &Arc<Self>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        metrics: &crate::metrics::Metrics,
    ) -> Served {
        let upstream_fallback = self.fallback == Some(Fallback::Upstream);
        if method != Method::GET && method != Method::HEAD {
            // Nothing here takes a body: the upstream does, if there is one.
            return if upstream_fallback { Served::Upstream } else { Served::Refused(StatusCode::METHOD_NOT_ALLOWED) };
        }
        let full = uri.path();
        let rest = match &self.alias_of {
            Some(prefix) => full.get(prefix.len()..).unwrap_or(""),
            None => full,
        };
        let Some(rel) = path::decode(rest) else { return Served::Refused(StatusCode::NOT_FOUND) };
        let wants_dir = full.ends_with('/');
        let accept: HeaderMap = if self.precompressed {
            headers.get_all(header::ACCEPT_ENCODING).iter().map(|v| (header::ACCEPT_ENCODING, v.clone())).collect()
        } else {
            HeaderMap::new()
        };
        let files = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            let found = path::find(&files, &rel, wants_dir, &accept);
            match (found, &files.fallback) {
                (Found::Missing | Found::NoIndex, Some(Fallback::File(other))) => {
                    path::find(&files, other.as_bytes(), false, &accept)
                }
                (found, _) => found,
            }
        })
        .await;
        match found {
            Ok(Found::File(opened)) => {
                metrics.file_served(opened.encoding);
                self.answer(method, headers, opened)
            }
            Ok(Found::Directory) => to_directory(full, uri.query()),
            Ok(Found::NoIndex) if !upstream_fallback => Served::Refused(StatusCode::FORBIDDEN),
            Ok(Found::Missing | Found::NoIndex) if upstream_fallback => Served::Upstream,
            Ok(Found::Missing | Found::NoIndex) => Served::Refused(StatusCode::NOT_FOUND),
            Err(_) => Served::Refused(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The file's response to this request: 200, 206, 304, 412 or 416.
    fn answer(&self, method: &Method, req: &HeaderMap, opened: Opened) -> Served {
        let Opened { mut file, len, modified, encoding, name } = opened;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type(&name));
        let secs = modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let coding = encoding.map_or("", |e| path::extension(e));
        if let Ok(tag) = HeaderValue::try_from(format!("\"{secs:x}-{len:x}{coding}\"")) {
            headers.insert(header::ETAG, tag);
        }
        if let Ok(date) = HeaderValue::try_from(httpdate::fmt_http_date(clamp(modified))) {
            headers.insert(header::LAST_MODIFIED, date);
        }
        if self.precompressed {
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        if let Some(e) = encoding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e.token()));
        }
        if cache_policy::precondition_failed(req, &headers) {
            return Served::Refused(StatusCode::PRECONDITION_FAILED);
        }
        if cache_policy::not_modified(req, &headers) {
            headers.remove(header::CONTENT_TYPE);
            headers.remove(header::CONTENT_ENCODING);
            return Served::Response(with(StatusCode::NOT_MODIFIED, headers, Body::empty()));
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let (status, start, n) = match cache_policy::asked(method, req, &headers, Some(len)) {
            Some(Ranged::One(want)) => {
                if let Ok(v) = HeaderValue::try_from(want.content_range()) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, want.start, want.len())
            }
            Some(Ranged::Unsatisfiable) => {
                if let Ok(v) = HeaderValue::try_from(format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                return Served::Response(with(StatusCode::RANGE_NOT_SATISFIABLE, headers, Body::empty()));
            }
            None => (StatusCode::OK, 0, len),
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        if method == Method::HEAD || n == 0 {
            return Served::Response(with(status, headers, Body::empty()));
        }
        // A seek moves an offset: no disk is read here.
        if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
            return Served::Refused(StatusCode::INTERNAL_SERVER_ERROR);
        }
        Served::Response(with(status, headers, Body::boxed(body::FileBody::new(file, n))))
    }
}

fn with(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

/// 301 to the directory's slash form, query kept, as nginx answers; the
/// Location is relative and repeats only what the client sent, but for
/// leading slashes made one: `//example.com` would send the client to another
/// host (where the guard's `merge_slashes` is off).
fn to_directory(path: &str, query: Option<&str>) -> Served {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let path = path.trim_start_matches('/');
    let Ok(location) = HeaderValue::try_from(format!("/{path}/{query}")) else {
        return Served::Refused(StatusCode::NOT_FOUND);
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Served::Response(with(StatusCode::MOVED_PERMANENTLY, headers, Body::empty()))
}

/// The media type for a file name's extension; text in UTF-8.
fn content_type(name: &Path) -> HeaderValue {
    let raw = mime_guess::from_path(name).first_raw().unwrap_or("application/octet-stream");
    let text = raw.starts_with("text/")
        || matches!(raw, "application/javascript" | "application/json" | "application/xml" | "image/svg+xml");
    if !text {
        return HeaderValue::from_static(raw);
    }
    HeaderValue::try_from(format!("{raw}; charset=utf-8")).unwrap_or(HeaderValue::from_static(raw))
}

/// Modification times before 1970 are written as 1970 (an HTTP-date cannot be earlier).
fn clamp(t: SystemTime) -> SystemTime {
    t.max(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_redirect_stays_on_this_host() {
        let location = |path: &str, query: Option<&str>| match to_directory(path, query) {
            Served::Response(r) => r.headers()[header::LOCATION].to_str().unwrap().to_string(),
            _ => panic!("a redirect"),
        };
        assert_eq!(location("/docs", Some("a=1")), "/docs/?a=1");
        assert_eq!(location("//evil.example", None), "/evil.example/");
        assert_eq!(location("///evil.example/x", None), "/evil.example/x/");
    }

    #[test]
    fn content_types() {
        let ct = |n: &str| content_type(Path::new(n)).to_str().unwrap().to_string();
        assert_eq!(ct("a/index.html"), "text/html; charset=utf-8");
        assert_eq!(ct("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(ct("data.json"), "application/json; charset=utf-8");
        assert_eq!(ct("logo.png"), "image/png");
        assert_eq!(ct("blob"), "application/octet-stream");
    }
}
