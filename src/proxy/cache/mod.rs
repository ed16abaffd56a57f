//! The cache stage, between routing and forwarding.
//!
//! GET and HEAD are looked up (HEAD from the GET entry); a fresh entry is
//! served without touching the origin; a stale one within its
//! stale-while-revalidate window is served at once while one background
//! revalidation runs; otherwise it is revalidated with a conditional request.
//! Misses and revalidations are collapsed: one origin fetch per key, run in a
//! task of its own, shared by every request that arrives meanwhile (see
//! [`crate::cache::fill`]). What is fetched is the full GET response, teed
//! into both tiers while it streams; each client's HEAD, conditional or Range
//! is cut from it afterwards ([`super::present`]). Unsafe methods invalidate
//! what they change (RFC 9111 §4.4). Every response says what happened in
//! `Cache-Status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use cache_policy::{Bypass, ByteRange, CacheOutcome, CacheStatus, Freshness, Policy, Revalidation};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use super::buffer::RequestError;
use super::error::ProxyError;
use super::forward::{forward, request_body};
use super::present::{self, present};
use super::route::Route;
use super::{Conn, Pipeline};
use crate::cache::fill::{Fill, Head, Leader, Role};
use crate::cache::tee::{Storing, TeeBody};
use crate::cache::{Cache, Entry, Stored, VaryRecord, key};
use crate::http::body::Body;
use crate::metrics::WaitEnd;

mod slice;

/// A response and what the cache did for it.
pub struct Served {
    pub response: Response<Body>,
    pub upstream: Option<Arc<str>>,
    pub status: CacheStatus,
    /// The response may be shared with collapsed waiters (stored, or from the cache).
    shareable: bool,
    /// Being stored while it streams: whether it still is.
    storing: Option<Storing>,
}

/// Where a request's response lives or would live.
#[derive(Clone)]
struct Slot {
    primary: String,
    /// The key the response is (or will be) stored under.
    key: String,
    /// The URL's Vary record, if it has one.
    vary: Option<VaryRecord>,
    url: String,
}

/// When a fetch happened: the purge epoch and the clock when it began, and
/// the clock when its response head arrived. A purge in between keeps the
/// response out of the cache.
struct Timing {
    epoch: u64,
    request_time: SystemTime,
    response_time: SystemTime,
}

/// What one origin fetch is for: where its answer goes, the stale entry it
/// revalidates (if any), whether that entry may stand in for an error, and
/// the Cache-Status it starts from.
struct Fetch {
    slot: Slot,
    found: Option<Arc<Stored>>,
    within_sie: bool,
    /// `found` is fresh, but the request asked for the origin (`fwd=request`).
    by_request: bool,
    status: CacheStatus,
}

/// One request in the cache stage, owned, so that a fetch can outlive its client.
#[derive(Clone)]
struct Ask {
    p: Arc<Pipeline>,
    route: Arc<Route>,
    conn: Arc<Conn>,
    host: Option<HeaderValue>,
    /// The client's request head (no extensions).
    req: Arc<Parts>,
    /// The range asked of the origin (a slice), instead of the whole.
    range: Option<HeaderValue>,
}

