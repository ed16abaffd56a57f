//! The request pipeline: guard → route → (cache) → forward → respond.
//!
//! A [`Pipeline`] is everything built from one configuration; a reload builds
//! a new one and swaps it in, while requests in flight finish on the one they
//! started with. Every stage returns a value; only [`handle`] turns errors into
//! responses, so no error ever reaches hyper and drops a connection.

mod buffer;
mod cache;
mod error;
pub(crate) mod error_page;
mod fixed;
mod forward;
pub(crate) mod headers;
mod log;
pub(crate) mod maintenance;
mod pass;
mod present;
mod request_id;
mod rewrite;
mod route;
mod shard;
pub(crate) mod target;
mod upgrade;
mod upload;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use cache_policy::CacheStatus;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Version};

use crate::cache::{Answer, Cache};
use crate::config::{Config, ConfigError};
use crate::guard::{Guard, Subject};
use crate::http::body::Body;
use crate::metrics::Metrics;
use crate::tls::{Issued, Tls};
use crate::upstream::Upstream;
pub(crate) use error::{ProxyError, error_response};
use log::AccessRecord;
pub(crate) use log::{LoggedBody, Received};
pub(crate) use route::{Found, Route, Router};

/// Everything built from one configuration.
pub(crate) struct Pipeline {
    pub config: Arc<Config>,
    pub router: Router,
    /// What requests must get past (the routes hold their own part).
    pub guard: Guard,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    /// The TLS listeners' certificates and settings, when `[server.tls]` is set.
    pub tls: Option<Arc<Tls>>,
    /// Certificates and challenges from ACME, kept across reloads.
    pub issued: Arc<Issued>,
    /// The port cleartext requests are redirected to (`redirect_https`), as bound.
    https_port: Option<u16>,
    quic_port: Option<u16>,
    hide_headers: Vec<HeaderName>,
    /// `server.request_id`: the header that carries each request's id.
    request_id: Option<HeaderName>,
    /// Targeted cache-control fields removed from what clients receive.
    hide_targeted: Vec<HeaderName>,
    pub compression: crate::compress::Compression,
    /// Pass-through responses read ahead of slow clients.
    buffering: buffer::Buffering,
    /// When this configuration was put in force (`/stats`).
    pub loaded: std::time::SystemTime,
    /// `[cluster]` with sharding on: who owns which key, and the way to each peer.
    pub shard: Option<Arc<shard::Shard>>,
    /// `[error_pages]`: every route's, after its own.
    error_pages: error_page::ErrorPages,
    /// Maintenance mode, set at run time.
    pub maintenance: Arc<maintenance::Maintenance>,
}

/// What every configuration's pipeline shares for the life of the process.
#[derive(Clone)]
pub(crate) struct Lasting {
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    pub issued: Arc<Issued>,
    /// The first TLS listener's port, as bound (the configuration may say 0).
    pub https_port: Option<u16>,
    /// Its QUIC twin's, when HTTP/3 was on at start (what `Alt-Svc` offers).
    pub quic_port: Option<u16>,
    /// Temp files of buffered uploads and responses (`buffering.request_disk`, `response_disk`).
    pub temp_files: Arc<buffer::TempFiles>,
    /// Encoded copies of cached bodies (`compression.stored_memory`), which
    /// stay valid as long as the cache's entries do.
    pub copies: Arc<crate::compress::Encodings>,
    /// `buffering.memory`: what uploads and read-ahead hold counts across reloads.
    pub memory: Arc<buffer::MemoryBudget>,
    /// Maintenance mode: a reload keeps it.
    pub maintenance: Arc<maintenance::Maintenance>,
}

