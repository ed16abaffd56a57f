//! The cache stage, between routing and forwarding.
//!
//! GET and HEAD are looked up (HEAD from the GET entry); a fresh entry is
//! served without touching the origin, a stale one is revalidated with a
//! conditional request, and a miss is fetched (as GET, without the client's
//! conditionals, so the answer is storable) and teed into both tiers while it
//! streams to the client. Unsafe methods invalidate what they change (RFC 9111
//! §4.4). Every response says what happened in `Cache-Status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use cache_policy::{Bypass, CacheOutcome, CacheStatus, Freshness, Policy, Revalidation};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::ProxyError;
use super::forward::{forward, request_body};
use super::route::Route;
use super::{Conn, Pipeline};
use crate::body::Body;
use crate::cache::tee::TeeBody;
use crate::cache::{Cache, Entry, Stored, VaryRecord, key};

/// A response and what the cache did for it.
pub struct Served {
    pub response: Response<Body>,
    pub upstream: Option<Arc<str>>,
    pub status: CacheStatus,
}

/// Where a request's response lives or would live.
struct Slot {
    primary: String,
    /// The key the response is (or will be) stored under.
    key: String,
    /// The URL's Vary record, if it has one.
    vary: Option<VaryRecord>,
    url: String,
}

pub async fn serve(
    p: &Pipeline,
    route: &Route,
    conn: &Conn,
    host_value: Option<&HeaderValue>,
    req: Request<Incoming>,
) -> Result<Served, ProxyError> {
    let cache = &p.cache;
    let (parts, body) = req.into_parts();
    let authority = host_value.and_then(|h| h.to_str().ok()).unwrap_or("");
    let url = key::url(conn.proto, authority, parts.uri.path_and_query().map_or("/", |pq| pq.as_str()));

    let upgrade = parts.headers.contains_key(header::UPGRADE);
    let allowed = cache_policy::lookup_allowed(&parts, &route.cache).map(|()| !upgrade);
    if allowed != Ok(true) {
        let status = match allowed {
            Err(reason) => CacheStatus::bypass(reason),
            Ok(_) => CacheStatus::new(CacheOutcome::Bypass).detail("upgrade"),
        };
        let method = parts.method.clone();
        let body = request_body(p, body);
        let fwd = forward(p, route, conn, host_value, Request::from_parts(parts, body)).await?;
        if !method.is_safe() {
            invalidate(cache, &method, fwd.response.status(), &url, fwd.response.headers()).await;
        }
        return Ok(Served { response: fwd.response, upstream: Some(fwd.server), status });
    }

    let (slot, found, miss) = lookup(cache, url, &parts.headers).await;
    let now = SystemTime::now();
    let mut sie = false;
    if let Some(stored) = &found {
        let entry = entry_of(stored);
        match entry.policy.evaluate(&parts, now) {
            Freshness::Fresh => {
                let status = CacheStatus::new(CacheOutcome::Hit).ttl(entry.policy.ttl_secs(now));
                return Ok(Served { response: from_entry(entry, &parts, now), upstream: None, status });
            }
            Freshness::Stale { within_sie, .. } => sie = within_sie,
            Freshness::MustRevalidate => {}
        }
    }
    if cache_policy::only_if_cached(&parts) {
        return Err(ProxyError::NotCached);
    }
    match found {
        Some(entry) => revalidate(p, route, conn, host_value, parts, slot, entry, sie).await,
        None => fetch(p, route, conn, host_value, parts, slot, CacheStatus::new(miss)).await,
    }
}

/// Finds the entry for a request: the primary key, then the variant its Vary record selects.
async fn lookup(cache: &Cache, url: String, request: &HeaderMap) -> (Slot, Option<Arc<Stored>>, CacheOutcome) {
    let primary = key::primary(&url);
    let found = cache.get(&primary).await;
    match found.as_deref() {
        Some(Stored::Entry(_)) => (Slot { key: primary.clone(), primary, vary: None, url }, found, CacheOutcome::Hit),
        Some(Stored::Vary(v)) => {
            let key = key::variant(&primary, v.generation, &v.names, request);
            let variant = cache.get(&key).await.filter(|s| matches!(**s, Stored::Entry(_)));
            let slot = Slot { primary, key, vary: Some(v.clone()), url };
            (slot, variant, CacheOutcome::VaryMiss)
        }
        None => (Slot { key: primary.clone(), primary, vary: None, url }, None, CacheOutcome::UriMiss),
    }
}

fn entry_of(stored: &Stored) -> &Entry {
    match stored {
        Stored::Entry(e) => e,
        Stored::Vary(_) => unreachable!("lookup returns entries only"),
    }
}

