//! Asking the origin for a [`Miss`]: a plain fetch, a revalidation of a
//! stale entry, or the completion of a stored part; and what each answer
//! means for the store.
//!
//! Revalidation sends the stored validators (If-None-Match /
//! If-Modified-Since): a 304 refreshes the entry's headers and freshness (and
//! is served from it), a 304 that may not be kept is served once and the entry
//! removed, a new response replaces it, and a failure within stale-if-error
//! serves it stale. A part one piece short of the whole is completed with a
//! range request `If-Range` its strong ETag, and stored whole.
//!
//! What is asked is the full GET, without the client's conditionals and
//! Range: each client's 304 or range is cut from it afterwards. A client's
//! HEAD that the cache cannot answer is asked as HEAD ([`HttpCache::head`]),
//! and its answer freshens the stored GET response it describes.

use std::sync::Arc;
use std::time::SystemTime;

use cache_policy::{CacheOutcome, CacheStatus, Revalidation};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};

use super::origin::{Answer, Origin};
use super::phase::{HttpCache, Miss, Slot, entry_of, from_entry};
use super::ticket::{Fetched, Ticket};
use super::{Cache, Entry, Stored};
use crate::http::body::Body;

/// Asks the origin for `miss`: a revalidation if an entry is held, a
/// completion if it is a part, else a plain fetch.
pub(super) async fn ask<O: Origin>(
    cache: &Arc<Cache>,
    origin: &O,
    head: &Parts,
    miss: Miss,
) -> Result<Fetched, O::Error> {
    let Miss { slot, found, within_sie, by_request, status, range, .. } = miss;
    match found {
        Some(stored) if entry_of(&stored).status == StatusCode::PARTIAL_CONTENT => {
            complete(cache, origin, head, slot, stored, status).await
        }
        Some(stored) => revalidate(cache, origin, head, slot, stored, (within_sie, by_request)).await,
        None => fetch(cache, origin, head, slot, range, status).await,
    }
}

/// A stale entry: ask the origin whether it still holds.
async fn revalidate<O: Origin>(
    cache: &Arc<Cache>,
    origin: &O,
    head: &Parts,
    slot: Slot,
    stored: Arc<Stored>,
    (within_sie, by_request): (bool, bool),
) -> Result<Fetched, O::Error> {
    let entry = entry_of(&stored);
    // RFC 9211: a fresh entry the request would not take is `fwd=request`, a stale one `fwd=stale`.
    let (confirmed, replaced) = match by_request {
        true => (CacheOutcome::Request, CacheOutcome::Request),
        false => (CacheOutcome::Revalidated, CacheOutcome::Expired),
    };
    let mut upstream = upstream_request(head, Method::GET);
    upstream.headers_mut().extend(entry.policy.revalidation_headers(&entry.headers));
    let ticket = Ticket::new(cache, slot);
    let result = origin.fetch(upstream).await;
    let response_time = SystemTime::now();
    let fwd = match result {
        Ok(fwd) => fwd,
        Err(e) if within_sie => {
            tracing::warn!(url = %ticket.url(), error = %e, "origin failed; serving stale (stale-if-error)");
            let status = CacheStatus::new(CacheOutcome::StaleIfError).ttl(entry.policy.ttl_secs(response_time));
            return Ok(Fetched::entry(from_entry(entry, response_time, status, None)));
        }
        Err(e) => return Err(e),
    };
    let code = fwd.response.status();
    if within_sie && is_server_error(code) {
        let status = CacheStatus::new(CacheOutcome::StaleIfError)
            .fwd_status(code.as_u16())
            .ttl(entry.policy.ttl_secs(response_time));
        return Ok(Fetched::entry(from_entry(entry, response_time, status, fwd.upstream)));
    }
    if code == StatusCode::TOO_EARLY {
        // Too early (0-RTT) says nothing of the entry, which stays as it is.
        let status = CacheStatus::new(replaced).fwd_status(code.as_u16());
        return Ok(Fetched::passed(fwd, status));
    }
    let (res_parts, res_body) = fwd.response.into_parts();
    let rules = origin.rules();
    match entry.policy.revalidate(head, &entry.headers, &res_parts, rules, ticket.request_time, response_time) {
        Revalidation::NotModified { policy, headers } => {
            let refreshed = Entry { headers, policy, stored_at: response_time, ..entry.clone() };
            let status =
                CacheStatus::new(confirmed).fwd_status(304).stored().ttl(refreshed.policy.ttl_secs(response_time));
            let served = from_entry(&refreshed, response_time, status, fwd.upstream);
            ticket.refresh(cache, refreshed).await;
            Ok(Fetched::entry(served))
        }
        Revalidation::NotModifiedUncacheable { headers, reason } => {
            let once = Entry { headers, ..entry.clone() };
            cache.remove(ticket.key()).await;
            let status = CacheStatus::new(confirmed).fwd_status(304).detail(reason.as_str());
            Ok(Fetched::entry(from_entry(&once, response_time, status, fwd.upstream)))
        }
        Revalidation::Modified if code == StatusCode::NOT_MODIFIED => {
            // A 304 that does not match what we hold: fetch the whole thing.
            drop(res_body);
            let slot = ticket.into_slot();
            Box::pin(fetch(cache, origin, head, slot, None, CacheStatus::new(replaced))).await
        }
        Revalidation::Modified => {
            let answer = Answer { response: Response::from_parts(res_parts, res_body), ..fwd };
            let status = CacheStatus::new(replaced).fwd_status(code.as_u16());
            Ok(ticket.store(cache, origin, head, answer, response_time, status))
        }
    }
}