/// What the pipeline knows about the client connection (and, once the guard
/// has read `real_ip`, about the client of one request).
#[derive(Clone)]
pub(crate) struct Conn {
    /// The connection's source: the TCP peer, or the PROXY protocol's source.
    pub peer: SocketAddr,
    /// The client's address: the peer's, or the one trusted proxies gave.
    pub client: IpAddr,
    /// The `X-Forwarded-For` to send, when `real_ip` chose it (else the
    /// client's own, with the peer appended).
    pub forwarded_for: Option<HeaderValue>,
    /// `http` or `https`: the scheme the client used.
    pub proto: &'static str,
    /// The subject of the client's verified certificate (mTLS).
    pub client_subject: Option<Arc<str>>,
    /// With `server.tls.strict_host`: the names of the connection's
    /// certificate; a request for another host is misdirected (421).
    pub served_names: Option<Arc<[String]>>,
    /// The connection's place under `server.max_connections`: a tunnel the
    /// connection becomes (an upgrade) keeps it once hyper is done with it.
    pub slot: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
    /// Where informational responses (103) for its requests go: an HTTP/1.1
    /// connection of relais's engine.
    pub interim: Option<crate::http::interim::Interim>,
}

impl Conn {
    pub(crate) fn new(peer: SocketAddr, proto: &'static str, client_subject: Option<Arc<str>>) -> Conn {
        Conn {
            peer,
            client: peer.ip(),
            forwarded_for: None,
            proto,
            client_subject,
            served_names: None,
            slot: None,
            interim: None,
        }
    }

    pub(crate) fn plain(peer: SocketAddr) -> Conn {
        Conn::new(peer, "http", None)
    }
}

impl Pipeline {
    /// Builds from a validated config, reading the certificate files it names
    /// (a file that cannot be used is an error naming it). Upstreams whose
    /// settings did not change are taken over from `previous` with their pools
    /// and health.
    pub(crate) fn new(config: Config, lasting: &Lasting, previous: Option<&Pipeline>) -> Result<Pipeline, ConfigError> {
        let Lasting { cache, metrics, issued, https_port, quic_port, temp_files, copies, memory, maintenance } =
            lasting.clone();
        let file_error = |e: crate::tls::TlsError| config.file_error(e.file, e.reason);
        let mut upstreams = HashMap::new();
        for (name, u) in &config.upstreams {
            let kept = previous
                .and_then(|p| p.upstreams.get(name))
                .filter(|old| old.config == *u && old.engine() == config.server.engine);
            let upstream = match kept {
                Some(old) => old.clone(),
                None => {
                    let upstream =
                        Arc::new(Upstream::new(name, u, config.server.engine, metrics.clone()).map_err(file_error)?);
                    upstream.start_checks();
                    upstream
                }
            };
            upstreams.insert(name.clone(), upstream);
        }
        let tls = match &config.server.tls {
            Some(t) => Some(Arc::new(Tls::new(t, issued.clone(), quic_port).map_err(file_error)?)),
            None => None,
        };
        let shard = shard::Shard::new(&config, &metrics, previous.and_then(|p| p.shard.as_ref()))?;
        let guard = Guard::new(&config, previous.map(|p| &p.guard))?;
        let router = Router::new(&config, &upstreams, &guard)?;
        let bad = |key: String, msg: String| ConfigError::Invalid { source_name: "configuration".into(), key, msg };
        let error_pages =
            error_page::ErrorPages::new(config.check_pages("error_pages", &config.error_pages, &bad)?, &upstreams);
        let hide_headers = config.server.hide_headers.iter().map(|h| h.0.clone()).collect();
        let request_id = config.server.request_id.0.clone();
        let hide_targeted = if config.cache.expose_targeted { Vec::new() } else { config.cache.targeted() };
        let config_compression = config.compression.clone();
        let config_buffering = config.buffering.clone();
        Ok(Pipeline {
            loaded: std::time::SystemTime::now(),
            config: Arc::new(config),
            router,
            guard,
            upstreams,
            cache,
            metrics,
            tls,
            issued,
            https_port,
            quic_port,
            hide_headers,
            request_id,
            hide_targeted,
            compression: crate::compress::Compression::new(&config_compression, copies),
            buffering: buffer::Buffering::new(&config_buffering, temp_files, memory),
            shard,
            error_pages,
            maintenance,
        })
    }