pub async fn serve(
    p: Arc<Pipeline>,
    route: Arc<Route>,
    conn: Arc<Conn>,
    host: Option<HeaderValue>,
    req: Request<Incoming>,
) -> Result<Served, ProxyError> {
    let (parts, body) = req.into_parts();
    let authority = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let url = key::url(conn.proto, authority, parts.uri.path_and_query().map_or("/", |pq| pq.as_str()));

    let upgrade = parts.extensions.get::<super::headers::Upgrade>().is_some();
    // A GET or HEAD with a body is forwarded with it and its answer kept from
    // everyone else: the body may select what the answer is.
    let with_body = !http_body::Body::is_end_stream(&body);
    let allowed = match cache_policy::lookup_allowed(&parts, &route.cache) {
        Ok(()) if with_body => Err(Bypass::RequestBody),
        other => other,
    }
    .map(|()| !upgrade);
    if allowed != Ok(true) {
        let status = match allowed {
            Err(reason) => CacheStatus::bypass(reason),
            Ok(_) => CacheStatus::new(CacheOutcome::Bypass).detail("upgrade"),
        };
        admit_origin(&p, &route, &conn, &parts).await?;
        let method = parts.method.clone();
        let mut body = request_body(&p, &parts, body);
        // A gRPC call streams its messages both ways: read whole first, it would never start.
        if route.request_buffering && !http_body::Body::is_end_stream(&body) && !is_grpc(&parts.headers) {
            body = p.buffering.read_request(body).await.map_err(|e| match e {
                RequestError::Body(e) => super::forward::client_error(&e),
                RequestError::NoRoom { ever: true } => ProxyError::BodyTooLarge,
                RequestError::NoRoom { ever: false } => ProxyError::NoRoomForBody,
            })?;
        }
        let fwd = Box::pin(forward(&p, &route, &conn, host.as_ref(), Request::from_parts(parts, body))).await?;
        if !method.is_safe() {
            invalidate(&p.cache, &method, fwd.response.status(), &url, fwd.response.headers()).await;
        }
        return Ok(Served {
            response: p.buffering.apply(fwd.response),
            upstream: Some(fwd.server),
            status,
            shareable: false,
            storing: None,
        });
    }
    drop(body);
    if let Some(size) = route.slice {
        return slice::serve(&p, &route, &conn, host, parts, url, size).await;
    }

    // The owned copy of the request head is only made when the origin is asked:
    // a fresh hit clones no headers.
    let ask = || Ask {
        req: Arc::new(origin_head(&p, &route, head_of(&parts))),
        range: None,
        p: p.clone(),
        route: route.clone(),
        conn: conn.clone(),
        host: host.clone(),
    };
    let (slot, mut found, miss) = lookup(&p.cache, url, &parts.headers).await;
    let now = SystemTime::now();
    let (mut sie, mut by_request) = (false, false);
    if let Some(entry) = found.as_deref().map(entry_of).filter(|e| e.status == StatusCode::PARTIAL_CONTENT) {
        // A stored part: a hit for the ranges it covers; otherwise completed
        // from the origin when it can be, or fetched whole.
        let fresh = entry.policy.evaluate(&parts, now) == Freshness::Fresh;
        if fresh && present::part_covers(&parts, &entry.headers) {
            let status = CacheStatus::new(CacheOutcome::Hit).ttl(entry.policy.ttl_secs(now));
            return Ok(hit(&p, &route, &parts, entry, now, status));
        }
        if !fresh || missing_piece(entry).is_none() {
            found = None;
        }
    } else if let Some(stored) = &found {
        let entry = entry_of(stored);
        match entry.policy.evaluate(&parts, now) {
            Freshness::Fresh => {
                let status = CacheStatus::new(CacheOutcome::Hit).ttl(entry.policy.ttl_secs(now));
                return Ok(hit(&p, &route, &parts, entry, now, status));
            }
            Freshness::Stale { within_swr: true, .. } => {
                revalidate_in_background(&ask(), &slot, stored);
                let status = CacheStatus::new(CacheOutcome::Stale).ttl(entry.policy.ttl_secs(now));
                return Ok(hit(&p, &route, &parts, entry, now, status));
            }
            Freshness::Stale { within_sie, .. } => sie = within_sie,
            Freshness::MustRevalidate => {}
            Freshness::RequestRevalidates => by_request = true,
        }
    }
    if cache_policy::only_if_cached(&parts) {
        return Err(ProxyError::NotCached);
    }
    admit_origin(&p, &route, &conn, &parts).await?;
    // Boxed, as the bypass above: a hit's future stays small, and hyper moves
    // it at least once per request (into its task, for HTTP/2).
    let fetch = Fetch { slot, found, within_sie: sie, by_request, status: CacheStatus::new(miss) };
    let served = Box::pin(collapsed(&ask(), fetch)).await?;
    Ok(client_view(&parts, served))
}

/// The route's zones that count only what goes to the origin (`count_hits = false`).
async fn admit_origin(p: &Pipeline, route: &Route, conn: &Conn, parts: &Parts) -> Result<(), ProxyError> {
    if route.guard.limits_origin() {
        let subject = crate::guard::Subject::new(conn.client, parts, &route.label);
        route.guard.admit_origin(&subject, &p.metrics).await?;
    }
    Ok(())
}

