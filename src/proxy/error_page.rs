//! Error pages (nginx's `error_page`): for an error status, a page read from
//! a file at load or fetched from an upstream when needed, in place of the
//! short line relais answers with. A route's pages come before the global
//! `[error_pages]`. They replace what relais makes (502, 504, the guard's
//! refusals, 413, maintenance…) and, where a page says `origin = true`, the
//! origin's own responses with that status (nginx's `proxy_intercept_errors`).
//! A page never carries anything of the failure it stands for.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use crate::config::{ErrorPage, PageFile, PageSource};
use crate::http::body::Body;
use crate::upstream::{Outgoing, Upstream};

#[derive(Default)]
pub(crate) struct ErrorPages(Vec<Page>);

struct Page {
    status: StatusCode,
    /// The status sent with the page instead (`=200`).
    answer: Option<StatusCode>,
    origin: bool,
    source: Source,
}

enum Source {
    File { body: Bytes, content_type: HeaderValue },
    Upstream { upstream: Arc<Upstream>, path: PathAndQuery },
}

/// Headers of the error kept with its page: they tell the client what to do next.
const KEPT: [header::HeaderName; 3] = [header::RETRY_AFTER, header::ALLOW, header::WWW_AUTHENTICATE];

impl ErrorPages {
    /// From checked pages and the files read for them.
    pub(crate) fn new(read: Vec<(ErrorPage, Option<PageFile>)>, upstreams: &HashMap<String, Arc<Upstream>>) -> Self {
        let pages = read.into_iter().map(|(page, file)| {
            let source = match (page.source, file) {
                (_, Some(f)) => Source::File { body: f.body, content_type: HeaderValue::from_static(f.content_type) },
                (PageSource::Upstream { upstream, path }, None) => Source::Upstream {
                    upstream: upstreams[&upstream].clone(),
                    path: path.parse().expect("checked at load"),
                },
                (PageSource::File(_), None) => unreachable!("a file page is read at load"),
            };
            Page { status: page.status, answer: page.answer, origin: page.origin, source }
        });
        ErrorPages(pages.collect())
    }

    fn find(&self, status: StatusCode) -> Option<&Page> {
        self.0.iter().find(|p| p.status == status)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `response` with the page for its status, if `route` (then `global`) has
/// one that applies: to errors relais `made`, or to the origin's when the
/// page says so.
pub(crate) async fn apply(
    route: Option<&ErrorPages>,
    global: &ErrorPages,
    response: Response<Body>,
    made: bool,
    client: IpAddr,
) -> Response<Body> {
    let status = response.status();
    if status.as_u16() < 400 {
        return response;
    }
    let page = route.and_then(|r| r.find(status)).or_else(|| global.find(status));
    let Some(page) = page.filter(|p| made || p.origin) else { return response };
    let (body, content_type) = match &page.source {
        Source::File { body, content_type } => (Body::full(body.clone()), content_type.clone()),
        Source::Upstream { upstream, path } => match fetch(upstream, path, client).await {
            Some(found) => found,
            None => return response,
        },
    };
    let mut res = Response::new(body);
    *res.status_mut() = page.answer.unwrap_or(status);
    let headers = res.headers_mut();
    for name in &KEPT {
        if let Some(v) = response.headers().get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The page from its upstream: a GET with the server's address as Host; None
/// unless it answers 2xx.
async fn fetch(upstream: &Upstream, path: &PathAndQuery, client: IpAddr) -> Option<(Body, HeaderValue)> {
    let out = Outgoing {
        method: Method::GET,
        path: path.clone(),
        headers: HeaderMap::new(),
        server_host: true,
        body: Body::empty(),
        retryable: true,
        client,
        interim: None,
    };
    match upstream.send(out).await {
        Ok((res, _)) if res.status().is_success() => {
            let content_type =
                res.headers().get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("text/html"));
            Some((res.into_body(), content_type))
        }
        Ok((res, _)) => {
            tracing::warn!(upstream = %upstream.name, %path, status = %res.status(), "error page not found upstream");
            None
        }
        Err(e) => {
            tracing::warn!(upstream = %upstream.name, %path, error = %e, "error page not fetched");
            None
        }
    }
}
