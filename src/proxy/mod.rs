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
    /// The port cleartext requests are redirected to (`redirect_https`), as bound.
    https_port: Option<u16>,
    hide_headers: Vec<HeaderName>,
}

/// What every configuration's pipeline shares for the life of the process.
#[derive(Clone)]
pub struct Lasting {
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    pub issued: Arc<Issued>,
    /// The first TLS listener's port, as bound (the configuration may say 0).
    pub https_port: Option<u16>,
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
    pub fn new(config: Config, lasting: &Lasting, previous: Option<&Pipeline>) -> Result<Pipeline, ConfigError> {
        let Lasting { cache, metrics, issued, https_port } = lasting.clone();
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
        Ok(Pipeline {
            config: Arc::new(config),
            router,
            upstreams,
            cache,
            metrics,
            tls,
            issued,
            https_port,
            hide_headers,
        })
    }

    /// What outlives this configuration, for building the next.
    pub fn lasting(&self) -> Lasting {
        Lasting {
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            issued: self.issued.clone(),
            https_port: self.https_port,
        }
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
        scheme: conn.proto,
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
        Ok(a) => (a.response, a.upstream, a.route, a.status),
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
    finish(&pipeline, &conn, route.map(|r| &**r), cache.as_ref(), &mut parts.headers);
    Ok(Response::from_parts(parts, LoggedBody::new(body, Some(record))))
}

/// A response on its way out: what the route adds, Via, Cache-Status, and
/// over TLS the `Strict-Transport-Security` configured.
fn finish(
    pipeline: &Pipeline,
    conn: &Conn,
    route: Option<&Route>,
    cache: Option<&CacheStatus>,
    headers: &mut http::HeaderMap,
) {
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
    if conn.proto == "https"
        && let Some(hsts) = pipeline.tls.as_ref().and_then(|t| t.hsts.clone())
    {
        headers.insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
    }
}

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

struct Answer<'a> {
    response: Response<crate::body::Body>,
    upstream: Option<Arc<str>>,
    route: Option<&'a Arc<Route>>,
    /// What the cache did; None when it was not reached (a redirect).
    status: Option<CacheStatus>,
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
    if conn.proto == "http"
        && let Some(token) = path.strip_prefix(ACME_CHALLENGE)
        && let Some(authorization) = pipeline.issued.token(token)
    {
        // An ACME http-01 validation of a certificate relais is obtaining.
        let mut res = Response::new(crate::body::Body::full(authorization));
        res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(Answer { response: res, upstream: None, route: None, status: None });
    }
    let host = authority.as_ref().map_or("", |a| a.host());
    let Some(route) = pipeline.router.find(host, path, req.headers()) else {
        return Err((ProxyError::NoRoute, None));
    };
    if conn.proto == "http" && route.redirect_https {
        let response = redirect_to_https(pipeline, authority.as_ref(), req.uri()).map_err(|e| (e, Some(route)))?;
        return Ok(Answer { response, upstream: None, route: Some(route), status: None });
    }
    match cache::serve(pipeline.clone(), route.clone(), conn.clone(), authority.map(|a| a.value), req).await {
        Ok(s) => Ok(Answer { response: s.response, upstream: s.upstream, route: Some(route), status: Some(s.status) }),
        Err(e) => Err((e, Some(route))),
    }
}

const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// 308 to the same URL on https: the TLS listener's port unless it is 443.
fn redirect_to_https(
    pipeline: &Pipeline,
    authority: Option<&target::Authority>,
    uri: &http::Uri,
) -> Result<Response<crate::body::Body>, ProxyError> {
    let host = authority.ok_or(ProxyError::BadRequest("no host to redirect to"))?.host();
    let port = pipeline.https_port.filter(|&p| p != 443).map(|p| format!(":{p}")).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = HeaderValue::try_from(format!("https://{host}{port}{path}"))
        .map_err(|_| ProxyError::BadRequest("cannot redirect this URL"))?;
    let mut res = Response::new(crate::body::Body::empty());
    *res.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    res.headers_mut().insert(http::header::LOCATION, location);
    Ok(res)
}