    /// What outlives this configuration, for building the next.
    pub(crate) fn lasting(&self) -> Lasting {
        Lasting {
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            issued: self.issued.clone(),
            https_port: self.https_port,
            quic_port: self.quic_port,
            temp_files: self.buffering.temp_files(),
            copies: self.compression.copies.clone(),
            memory: self.buffering.memory(),
            maintenance: self.maintenance.clone(),
        }
    }
}

/// Serves one request. Never fails: errors become responses here.
pub(crate) async fn handle(
    pipeline: Arc<Pipeline>,
    conn: Arc<Conn>,
    req: Request<Body>,
) -> Result<Response<LoggedBody>, Infallible> {
    let start = Instant::now();
    let log = pipeline.config.log.access && crate::logs::access_enabled();
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
        client: conn.client,
        host: if log { host.to_string() } else { String::new() },
        path: if log {
            req.uri().path_and_query().map_or_else(|| req.uri().path().to_string(), |p| p.to_string())
        } else {
            String::new()
        },
        status: http::StatusCode::OK,
        version: req.version(),
        referer: log.then(|| req.headers().get(http::header::REFERER).cloned()).flatten(),
        user_agent: log.then(|| req.headers().get(http::header::USER_AGENT).cloned()).flatten(),
        upstream: None,
        upstream_time: None,
        cache: None,
        route_label: None,
        refused: None,
        rule: None,
        permits: Vec::new(),
        bytes_in,
        request_id: pipeline
            .request_id
            .as_ref()
            .map(|name| request_id::of(name, req.headers(), || pipeline.guard.trusts(conn.peer.ip()))),
        log,
        format: pipeline.config.log.format,
        metrics: pipeline.metrics.clone(),
    });

    // What compression needs of the request, which `respond` consumes.
    let wants = pipeline.compression.enabled.then(|| (req.method().clone(), accepted_encodings(req.headers())));
    let mut trip = Trip { request_id: record.request_id.clone(), ..Trip::default() };
    let result = respond(&pipeline, conn, authority, req, &mut trip).await;
    let Trip { route, client, permits, .. } = trip;
    if let Some(client) = client {
        record.client = client;
    }
    record.permits = permits;
    let (response, upstream, cache, made) = match result {
        Ok(a) => (a.response, a.upstream, a.cache, false),
        Err(e) => {
            if let Some(reason) = e.guard_reason() {
                let label = route.map_or("none", |r: &Arc<Route>| &*r.label);
                pipeline.metrics.guard(reason, label, false);
                record.refused = Some(reason);
                if let ProxyError::Rejected(r) = &e {
                    record.rule = r.rule.clone();
                }
            } else if !matches!(e, ProxyError::NoRoute) {
                tracing::debug!(error = %e, "request failed");
            }
            (e.into_response(), None, None, true)
        }
    };
    let pages = route.map(|r| &r.error_pages).filter(|p| !p.is_empty());
    let response = if response.status().as_u16() >= 400 && (pages.is_some() || !pipeline.error_pages.is_empty()) {
        error_page::apply(pages, &pipeline.error_pages, response, made, record.client).await
    } else {
        response
    };
    record.upstream_time = response.extensions().get::<crate::upstream::HeadTime>().map(|t| t.0);
    if let Some(tunnel) = response.extensions().get::<upgrade::Held>() {
        // The request goes on as a tunnel: its places in limit_conn zones go with it.
        tunnel.keep(std::mem::take(&mut record.permits));
    }
    record.upstream = upstream;
    record.route_label = route.map(|r| r.label.clone());
    record.cache = cache.as_ref().map(|c| c.outcome);
    let response = match (wants, route) {
        (Some((method, accept)), Some(r)) => compress(&pipeline, r, &method, &accept, response).await,
        _ => response,
    };
    record.status = response.status();
    let (mut parts, body) = response.into_parts();
    let key = parts.extensions.remove::<cache::ShownKey>();
    finish(&pipeline, &record, route.map(|r| &**r), cache.as_ref(), key, &mut parts.headers);
    let length = crate::http::body::content_length(&parts.headers);
    Ok(Response::from_parts(parts, LoggedBody::new(body, length, Some(record))))
}

