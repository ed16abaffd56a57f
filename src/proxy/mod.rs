//! The request pipeline: guard → route → (cache) → forward → respond.
//!
//! A [`Pipeline`] is everything built from one configuration; a reload builds
//! a new one and swaps it in, while requests in flight finish on the one they
//! started with. Every stage returns a value; only [`handle`] turns errors into
//! responses, so no error ever reaches hyper and drops a connection.

mod cache;
mod error;
mod forward;
pub mod headers;
mod log;
mod present;
mod route;
mod target;
mod upgrade;
mod upload;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cache_policy::CacheStatus;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use crate::cache::Cache;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::tls::{Issued, Tls};
use crate::upstream::Upstream;
pub use error::{ProxyError, error_response};
use log::AccessRecord;
pub use log::{LoggedBody, Received};
pub use route::{Route, Router};

/// Everything built from one configuration.
pub struct Pipeline {
    pub config: Arc<Config>,
    pub router: Router,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    /// The TLS listeners' certificates and settings, when `[server.tls]` is set.
    pub tls: Option<Arc<Tls>>,
    /// Certificates and challenges from ACME, kept across reloads.
    pub issued: Arc<Issued>,
    hide_headers: Vec<HeaderName>,
}

/// What the pipeline knows about the client connection.
pub struct Conn {
    pub peer: SocketAddr,
    /// `http` or `https`: the scheme the client used.
    pub proto: &'static str,
    /// The subject of the client's verified certificate (mTLS).
    pub client_subject: Option<Arc<str>>,
}

impl Conn {
    pub fn plain(peer: SocketAddr) -> Conn {
        Conn { peer, proto: "http", client_subject: None }
    }
}

impl Pipeline {
    /// Builds from a validated config, reading the certificate files it names
    /// (a file that cannot be used is an error naming it). Upstreams whose
    /// settings did not change are taken over from `previous` with their pools
    /// and health.
    pub fn new(
        config: Config,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        issued: Arc<Issued>,
        previous: Option<&Pipeline>,
    ) -> Result<Pipeline, ConfigError> {
        let file_error = |e: crate::tls::TlsError| ConfigError::File { file: e.file, reason: e.reason };
        let mut upstreams = HashMap::new();
        for (name, u) in &config.upstreams {
            let kept = previous.and_then(|p| p.upstreams.get(name)).filter(|old| old.config == *u);
            let upstream = match kept {
                Some(old) => old.clone(),
                None => Arc::new(Upstream::new(name, u, metrics.clone()).map_err(file_error)?),
            };
            upstreams.insert(name.clone(), upstream);
        }
        let tls = match &config.server.tls {
            Some(t) => Some(Arc::new(Tls::new(t, issued.clone()).map_err(file_error)?)),
            None => None,
        };
        let router = Router::new(&config, &upstreams);
        let hide_headers = config.server.hide_headers.iter().map(|h| h.0.clone()).collect();
        Ok(Pipeline { config: Arc::new(config), router, upstreams, cache, metrics, tls, issued, hide_headers })
    }
}

/// Serves one request. Never fails: errors become responses here.
pub async fn handle(
    pipeline: Arc<Pipeline>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<LoggedBody>, Infallible> {
    let start = Instant::now();
    let log = pipeline.config.log.access && tracing::enabled!(target: "relais::access", tracing::Level::INFO);
    let authority = target::authority(&req, conn.proto);
    let host = match &authority {
        Ok(Some(a)) => a.host(),
        _ => "",
    };
    let mut req = req;
    let bytes_in = (!http_body::Body::is_end_stream(req.body())).then(|| {
        let received = Received::default();
        req.extensions_mut().insert(received.clone());
        received
    });
    let mut record = Box::new(AccessRecord {
        start,
        method: req.method().clone(),
        host: if log { host.to_string() } else { String::new() },
        path: if log {
            req.uri().path_and_query().map_or_else(|| req.uri().path().to_string(), |p| p.to_string())
        } else {
            String::new()
        },
        status: http::StatusCode::OK,
        upstream: None,
        cache: None,
        route: None,
        route_label: None,
        bytes_in,
        log,
        metrics: pipeline.metrics.clone(),
    });

    let (response, upstream, route, cache) = match respond(&pipeline, &conn, authority, req).await {
        Ok(a) => (a.response, a.upstream, a.route, Some(a.status)),
        Err((e, route)) => {
            if !matches!(e, ProxyError::NoRoute) {
                tracing::debug!(error = %e, "request failed");
            }
            (e.into_response(), None, route, None)
        }
    };
    record.status = response.status();
    record.upstream = upstream;
    record.route = route.map(|r| r.index);
    record.route_label = route.map(|r| r.label.clone());
    record.cache = cache.as_ref().map(|c| c.outcome);
    let (mut parts, body) = response.into_parts();
    finish(&pipeline, route.map(|r| &**r), cache.as_ref(), &mut parts.headers);
    Ok(Response::from_parts(parts, LoggedBody::new(body, Some(record))))
}

/// A response on its way out: what the route adds, Via, and Cache-Status.
fn finish(pipeline: &Pipeline, route: Option<&Route>, cache: Option<&CacheStatus>, headers: &mut http::HeaderMap) {
    if pipeline.config.server.via {
        headers::add_via(headers, Version::HTTP_11);
    }
    if !pipeline.config.cache.expose_tag_headers {
        // Stored with the entry (for purge by tag), not shown to clients.
        headers.remove(SURROGATE_KEY.clone());
        headers.remove(CACHE_TAG.clone());
    }
    if let Some(route) = route {
        route.response_headers.apply(headers);
    }
    if let Some(status) = cache
        && let Ok(v) = HeaderValue::try_from(status.header_value())
    {
        headers.insert(CACHE_STATUS.clone(), v);
    }
}

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

struct Answer<'a> {
    response: Response<crate::body::Body>,
    upstream: Option<Arc<str>>,
    route: Option<&'a Arc<Route>>,
    status: CacheStatus,
}

async fn respond<'a>(
    pipeline: &'a Arc<Pipeline>,
    conn: &Arc<Conn>,
    authority: Result<Option<target::Authority>, &'static str>,
    req: Request<Incoming>,
) -> Result<Answer<'a>, (ProxyError, Option<&'a Arc<Route>>)> {
    if req.method() == http::Method::CONNECT {
        return Err((ProxyError::MethodNotAllowed, None));
    }
    let authority = authority.map_err(|e| (ProxyError::BadRequest(e), None))?;
    if let Some(limit) = pipeline.config.server.max_request_body {
        // The declared length, as hyper read it from Content-Length.
        let declared = http_body::Body::size_hint(req.body()).exact();
        if declared.is_some_and(|n| n > limit.bytes()) {
            return Err((ProxyError::BodyTooLarge, None));
        }
    }
    let path = req.uri().path();
    let host = authority.as_ref().map_or("", |a| a.host());
    let Some(route) = pipeline.router.find(host, path, req.headers()) else {
        return Err((ProxyError::NoRoute, None));
    };
    match cache::serve(pipeline.clone(), route.clone(), conn.clone(), authority.map(|a| a.value), req).await {
        Ok(s) => Ok(Answer { response: s.response, upstream: s.upstream, route: Some(route), status: s.status }),
        Err(e) => Err((e, Some(route))),
    }
}