/// A stale entry: ask the origin whether it still holds (If-None-Match /
/// If-Modified-Since). 304 refreshes it; a new response replaces it; a failure
/// within stale-if-error serves it.
#[allow(clippy::too_many_arguments)]
async fn revalidate(
    p: &Pipeline,
    route: &Route,
    conn: &Conn,
    host_value: Option<&HeaderValue>,
    parts: Parts,
    slot: Slot,
    stored: Arc<Stored>,
    within_sie: bool,
) -> Result<Served, ProxyError> {
    let entry = entry_of(&stored);
    let mut upstream = upstream_request(&parts);
    upstream.headers_mut().extend(entry.policy.revalidation_headers(&entry.headers));
    let request_time = SystemTime::now();
    let result = forward(p, route, conn, host_value, upstream).await;
    let response_time = SystemTime::now();
    let fwd = match result {
        Ok(fwd) => fwd,
        Err(e) if within_sie => {
            tracing::warn!(url = %slot.url, error = %e, "origin failed; serving stale (stale-if-error)");
            let status = CacheStatus::new(CacheOutcome::StaleIfError).ttl(entry.policy.ttl_secs(response_time));
            return Ok(Served { response: from_entry(entry, &parts, response_time), upstream: None, status });
        }
        Err(e) => return Err(e),
    };
    let code = fwd.response.status();
    if within_sie && is_server_error(code) {
        let status = CacheStatus::new(CacheOutcome::StaleIfError)
            .fwd_status(code.as_u16())
            .ttl(entry.policy.ttl_secs(response_time));
        return Ok(Served { response: from_entry(entry, &parts, response_time), upstream: Some(fwd.server), status });
    }
    let (res_parts, res_body) = fwd.response.into_parts();
    let rules = &route.cache;
    match entry.policy.revalidate(&get_parts(&parts), &entry.headers, &res_parts, rules, request_time, response_time) {
        Revalidation::NotModified { policy, headers } => {
            let refreshed = Entry { headers, policy, stored_at: response_time, ..entry.clone() };
            let status = CacheStatus::new(CacheOutcome::Revalidated)
                .fwd_status(304)
                .stored()
                .ttl(refreshed.policy.ttl_secs(response_time));
            let response = from_entry(&refreshed, &parts, response_time);
            let cache = p.cache.clone();
            tokio::spawn(async move { cache.refresh(slot.key, Stored::Entry(refreshed)).await });
            Ok(Served { response, upstream: Some(fwd.server), status })
        }
        Revalidation::NotModifiedUncacheable { headers, reason } => {
            let once = Entry { headers, ..entry.clone() };
            let response = from_entry(&once, &parts, response_time);
            p.cache.remove(&slot.key).await;
            let status = CacheStatus::new(CacheOutcome::Revalidated).fwd_status(304).detail(reason.as_str());
            Ok(Served { response, upstream: Some(fwd.server), status })
        }
        Revalidation::Modified if code == StatusCode::NOT_MODIFIED => {
            // A 304 that does not match what we hold: fetch the whole thing.
            drop(res_body);
            fetch(p, route, conn, host_value, parts, slot, CacheStatus::new(CacheOutcome::Expired)).await
        }
        Revalidation::Modified => {
            let fwd_response = Response::from_parts(res_parts, res_body);
            let status = CacheStatus::new(CacheOutcome::Expired).fwd_status(code.as_u16());
            Ok(store(p, route, &parts, slot, fwd_response, fwd.server, request_time, response_time, status))
        }
    }
}

/// A miss: fetch as GET without the client's conditionals, store if allowed.
async fn fetch(
    p: &Pipeline,
    route: &Route,
    conn: &Conn,
    host_value: Option<&HeaderValue>,
    parts: Parts,
    slot: Slot,
    status: CacheStatus,
) -> Result<Served, ProxyError> {
    let request_time = SystemTime::now();
    let fwd = forward(p, route, conn, host_value, upstream_request(&parts)).await?;
    let response_time = SystemTime::now();
    Ok(store(p, route, &parts, slot, fwd.response, fwd.server, request_time, response_time, status))
}