fn accepted_encodings(headers: &http::HeaderMap) -> http::HeaderMap {
    headers.get_all(http::header::ACCEPT_ENCODING).iter().map(|v| (http::header::ACCEPT_ENCODING, v.clone())).collect()
}

/// Compresses a response for a client that accepts it, or decodes the
/// origin's coding for one that does not (a decoder it cannot afford is a 502
/// or 503), where the route has relais compress.
async fn compress(
    p: &Pipeline,
    route: &Route,
    method: &http::Method,
    accept: &http::HeaderMap,
    response: Response<crate::http::body::Body>,
) -> Response<crate::http::body::Body> {
    let Some(plan) = p.compression.for_route(&route.compress) else { return response };
    plan.apply(method, accept, response, |n| p.buffering.for_decoder(n)).await.unwrap_or_else(|refused| {
        tracing::warn!(error = %refused, "response not decoded");
        error::error_response(refused.status())
    })
}

/// A response on its way out: its request's id, what the route adds, Via,
/// Cache-Status, and over TLS the `Strict-Transport-Security` configured.
fn finish(
    pipeline: &Pipeline,
    record: &AccessRecord,
    route: Option<&Route>,
    cache: Option<&CacheStatus>,
    key: Option<cache::ShownKey>,
    headers: &mut http::HeaderMap,
) {
    if pipeline.config.server.via {
        headers::add_via(headers, Version::HTTP_11);
    }
    if !pipeline.config.cache.expose_tag_headers {
        // Stored with the entry (for purge by tag), not shown to clients.
        headers.remove(&crate::http::names::SURROGATE_KEY);
        headers.remove(&crate::http::names::CACHE_TAG);
    }
    for name in &pipeline.hide_targeted {
        headers.remove(name);
    }
    if let (Some(name), Some(id)) = (&pipeline.request_id, &record.request_id) {
        headers.insert(name.clone(), id.clone());
    }
    if let Some(route) = route {
        route.response_headers.apply(headers);
    }
    if let Some(status) = cache
        && let Ok(v) = HeaderValue::try_from(cache::status_with_key(status, key))
    {
        headers.insert(CACHE_STATUS.clone(), v);
    }
    if record.scheme == "https"
        && let Some(hsts) = pipeline.tls.as_ref().and_then(|t| t.hsts.clone())
    {
        headers.insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    if record.scheme == "https"
        && let Some(alt_svc) = pipeline.tls.as_ref().and_then(|t| t.alt_svc.clone())
    {
        headers.insert(http::header::ALT_SVC, alt_svc);
    }
}

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// What the stages learn about a request on its way, which the log, the
/// metrics and compression need whether it is answered or refused.
#[derive(Default)]
struct Trip<'a> {
    route: Option<&'a Arc<Route>>,
    /// The client `real_ip` found, when it is not the peer.
    client: Option<IpAddr>,
    /// Places held in the route's `limit_conn` zones.
    permits: Vec<crate::guard::ConnPermit>,
    /// The request's id, until it is set on the request.
    request_id: Option<HeaderValue>,
}