impl HttpCache<'_> {
    /// A client's HEAD on a stale, missing or partial entry: sent upstream as
    /// HEAD, never as a GET that brings the body, and alone (a HEAD neither
    /// leads nor waits for the key's fill). A stale entry's validators go with
    /// it; an answer that describes the entry (a 304, or a 200 whose validators
    /// and length agree, RFC 9111 §4.3.5) freshens its headers and the client
    /// is answered from it. Any other 200 means the stored response is not the
    /// origin's any more: it is removed. Within stale-if-error, a failure
    /// serves the entry stale, as a revalidation would.
    pub(crate) async fn head<O: Origin>(&self, miss: Miss, origin: O, head: &Parts) -> Result<Answer, O::Error> {
        let cache = self.cache;
        let Miss { slot, found, within_sie, status, .. } = miss;
        let mut upstream = upstream_request(head, Method::HEAD);
        let held = found.filter(|s| entry_of(s).status != StatusCode::PARTIAL_CONTENT);
        let Some(stored) = held else {
            let answer = origin.fetch(upstream).await?;
            return Ok(Answer { cache: Some(status.fwd_status(answer.response.status().as_u16())), ..answer });
        };
        let entry = entry_of(&stored);
        upstream.headers_mut().extend(entry.policy.revalidation_headers(&entry.headers));
        let ticket = Ticket::new(cache, slot);
        let result = origin.fetch(upstream).await;
        let response_time = SystemTime::now();
        let fwd = match result {
            Ok(fwd) if !(within_sie && is_server_error(fwd.response.status())) => fwd,
            other => {
                let code = other.as_ref().map(|f| f.response.status().as_u16()).ok();
                if !within_sie {
                    return other;
                }
                let mut status = CacheStatus::new(CacheOutcome::StaleIfError).ttl(entry.policy.ttl_secs(response_time));
                if let Some(code) = code {
                    status = status.fwd_status(code);
                }
                let upstream = other.ok().and_then(|f| f.upstream);
                return Ok(from_entry(entry, response_time, status, upstream));
            }
        };
        let (parts, _no_body) = fwd.response.into_parts();
        let code = parts.status.as_u16();
        let len = entry.body.len() as u64;
        let (request_time, rules) = (ticket.request_time, origin.rules());
        match entry.policy.update_from_head(head, &entry.headers, len, &parts, rules, request_time, response_time) {
            Revalidation::NotModified { policy, headers } => {
                let refreshed = Entry { headers, policy, stored_at: response_time, ..entry.clone() };
                let ttl = refreshed.policy.ttl_secs(response_time);
                let status = CacheStatus::new(CacheOutcome::Revalidated).fwd_status(code).stored().ttl(ttl);
                let served = from_entry(&refreshed, response_time, status, fwd.upstream);
                ticket.refresh(cache, refreshed).await;
                Ok(served)
            }
            Revalidation::NotModifiedUncacheable { headers, reason } => {
                cache.remove(ticket.key()).await;
                let status = CacheStatus::new(CacheOutcome::Revalidated).fwd_status(code).detail(reason.as_str());
                Ok(from_entry(&Entry { headers, ..entry.clone() }, response_time, status, fwd.upstream))
            }
            Revalidation::Modified if code == 304 => {
                // A 304 for another version: ask again, without our validators.
                let answer = origin.fetch(upstream_request(head, Method::HEAD)).await?;
                let status = CacheStatus::new(CacheOutcome::Expired).fwd_status(answer.response.status().as_u16());
                Ok(Answer { cache: Some(status), ..answer })
            }
            Revalidation::Modified => {
                if code == 200 {
                    cache.remove(ticket.key()).await;
                }
                let response = Response::from_parts(parts, Body::empty());
                let status = CacheStatus::new(CacheOutcome::Expired).fwd_status(code);
                Ok(Answer { response, upstream: fwd.upstream, cache: Some(status) })
            }
        }
    }
}