/// Decides whether `response` is stored; if so, tees its body into the cache.
/// Then answers the client's own conditionals and HEAD.
#[allow(clippy::too_many_arguments)]
fn store(
    p: &Pipeline,
    route: &Route,
    parts: &Parts,
    slot: Slot,
    response: Response<Body>,
    server: Arc<str>,
    request_time: SystemTime,
    response_time: SystemTime,
    status: CacheStatus,
) -> Served {
    let (res_parts, body) = response.into_parts();
    let rules = &route.cache;
    let policy = match Policy::new(&get_parts(parts), &res_parts, rules, request_time, response_time) {
        Ok(policy) => policy,
        Err(reason) => {
            if status.outcome == CacheOutcome::Expired {
                // The stored response was replaced by one we may not keep.
                let cache = p.cache.clone();
                tokio::spawn(async move { cache.remove(&slot.key).await });
            }
            let status = status.detail(reason.as_str());
            return Served { response: Response::from_parts(res_parts, body), upstream: Some(server), status };
        }
    };
    let expected = res_parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let limit = p.cache.max_object_size;
    if expected.is_some_and(|n| n > limit) {
        let status = status.detail(Bypass::TooLarge.as_str());
        return Served { response: Response::from_parts(res_parts, body), upstream: Some(server), status };
    }

    let names = cache_policy::vary_names(&res_parts.headers).unwrap_or_default();
    let (key, record) = if names.is_empty() {
        (slot.primary.clone(), None)
    } else {
        let record = match slot.vary {
            Some(v) if v.names == names => v,
            _ => VaryRecord { names, generation: generation(), url: slot.url.clone() },
        };
        (key::variant(&slot.primary, record.generation, &record.names, &parts.headers), Some(record))
    };
    let entry = Entry {
        status: res_parts.status,
        headers: cache_policy::storable_headers(&res_parts.headers, rules),
        body: Bytes::new(),
        tags: Entry::tags_of(&res_parts.headers),
        policy,
        url: slot.url,
        stored_at: response_time,
    };
    let status = status.stored().ttl(entry.policy.ttl_secs(response_time));
    let cache = p.cache.clone();
    let primary = slot.primary;
    let commit = Box::new(move |body: Bytes| {
        tokio::spawn(async move {
            if let Some(record) = record {
                cache.put(primary, Stored::Vary(record)).await;
            }
            cache.put(key, Stored::Entry(Entry { body, ..entry })).await;
        });
    });
    let tee = TeeBody::new(body, expected, limit, commit);

    // The client's own conditional, or a HEAD: answer without the body, but
    // still read it in full so it is stored.
    let head = parts.method == Method::HEAD;
    let not_modified =
        res_parts.status == StatusCode::OK && cache_policy::not_modified(&parts.headers, &res_parts.headers);
    if head || not_modified {
        tokio::spawn(drain(tee));
        let mut res = Response::from_parts(res_parts, Body::empty());
        if not_modified {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            keep_304_headers(res.headers_mut());
        }
        return Served { response: res, upstream: Some(server), status };
    }
    Served { response: Response::from_parts(res_parts, Body::boxed(tee)), upstream: Some(server), status }
}

async fn drain(body: TeeBody) {
    use http_body_util::BodyExt;
    let _ = body.collect().await;
}

/// A response built from a stored entry (with Age), a 304 if the client's
/// conditional matches, no body for HEAD.
fn from_entry(entry: &Entry, parts: &Parts, now: SystemTime) -> Response<Body> {
    let headers = entry.policy.response_headers(&entry.headers, now);
    let not_modified = entry.status == StatusCode::OK && cache_policy::not_modified(&parts.headers, &entry.headers);
    let body =
        if not_modified || parts.method == Method::HEAD { Body::empty() } else { Body::full(entry.body.clone()) };
    let mut res = Response::new(body);
    *res.headers_mut() = headers;
    if not_modified {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        keep_304_headers(res.headers_mut());
    } else {
        *res.status_mut() = entry.status;
    }
    res
}

/// RFC 9110 §15.4.5: a 304 carries the fields a 200 would have that describe
/// caching and validation, and no content fields.
fn keep_304_headers(headers: &mut HeaderMap) {
    const KEEP: [HeaderName; 8] = [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::AGE,
        header::LAST_MODIFIED,
    ];
    let kept: HeaderMap =
        KEEP.iter().flat_map(|n| headers.get_all(n).iter().map(move |v| (n.clone(), v.clone()))).collect();
    *headers = kept;
}

/// The request sent upstream from the cache stage: GET (a HEAD is fetched as
/// GET so the answer can be stored), without the client's conditionals.
fn upstream_request(parts: &Parts) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    let mut headers = parts.headers.clone();
    for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_RANGE] {
        headers.remove(h);
    }
    *req.headers_mut() = headers;
    req
}

/// The request as the GET whose response is stored (policy decisions are about GET).
fn get_parts(parts: &Parts) -> Parts {
    let (mut p, ()) = Request::new(()).into_parts();
    p.method = Method::GET;
    p.uri = parts.uri.clone();
    p.headers = parts.headers.clone();
    p
}

fn is_server_error(code: StatusCode) -> bool {
    matches!(code.as_u16(), 500 | 502 | 503 | 504)
}

/// RFC 9111 §4.4: a successful unsafe request invalidates its URL and the
/// same-origin URLs in Location and Content-Location, in both tiers.
async fn invalidate(cache: &Cache, method: &Method, status: StatusCode, url: &str, headers: &HeaderMap) {
    let Ok(uri) = url.parse::<http::Uri>() else { return };
    for target in cache_policy::invalidations(method, status, &uri, headers) {
        if let Some(u) = key::url_of(&target) {
            cache.remove(&key::primary(&u)).await;
        }
    }
}

/// A new Vary generation: unique within this process and unlikely to repeat across restarts.
fn generation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}