/// Fetch (or revalidate) through the key's shared fill: lead it, or wait for it.
async fn collapsed(ask: &Ask, fetch: Fetch) -> Result<Served, ProxyError> {
    let cache = &ask.p.cache;
    if cache.is_pass(&fetch.slot.key) {
        // Known uncacheable: waiting for someone else's fetch would only delay us.
        return origin(ask, fetch).await;
    }
    let fill = match cache.fills.join(&fetch.slot.key) {
        Role::Leader(leader) => {
            let (tx, rx) = oneshot::channel();
            tokio::spawn(lead(ask.clone(), fetch, leader, Some(tx)));
            return rx.await.unwrap_or(Err(ProxyError::Collapsed(StatusCode::BAD_GATEWAY)));
        }
        Role::Waiter(fill) => fill,
    };
    let metrics = &ask.p.metrics;
    let head = fill.head(cache.lock_timeout).await;
    let end = match &head {
        Some(Head::Shared { .. } | Head::Pending) => WaitEnd::Shared,
        Some(Head::Released) => WaitEnd::Released,
        Some(Head::Failed(_)) => WaitEnd::Failed,
        Some(Head::Abandoned) => WaitEnd::Abandoned,
        None => WaitEnd::TimedOut,
    };
    let reader = match head {
        Some(Head::Shared { status: code, headers, cache_status }) => {
            fill.body().map(|b| (code, headers, cache_status, b))
        }
        Some(Head::Failed(code)) => {
            metrics.collapsed_wait(end);
            return Err(ProxyError::Collapsed(code));
        }
        _ => None,
    };
    let Some((code, headers, cache_status, body)) = reader else {
        // Released, timed out, abandoned, or too large to store (the start of its body is gone).
        metrics.collapsed_wait(if end == WaitEnd::Shared { WaitEnd::Released } else { end });
        return origin(ask, fetch).await;
    };
    metrics.collapsed_wait(end);
    let mut res = Response::new(Body::boxed(body));
    *res.status_mut() = code;
    *res.headers_mut() = headers;
    Ok(Served { response: res, upstream: None, status: cache_status.collapsed(), shareable: true, storing: None })
}

/// The leader's fetch, in its own task: publish the head, hand the leader's
/// client its response, and pump a shareable body into the fill to its end
/// (or, once it will not be stored, for as long as someone reads it).
/// However this ends, dropping `leader` tells the waiters.
async fn lead(ask: Ask, fetch: Fetch, leader: Leader, client: Option<oneshot::Sender<Result<Served, ProxyError>>>) {
    let key = fetch.slot.key.clone();
    let fill = leader.fill();
    match origin(&ask, fetch).await {
        Err(e) => {
            fill.publish(Head::Failed(e.status()));
            leader.close();
            if let Some(tx) = client {
                let _ = tx.send(Err(e));
            }
        }
        Ok(served) if !served.shareable => {
            fill.publish(Head::Released);
            leader.close();
            if served.status.detail.is_some() {
                ask.p.cache.mark_pass(&key);
            }
            if let Some(tx) = client {
                let _ = tx.send(Ok(served));
            }
        }
        Ok(served) => {
            let (parts, mut body) = served.response.into_parts();
            fill.publish(Head::Shared {
                status: parts.status,
                headers: parts.headers.clone(),
                cache_status: served.status.clone(),
            });
            if let Some(tx) = client
                && let Some(reader) = fill.body()
            {
                let response = Response::from_parts(parts, Body::boxed(reader));
                let (upstream, status) = (served.upstream, served.status);
                let _ = tx.send(Ok(Served { response, upstream, status, shareable: true, storing: None }));
            }
            let not_stored = || {
                leader.close();
                ask.p.cache.mark_pass(&key);
            };
            let complete = pump(&mut body, fill, served.storing, not_stored).await;
            fill.finish(complete);
        }
    }
}