/// A miss: fetch as GET without the client's conditionals, store if allowed.
async fn fetch<O: Origin>(
    cache: &Arc<Cache>,
    origin: &O,
    head: &Parts,
    slot: Slot,
    range: Option<HeaderValue>,
    status: CacheStatus,
) -> Result<Fetched, O::Error> {
    let mut req = upstream_request(head, Method::GET);
    let sliced = range.is_some();
    if let Some(range) = range {
        req.headers_mut().insert(header::RANGE, range);
    }
    let ticket = Ticket::new(cache, slot);
    let answer = origin.fetch(req).await?;
    let response_time = SystemTime::now();
    if sliced && answer.response.status() != StatusCode::PARTIAL_CONTENT {
        // Not the slice asked for: never stored under the slice's key.
        return Ok(Fetched::passed(answer, status));
    }
    Ok(ticket.store(cache, origin, head, answer, response_time, status))
}

/// Completes a stored part: asks for the piece it lacks, `If-Range` its
/// ETag, and stores part and piece as one full response. An origin that
/// answers with the whole (the object changed, or it ignores ranges) is
/// stored as it is; a piece that does not fit is dropped and the whole fetched.
async fn complete<O: Origin>(
    cache: &Arc<Cache>,
    origin: &O,
    head: &Parts,
    slot: Slot,
    stored: Arc<Stored>,
    status: CacheStatus,
) -> Result<Fetched, O::Error> {
    let entry = entry_of(&stored);
    let Some((piece, etag)) = entry.missing_piece() else {
        return fetch(cache, origin, head, slot, None, status).await;
    };
    let mut req = upstream_request(head, Method::GET);
    if let Ok(range) = HeaderValue::try_from(format!("bytes={}-{}", piece.start, piece.end)) {
        req.headers_mut().insert(header::RANGE, range);
    }
    req.headers_mut().insert(header::IF_RANGE, etag.clone());
    let ticket = Ticket::new(cache, slot);
    let fwd = origin.fetch(req).await?;
    let response_time = SystemTime::now();
    let (mut parts, body) = fwd.response.into_parts();
    if parts.status != StatusCode::PARTIAL_CONTENT {
        let answer = Answer { response: Response::from_parts(parts, body), ..fwd };
        return Ok(ticket.store(cache, origin, head, answer, response_time, status));
    }
    let fits = cache_policy::content_range(&parts.headers) == Some(piece)
        && parts.headers.get(header::ETAG) == Some(&etag)
        && crate::http::body::content_length(&parts.headers).is_none_or(|n| n == piece.len());
    if !fits {
        drop(body);
        return Box::pin(fetch(cache, origin, head, ticket.into_slot(), None, status)).await;
    }
    // The new response's fields describe the whole (RFC 9111 §3.4), its body the piece.
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_RANGE);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(piece.total));
    let body = if piece.start == 0 {
        crate::http::body::chain(body, entry.send_body())
    } else {
        crate::http::body::chain(entry.send_body(), body)
    };
    let answer = Answer { response: Response::from_parts(parts, body), ..fwd };
    Ok(ticket.store(cache, origin, head, answer, response_time, status.detail("completed")))
}

/// The request sent upstream for the cache: `method` (GET, so the answer can
/// be stored), without a body and without the client's conditionals and
/// Range (the full response is stored; each client's part is cut from it).
/// The one copy of the request's headers a fetch makes.
pub(crate) fn upstream_request(head: &Parts, method: Method) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    let mut headers = head.headers.clone();
    for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_RANGE, header::RANGE] {
        headers.remove(h);
    }
    *req.headers_mut() = headers;
    req
}

fn is_server_error(code: StatusCode) -> bool {
    matches!(code.as_u16(), 500 | 502 | 503 | 504)
}