/// The stages in order; `trip` learns the route as soon as one is found, and
/// from the guard who the client is and the places it holds.
async fn respond<'a>(
    pipeline: &'a Arc<Pipeline>,
    conn: Arc<Conn>,
    authority: Result<Option<target::Authority>, &'static str>,
    mut req: Request<Body>,
    trip: &mut Trip<'a>,
) -> Result<Answer, ProxyError> {
    if req.method() == http::Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let authority = authority.map_err(ProxyError::BadRequest)?;
    if let Some(names) = &conn.served_names
        && !crate::tls::covers(names, authority.as_ref().map_or("", |a| a.host()))
    {
        return Err(ProxyError::Misdirected);
    }
    // What the origin will not get, nothing here decides by: the guard, the
    // router and the cache key see the request as it will be forwarded.
    if let Some(upgrade) = headers::strip_hop_by_hop(req.headers_mut()) {
        req.extensions_mut().insert(headers::Upgrade(upgrade));
    }
    if let (Some(name), Some(id)) = (&pipeline.request_id, trip.request_id.take()) {
        req.headers_mut().insert(name.clone(), id);
    }
    // Host is the host the request is routed, keyed and sent by (an absolute
    // target's, HTTP/2's `:authority`), for rules and zones that read it.
    match &authority {
        Some(a) => req.headers_mut().insert(http::header::HOST, a.value.clone()),
        None => req.headers_mut().remove(http::header::HOST),
    };
    if let Some(shard) = &pipeline.shard {
        // A peer's headers are removed as they arrive; a request they sign is fetched here.
        if shard.is_check(req.headers_mut()) {
            let mut res = Response::new(crate::http::body::Body::empty());
            *res.status_mut() = http::StatusCode::NO_CONTENT;
            return Ok(Answer::local(res));
        }
        let mut headers = std::mem::take(req.headers_mut());
        let host = authority.as_ref().and_then(|a| a.value.to_str().ok()).unwrap_or("");
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if shard.signed_by_peer(&mut headers, req.method(), host, path) {
            req.extensions_mut().insert(shard::FromPeer);
        }
        *req.headers_mut() = headers;
    }
    if let Some(limit) = pipeline.config.server.max_request_body {
        // The declared length, as hyper read it from Content-Length.
        let declared = http_body::Body::size_hint(req.body()).exact();
        if declared.is_some_and(|n| n > limit.bytes()) {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    let guard = &pipeline.guard;
    if let Some(normal) = guard.target(req.uri())? {
        *req.uri_mut() = normal;
    }
    let conn = match guard.client(conn.peer.ip(), req.headers()) {
        Some(c) => {
            trip.client = Some(c.ip);
            Arc::new(Conn { client: c.ip, forwarded_for: c.forwarded_for, ..(*conn).clone() })
        }
        None => conn,
    };
    let (mut parts, body) = req.into_parts();
    let skip_rules = matches!(
        guard.check(&Subject::new(conn.client, &parts, "none"), &pipeline.metrics)?,
        crate::guard::Outcome::Allowed
    );
    let path = parts.uri.path();
    if conn.proto == "http"
        && let Some(token) = path.strip_prefix(ACME_CHALLENGE)
        && let Some(authorization) = pipeline.issued.token(token)
    {
        // An ACME http-01 validation of a certificate relais is obtaining.
        let mut res = Response::new(crate::http::body::Body::full(authorization));
        res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(Answer::local(res));
    }
    let host = authority.as_ref().map_or("", |a| a.host());
    let mut route = match pipeline.router.find(host, path, &parts.headers).ok_or(ProxyError::NoRoute)? {
        Found::Route(route) => route,
        Found::Directory(route) => {
            trip.route = Some(route);
            return Ok(Answer::local(to_directory(route.directory(), &parts.uri)?));
        }
    };
    trip.route = Some(route);
    let mut skip_rules = skip_rules;
    if !route.rewrites.is_empty() {
        let client = conn.client;
        match rewrite::follow(pipeline, route, &mut parts, (client, host), &mut skip_rules)? {
            rewrite::Routed::Route(r) => route = r,
            rewrite::Routed::Answered(r, response) => {
                trip.route = Some(r);
                return Ok(Answer::local(response));
            }
        }
        trip.route = Some(route);
    }
    // Only the protocols the route allows are asked of the origin; anything
    // else goes as an ordinary request (nginx sends no Upgrade unless told to).
    if let Some(headers::Upgrade(asked)) = parts.extensions.remove::<headers::Upgrade>()
        && let Some(allowed) = route.upgrade(&asked)
    {
        parts.extensions.insert(headers::Upgrade(allowed));
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    route.upstream_path(target).map_err(|e| ProxyError::BadRequest(e.message()))?;
    let subject = Subject::new(conn.client, &parts, &route.label);
    route.guard.check(&subject, skip_rules, &pipeline.metrics)?;
    if pipeline.maintenance.applies(&route.label) && !pipeline.config.maintenance.allow.contains(conn.client) {
        return Err(ProxyError::Maintenance(pipeline.config.maintenance.retry_after.get().as_secs()));
    }
    if conn.proto == "http" && route.redirect_https {
        let response = redirect_to_https(pipeline, authority.as_ref(), &parts.uri)?;
        return Ok(Answer::local(response));
    }
    if route.guard.has_limits() {
        trip.permits = route.guard.admit(&subject, &pipeline.metrics).await?;
    }
    if let Some(auth) = &route.auth {
        let host = authority.as_ref().map(|a| &a.value);
        let forwarded = |h: &mut http::HeaderMap| forward::forwarding(&conn, host, h);
        let asker = crate::auth::Asker { client: conn.client, route: &route.label, forwarded: &forwarded };
        // Boxed: its state stays out of every other route's future.
        Box::pin(auth.check(&mut parts, &asker, &pipeline.metrics)).await?;
    }
    if let Some(fixed) = &route.fixed {
        let vars = fixed::Vars {
            scheme: conn.proto,
            host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            regex: route.regex.as_ref(),
        };
        return fixed.answer(&vars).map(Answer::local);
    }
    if let Some(files) = &route.files {
        match files.serve(&parts.method, &parts.uri, &parts.headers, &pipeline.metrics).await {
            crate::files::Served::Response(res) => return Ok(Answer::local(res)),
            // A 404 or 403 is relais's own, for error pages to replace.
            crate::files::Served::Refused(status) if status != http::StatusCode::METHOD_NOT_ALLOWED => {
                return Err(ProxyError::Returned(status));
            }
            crate::files::Served::Refused(status) => return Ok(Answer::local(files_refused(status))),
            crate::files::Served::Upstream => {}
        }
    }
    let req = Request::from_parts(parts, body);
    cache::serve(pipeline.clone(), route.clone(), conn, authority.map(|a| a.value), req).await
}

/// A static route's refusal: the short error body; a 405 says what is allowed.
fn files_refused(status: http::StatusCode) -> Response<crate::http::body::Body> {
    let mut res = error_response(status);
    if status == http::StatusCode::METHOD_NOT_ALLOWED {
        res.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    res
}

const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// 301 to `directory`, the route's, for a path that names it without its
/// slash (its parameters, if any, dropped), query kept, as nginx answers
/// `/private` for `location /private/`. The Location is relative: it repeats
/// nothing the client sent but the query.
pub(super) fn to_directory(directory: &str, uri: &http::Uri) -> Result<Response<crate::http::body::Body>, ProxyError> {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let location = HeaderValue::try_from(format!("{directory}{query}"))
        .map_err(|_| ProxyError::BadRequest("cannot redirect this URL"))?;
    let mut res = error_response(http::StatusCode::MOVED_PERMANENTLY);
    res.headers_mut().insert(http::header::LOCATION, location);
    Ok(res)
}

/// 308 to the same URL on https: the TLS listener's port unless it is 443.
fn redirect_to_https(
    pipeline: &Pipeline,
    authority: Option<&target::Authority>,
    uri: &http::Uri,
) -> Result<Response<crate::http::body::Body>, ProxyError> {
    let host = authority.ok_or(ProxyError::BadRequest("no host to redirect to"))?.host();
    let port = pipeline.https_port.filter(|&p| p != 443).map(|p| format!(":{p}")).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = HeaderValue::try_from(format!("https://{host}{port}{path}"))
        .map_err(|_| ProxyError::BadRequest("cannot redirect this URL"))?;
    let mut res = Response::new(crate::http::body::Body::empty());
    *res.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    res.headers_mut().insert(http::header::LOCATION, location);
    Ok(res)
}