/// Reads `body` into the fill; true if it ended cleanly. Once the body is
/// known not to be stored (too large, or no memory left for it) the fill
/// streams only (`not_stored` is called once), and reading waits for the
/// slowest reader or stops when none is left.
async fn pump(body: &mut Body, fill: &Fill, storing: Option<Storing>, not_stored: impl FnOnce()) -> bool {
    use http_body_util::BodyExt;
    let mut not_stored = Some(not_stored);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else { continue };
                fill.push(data);
                if storing.as_ref().is_some_and(|s| !s.still()) {
                    if let Some(f) = not_stored.take() {
                        fill.stream_only();
                        f();
                    }
                    if !fill.room().await {
                        tracing::debug!("every reader of a body too large to store left; fetch stopped");
                        return false;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "origin body broke off; nothing stored");
                return false;
            }
        }
    }
    true
}

/// Within stale-while-revalidate: one background revalidation, unless one is running.
fn revalidate_in_background(ask: &Ask, slot: &Slot, stored: &Arc<Stored>) {
    if let Role::Leader(leader) = ask.p.cache.fills.join(&slot.key) {
        let status = CacheStatus::new(CacheOutcome::Stale);
        let fetch =
            Fetch { slot: slot.clone(), found: Some(stored.clone()), within_sie: false, by_request: false, status };
        tokio::spawn(lead(ask.clone(), fetch, leader, None));
    }
}

/// Asks the origin: a revalidation if an entry is held, else a plain fetch.
async fn origin(ask: &Ask, fetch: Fetch) -> Result<Served, ProxyError> {
    match fetch.found {
        Some(stored) if entry_of(&stored).status == StatusCode::PARTIAL_CONTENT => {
            complete(ask, fetch.slot, stored, fetch.status).await
        }
        Some(stored) => revalidate(ask, fetch.slot, stored, fetch.within_sie, fetch.by_request).await,
        None => self::fetch(ask, fetch.slot, fetch.status).await,
    }
}

/// A client's own view of a full response (HEAD, conditionals, Range).
fn client_view(parts: &Parts, served: Served) -> Served {
    Served { response: present(parts, served.response), ..served }
}

/// The request head without its extensions, to share with a fill task.
fn head_of(parts: &Parts) -> Parts {
    let (mut p, ()) = Request::new(()).into_parts();
    p.method = parts.method.clone();
    p.uri = parts.uri.clone();
    p.version = parts.version;
    p.headers = parts.headers.clone();
    p
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
async fn revalidate(
    ask: &Ask,
    slot: Slot,
    stored: Arc<Stored>,
    within_sie: bool,
    by_request: bool,
) -> Result<Served, ProxyError> {
    let entry = entry_of(&stored);
    // RFC 9211: a fresh entry the request would not take is `fwd=request`, a stale one `fwd=stale`.
    let (confirmed, replaced) = match by_request {
        true => (CacheOutcome::Request, CacheOutcome::Request),
        false => (CacheOutcome::Revalidated, CacheOutcome::Expired),
    };
    let mut upstream = upstream_request(&ask.req, Method::GET);
    upstream.headers_mut().extend(entry.policy.revalidation_headers(&entry.headers));
    let epoch = ask.p.cache.purge_epoch();
    let request_time = SystemTime::now();
    let result = forward(&ask.p, &ask.route, &ask.conn, ask.host.as_ref(), upstream).await;
    let response_time = SystemTime::now();
    let fwd = match result {
        Ok(fwd) => fwd,
        Err(e) if within_sie => {
            tracing::warn!(url = %slot.url, error = %e, "origin failed; serving stale (stale-if-error)");
            let status = CacheStatus::new(CacheOutcome::StaleIfError).ttl(entry.policy.ttl_secs(response_time));
            return Ok(from_entry(entry, response_time, status, None));
        }
        Err(e) => return Err(e),
    };
    let code = fwd.response.status();
    if within_sie && is_server_error(code) {
        let status = CacheStatus::new(CacheOutcome::StaleIfError)
            .fwd_status(code.as_u16())
            .ttl(entry.policy.ttl_secs(response_time));
        return Ok(from_entry(entry, response_time, status, Some(fwd.server)));
    }
    let (res_parts, res_body) = fwd.response.into_parts();
    let rules = &ask.route.cache;
    let get = as_get(&ask.req);
    match entry.policy.revalidate(&get, &entry.headers, &res_parts, rules, request_time, response_time) {
        Revalidation::NotModified { policy, headers } => {
            let refreshed = Entry { headers, policy, stored_at: response_time, ..entry.clone() };
            let status =
                CacheStatus::new(confirmed).fwd_status(304).stored().ttl(refreshed.policy.ttl_secs(response_time));
            let served = from_entry(&refreshed, response_time, status, Some(fwd.server));
            if !ask.p.cache.purged_since(epoch, &refreshed.url, &refreshed.tags) {
                ask.p.cache.refresh(slot.key, Stored::Entry(refreshed)).await;
            }
            Ok(served)
        }
        Revalidation::NotModifiedUncacheable { headers, reason } => {
            let once = Entry { headers, ..entry.clone() };
            ask.p.cache.remove(&slot.key).await;
            let status = CacheStatus::new(confirmed).fwd_status(304).detail(reason.as_str());
            Ok(from_entry(&once, response_time, status, Some(fwd.server)))
        }
        Revalidation::Modified if code == StatusCode::NOT_MODIFIED => {
            // A 304 that does not match what we hold: fetch the whole thing.
            drop(res_body);
            Box::pin(fetch(ask, slot, CacheStatus::new(replaced))).await
        }
        Revalidation::Modified => {
            let fwd_response = Response::from_parts(res_parts, res_body);
            let status = CacheStatus::new(replaced).fwd_status(code.as_u16());
            Ok(store(ask, slot, fwd_response, fwd.server, Timing { epoch, request_time, response_time }, status))
        }
    }
}

/// A miss: fetch as GET without the client's conditionals, store if allowed.
/// A HEAD for a URL known to be uncacheable is sent as HEAD: its body could
/// not be stored, so the origin need not send it.
async fn fetch(ask: &Ask, slot: Slot, status: CacheStatus) -> Result<Served, ProxyError> {
    if ask.req.method == Method::HEAD && ask.p.cache.is_pass(&slot.key) {
        let req = upstream_request(&ask.req, Method::HEAD);
        let fwd = forward(&ask.p, &ask.route, &ask.conn, ask.host.as_ref(), req).await?;
        return Ok(Served {
            response: fwd.response,
            upstream: Some(fwd.server),
            status,
            shareable: false,
            storing: None,
        });
    }
    let epoch = ask.p.cache.purge_epoch();
    let request_time = SystemTime::now();
    let mut req = upstream_request(&ask.req, Method::GET);
    if let Some(range) = &ask.range {
        req.headers_mut().insert(header::RANGE, range.clone());
    }
    let fwd = forward(&ask.p, &ask.route, &ask.conn, ask.host.as_ref(), req).await?;
    let response_time = SystemTime::now();
    if ask.range.is_some() && fwd.response.status() != StatusCode::PARTIAL_CONTENT {
        // Not the slice asked for: never stored under the slice's key.
        let response = fwd.response;
        return Ok(Served { response, upstream: Some(fwd.server), status, shareable: false, storing: None });
    }
    Ok(store(ask, slot, fwd.response, fwd.server, Timing { epoch, request_time, response_time }, status))
}

/// What a stored part lacks when it is one piece short of the whole (it
/// starts at 0 or ends at the last byte), and the strong ETag that lets the
/// two be combined (RFC 9111 §3.4); `None` if it cannot be completed so.
fn missing_piece(entry: &Entry) -> Option<(ByteRange, HeaderValue)> {
    let part = cache_policy::content_range(&entry.headers)?;
    let etag = entry.headers.get(header::ETAG).filter(|e| e.as_bytes().starts_with(b"\""))?.clone();
    let (start, end) = match part {
        p if p.start == 0 && p.end + 1 < p.total => (p.end + 1, p.total - 1),
        p if p.start > 0 && p.end + 1 == p.total => (0, p.start - 1),
        _ => return None,
    };
    Some((ByteRange { start, end, total: part.total }, etag))
}

/// Completes a stored part: asks for the piece it lacks, `If-Range` its
/// ETag, and stores part and piece as one full response. An origin that
/// answers with the whole (the object changed, or it ignores ranges) is
/// stored as it is; a piece that does not fit is dropped and the whole fetched.
async fn complete(ask: &Ask, slot: Slot, stored: Arc<Stored>, status: CacheStatus) -> Result<Served, ProxyError> {
    let entry = entry_of(&stored);
    let Some((piece, etag)) = missing_piece(entry) else { return fetch(ask, slot, status).await };
    let mut req = upstream_request(&ask.req, Method::GET);
    if let Ok(range) = HeaderValue::try_from(format!("bytes={}-{}", piece.start, piece.end)) {
        req.headers_mut().insert(header::RANGE, range);
    }
    req.headers_mut().insert(header::IF_RANGE, etag.clone());
    let epoch = ask.p.cache.purge_epoch();
    let request_time = SystemTime::now();
    let fwd = forward(&ask.p, &ask.route, &ask.conn, ask.host.as_ref(), req).await?;
    let times = Timing { epoch, request_time, response_time: SystemTime::now() };
    let (mut parts, body) = fwd.response.into_parts();
    if parts.status != StatusCode::PARTIAL_CONTENT {
        return Ok(store(ask, slot, Response::from_parts(parts, body), fwd.server, times, status));
    }
    let fits = cache_policy::content_range(&parts.headers) == Some(piece)
        && parts.headers.get(header::ETAG) == Some(&etag)
        && crate::http::body::content_length(&parts.headers).is_none_or(|n| n == piece.len());
    if !fits {
        drop(body);
        return Box::pin(fetch(ask, slot, status)).await;
    }
    // The new response's fields describe the whole (RFC 9111 §3.4), its body the piece.
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_RANGE);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(piece.total));
    let body = if piece.start == 0 {
        crate::http::body::chain(body, Body::full(entry.body.clone()))
    } else {
        crate::http::body::chain(Body::full(entry.body.clone()), body)
    };
    Ok(store(ask, slot, Response::from_parts(parts, body), fwd.server, times, status.detail("completed")))
}

/// Decides whether `response` is stored; if so, tees its body into the cache.
fn store(
    ask: &Ask,
    slot: Slot,
    response: Response<Body>,
    server: Arc<str>,
    times: Timing,
    status: CacheStatus,
) -> Served {
    let Timing { epoch, request_time, response_time } = times;
    let (res_parts, body) = response.into_parts();
    let rules = &ask.route.cache;
    let cache = &ask.p.cache;
    let pass = |res_parts, body, status: CacheStatus| Served {
        response: ask.p.buffering.apply(Response::from_parts(res_parts, body)),
        upstream: Some(server.clone()),
        status,
        shareable: false,
        storing: None,
    };
    let policy = match Policy::new(&as_get(&ask.req), &res_parts, rules, request_time, response_time) {
        Ok(policy) => policy,
        Err(reason) => {
            if matches!(status.outcome, CacheOutcome::Expired | CacheOutcome::Request) {
                // The stored response was replaced by one we may not keep.
                let cache = cache.clone();
                tokio::spawn(async move { cache.remove(&slot.key).await });
            }
            return pass(res_parts, body, status.detail(reason.as_str()));
        }
    };
    let expected = crate::http::body::content_length(&res_parts.headers);
    // A part is kept only if its body is exactly the range it claims.
    let part =
        cache_policy::content_range(&res_parts.headers).filter(|_| res_parts.status == StatusCode::PARTIAL_CONTENT);
    if part.is_some_and(|p| expected.is_some_and(|n| n != p.len())) {
        return pass(res_parts, body, status.detail(Bypass::Status.as_str()));
    }
    let limit = cache.max_object_size;
    if expected.is_some_and(|n| n > limit) {
        return pass(res_parts, body, status.detail(Bypass::TooLarge.as_str()));
    }
    // A known length takes its share of the memory for bodies being stored now, or is not stored.
    let reserved = match expected.map(|n| cache.fill_budget.reserve(n)) {
        Some(None) => return pass(res_parts, body, status.detail(Bypass::FillMemory.as_str())),
        Some(r) => r,
        None => None,
    };

    let mut names = cache_policy::vary_names(&res_parts.headers).unwrap_or_default();
    if relais_encodes(&ask.p, &ask.route) {
        // Asked for without it: the one copy serves every Accept-Encoding.
        names.retain(|n| n != header::ACCEPT_ENCODING);
    }
    // The URL's Vary record is stored once, when it is new: a flood of variants
    // rewrites nothing at the primary key.
    let (key, record) = if names.is_empty() {
        (slot.primary.clone(), None)
    } else {
        let (record, new) = match slot.vary {
            Some(v) if v.names == names => (v, false),
            _ => (VaryRecord { names, generation: generation(), url: slot.url.clone() }, true),
        };
        let key = key::variant(&slot.primary, record.generation, &record.names, &ask.req.headers);
        (key, new.then_some(record))
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
    cache.unmark_pass(&slot.key);
    // A body of unknown length may still prove too large: only a known length is claimed stored.
    let status = if expected.is_some() { status.stored() } else { status };
    let status = status.ttl(entry.policy.ttl_secs(response_time));
    let committer = cache.clone();
    let primary = slot.primary;
    let commit = Box::new(move |body: Bytes| {
        if part.is_some_and(|p| p.len() != body.len() as u64) {
            tracing::debug!(url = %entry.url, "a part whose body is not its range; not stored");
            return;
        }
        tokio::spawn(async move {
            if committer.purged_since(epoch, &entry.url, &entry.tags) {
                tracing::debug!(url = %entry.url, "purged while in flight; not stored");
                return;
            }
            let mut values = vec![(key, Stored::Entry(Entry { body, ..entry }))];
            if let Some(record) = record {
                values.push((primary, Stored::Vary(record)));
            }
            committer.put_all(values).await;
        });
    });
    let tee = TeeBody::new(body, expected, limit, (cache.fill_budget.clone(), reserved), commit);
    let storing = Some(tee.storing());
    Served {
        response: Response::from_parts(res_parts, Body::boxed(tee)),
        upstream: Some(server),
        status,
        shareable: true,
        storing,
    }
}

/// A hit, as this client asked for it. On a route relais compresses, the
/// response names the stored body, so compression sends the copy it made once;
/// elsewhere a hit carries nothing extra.
fn hit(p: &Pipeline, route: &Route, parts: &Parts, entry: &Entry, now: SystemTime, status: CacheStatus) -> Served {
    let mut served = from_entry(entry, now, status, None);
    if relais_encodes(p, route) && entry.status == StatusCode::OK && !entry.body.is_empty() {
        let source = crate::compress::Source::new(&entry.url, entry.stored_at, &entry.body);
        served.response.extensions_mut().insert(source);
    }
    client_view(parts, served)
}

/// The full response held in a stored entry, with its Age.
fn from_entry(entry: &Entry, now: SystemTime, status: CacheStatus, upstream: Option<Arc<str>>) -> Served {
    let mut res = Response::new(Body::full(entry.body.clone()));
    *res.headers_mut() = entry.policy.response_headers(&entry.headers, now);
    *res.status_mut() = entry.status;
    Served { response: res, upstream, status, shareable: true, storing: None }
}

/// The request sent upstream from the cache stage: GET (a HEAD is fetched as
/// GET so the answer can be stored), without a body and without the client's
/// conditionals and Range (the full response is stored; each client's part is
/// cut from it).
fn upstream_request(parts: &Parts, method: Method) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    let mut headers = parts.headers.clone();
    for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_RANGE, header::RANGE] {
        headers.remove(h);
    }
    *req.headers_mut() = headers;
    req
}

/// A gRPC call (`application/grpc`, `application/grpc+proto`, …).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether relais compresses this route's responses itself: then the origin is
/// asked for the identity form (no `Accept-Encoding`), one copy is stored
/// whatever the client accepts, and `Vary: Accept-Encoding` is relais's own.
fn relais_encodes(p: &Pipeline, route: &Route) -> bool {
    p.compression.enabled && route.compression
}

/// The request head the origin is asked with, for a stored response.
fn origin_head(p: &Pipeline, route: &Route, mut head: Parts) -> Parts {
    if relais_encodes(p, route) {
        head.headers.remove(header::ACCEPT_ENCODING);
    }
    head
}

/// The request as the GET whose response is stored (policy decisions are about GET).
fn as_get(parts: &Parts) -> Parts {
    let mut p = head_of(parts);
    p.method = Method::GET;
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
            cache.invalidate(&u).await;
        }
    }
}

/// A new Vary generation: unique within this process and unlikely to repeat across restarts.
fn generation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}
