//! The HTTP cache's face to the proxy: [`HttpCache::lookup`] says what to do
//! with a request, as a [`Phase`].
//!
//! What the cache never takes is decided first, without a lookup:
//! [`HttpCache::admit`] names the [`Bypass`] reason. GET and HEAD are looked
//! up (HEAD from the GET entry), at the URL's primary key, then at the variant
//! its Vary record selects. A fresh entry (or a stored
//! part covering the range asked) is a hit; a stale one within its
//! stale-while-revalidate window is served while one background revalidation
//! runs; a HEAD goes to the origin as HEAD ([`HttpCache::head`]); anything
//! else goes to the origin through the key's shared fill
//! ([`super::collapse`]), carrying a [`Miss`]: what is stored there, whether
//! it may stand in for an error, and the `Cache-Status` it starts from.

use std::sync::Arc;
use std::time::SystemTime;

use cache_policy::{Bypass, CacheOutcome, CacheStatus, Freshness, Rules};
use http::header::HeaderValue;
use http::request::Parts;
use http::{Method, Request, StatusCode};

use super::origin::Answer;
use super::{Cache, Entry, Stored, VaryRecord, key};

/// The HTTP semantics over the two-tier [`Cache`]: lookups, fills, what is
/// stored. A view for one request, free to make.
#[derive(Clone, Copy)]
pub(crate) struct HttpCache<'a> {
    pub(super) cache: &'a Arc<Cache>,
}

/// What a lookup found, and so what the proxy does next.
pub(crate) enum Phase {
    /// A fresh stored response, or a stored part covering the range asked: serve it.
    Fresh(Hit),
    /// Stale within stale-while-revalidate: serve it, and revalidate it once in
    /// the background ([`HttpCache::revalidate_behind`]).
    StaleWhileRevalidate(Hit, Miss),
    /// Stale, or fresh but refused by the request's own directives: revalidate.
    /// Within stale-if-error, the `Miss` keeps it to answer if the origin fails.
    Stale(Miss),
    /// A stored part one piece short of the whole: complete it from the origin.
    Part(Miss),
    /// Nothing usable stored: fetch, leading the key's fill or waiting for it.
    Miss(Miss),
}

/// A stored response to serve.
pub(crate) struct Hit {
    stored: Arc<Stored>,
    pub status: CacheStatus,
    /// The clock it was judged by, and its Age is counted to.
    pub now: SystemTime,
}

impl Hit {
    pub(crate) fn entry(&self) -> &Entry {
        entry_of(&self.stored)
    }

    /// The full stored response, with its Age.
    pub(crate) fn into_answer(self) -> Answer {
        from_entry(entry_of(&self.stored), self.now, self.status, None)
    }
}

/// Where a request's response lives or would live.
#[derive(Clone)]
pub(super) struct Slot {
    pub(super) primary: String,
    /// The key the response is (or will be) stored under.
    pub(super) key: String,
    /// The URL's Vary record, if it has one.
    pub(super) vary: Option<VaryRecord>,
    pub(super) url: String,
}

/// What one origin fetch is for: where its answer goes, the entry it
/// revalidates or completes (if any), whether that entry may stand in for an
/// error, and the Cache-Status it starts from.
pub(crate) struct Miss {
    pub(super) slot: Slot,
    pub(super) found: Option<Arc<Stored>>,
    pub(super) within_sie: bool,
    /// `found` is fresh, but the request asked for the origin (`fwd=request`).
    pub(super) by_request: bool,
    pub(super) status: CacheStatus,
    /// The range asked of the origin (a slice), instead of the whole.
    pub(super) range: Option<HeaderValue>,
}

impl Miss {
    /// Asks the origin for this range (a slice) instead of the whole.
    pub(crate) fn with_range(self, range: Option<HeaderValue>) -> Miss {
        Miss { range, ..self }
    }
}

/// What the proxy knows of a request beyond its head.
#[derive(Clone, Copy)]
pub(crate) struct Asked<'a> {
    pub rules: &'a Rules,
    /// It carries a body (a GET or HEAD with one: the body may select the answer).
    pub with_body: bool,
    /// It asks to switch protocols.
    pub upgrade: bool,
}

impl<'a> HttpCache<'a> {
    pub(crate) fn new(cache: &'a Arc<Cache>) -> HttpCache<'a> {
        HttpCache { cache }
    }

    /// Whether the cache takes `req` at all; if not, why (the one verdict for
    /// every request the cache never sees).
    pub(crate) fn admit(&self, req: &Parts, asked: Asked<'_>) -> Result<(), Bypass> {
        match cache_policy::lookup_allowed(req, asked.rules) {
            Ok(()) if asked.with_body => Err(Bypass::RequestBody),
            Ok(()) if asked.upgrade => Err(Bypass::Upgrade),
            other => other,
        }
    }

    /// Looks up `req`, admitted, whose key ([`key::shape`]) is `keyed`.
    pub(crate) async fn lookup(&self, req: &Parts, keyed: key::Keyed) -> Phase {
        let (slot, found, outcome) = self.find(keyed, &req.headers).await;
        let now = SystemTime::now();
        let miss =
            |found, within_sie, by_request, status| Miss { slot, found, within_sie, by_request, status, range: None };
        let Some(stored) = found else { return Phase::Miss(miss(None, false, false, CacheStatus::new(outcome))) };
        let entry = entry_of(&stored);
        let status = CacheStatus::new(outcome);
        if entry.status == StatusCode::PARTIAL_CONTENT {
            // A stored part: a hit for the ranges it covers; otherwise completed
            // from the origin when it can be, or fetched whole.
            let fresh = entry.policy.evaluate(req, now) == Freshness::Fresh;
            if fresh && cache_policy::part_covers(&req.method, &req.headers, &entry.headers) {
                let status = CacheStatus::new(CacheOutcome::Hit).ttl(entry.policy.ttl_secs(now));
                return Phase::Fresh(Hit { stored, status, now });
            }
            // RFC 9211: a stale part is `fwd=stale`, a fresh one the request goes past `fwd=partial`.
            let status = CacheStatus::new(if fresh { CacheOutcome::Partial } else { CacheOutcome::Expired });
            if !fresh || entry.missing_piece().is_none() {
                return Phase::Miss(miss(None, false, false, status));
            }
            return Phase::Part(miss(Some(stored), false, false, status));
        }
        match entry.policy.evaluate(req, now) {
            Freshness::Fresh => {
                let status = CacheStatus::new(CacheOutcome::Hit).ttl(entry.policy.ttl_secs(now));
                Phase::Fresh(Hit { stored, status, now })
            }
            Freshness::Stale { within_swr: true, .. } => {
                let status = CacheStatus::new(CacheOutcome::Stale).ttl(entry.policy.ttl_secs(now));
                let hit = Hit { stored: stored.clone(), status, now };
                let behind = CacheStatus::new(CacheOutcome::Stale);
                Phase::StaleWhileRevalidate(hit, miss(Some(stored), false, false, behind))
            }
            Freshness::Stale { within_sie, .. } => Phase::Stale(miss(Some(stored), within_sie, false, status)),
            Freshness::MustRevalidate => Phase::Stale(miss(Some(stored), false, false, status)),
            Freshness::RequestRevalidates => Phase::Stale(miss(Some(stored), false, true, status)),
        }
    }

    /// Looks up the slice at `start` of what `keyed` names, for `head`, the
    /// request as the fill asks it. A stale slice is fetched again, not
    /// revalidated: a conditional GET would bring the whole file.
    pub(crate) async fn lookup_slice(&self, keyed: &key::Keyed, start: u64, head: &Parts) -> Phase {
        let slice = key::Keyed { url: keyed.url.clone(), parts: format!("{}#slice={start}", keyed.parts) };
        let (slot, found, outcome) = self.find(slice, &head.headers).await;
        let now = SystemTime::now();
        if let Some(stored) = found
            && entry_of(&stored).policy.evaluate(head, now) == Freshness::Fresh
        {
            let status = CacheStatus::new(CacheOutcome::Hit).ttl(entry_of(&stored).policy.ttl_secs(now));
            return Phase::Fresh(Hit { stored, status, now });
        }
        let status = CacheStatus::new(outcome);
        Phase::Miss(Miss { slot, found: None, within_sie: false, by_request: false, status, range: None })
    }

    /// The entry for a request: the primary key, then the variant its Vary record selects.
    async fn find(&self, keyed: key::Keyed, request: &http::HeaderMap) -> (Slot, Option<Arc<Stored>>, CacheOutcome) {
        let primary = keyed.primary();
        let url = keyed.url;
        let found = self.cache.get(&primary).await;
        match found.as_deref() {
            Some(Stored::Entry(_)) => {
                (Slot { key: primary.clone(), primary, vary: None, url }, found, CacheOutcome::Hit)
            }
            Some(Stored::Vary(v)) => {
                let key = key::variant(&primary, v.generation, &v.names, request);
                let variant = self.cache.get(&key).await.filter(|s| matches!(**s, Stored::Entry(_)));
                let slot = Slot { primary, key, vary: Some(v.clone()), url };
                (slot, variant, CacheOutcome::VaryMiss)
            }
            None => (Slot { key: primary.clone(), primary, vary: None, url }, None, CacheOutcome::UriMiss),
        }
    }
}

/// The request head a fill asks with, made from the client's own (moved, not
/// copied): as GET, whose response is stored (HEAD is served from it), without
/// extensions.
pub(crate) fn fill_head(mut parts: Parts) -> Arc<Parts> {
    parts.method = Method::GET;
    parts.extensions = http::Extensions::new();
    Arc::new(parts)
}

/// [`fill_head`] of a request head still in use: its one copy.
pub(crate) fn fill_head_of(parts: &Parts) -> Arc<Parts> {
    let (mut p, ()) = Request::new(()).into_parts();
    p.method = Method::GET;
    p.uri = parts.uri.clone();
    p.version = parts.version;
    p.headers = parts.headers.clone();
    Arc::new(p)
}

pub(super) fn entry_of(stored: &Stored) -> &Entry {
    match stored {
        Stored::Entry(e) => e,
        Stored::Vary(_) => unreachable!("lookups return entries only"),
    }
}

/// The full response held in a stored entry, with its Age.
pub(super) fn from_entry(entry: &Entry, now: SystemTime, status: CacheStatus, upstream: Option<Arc<str>>) -> Answer {
    let mut res = http::Response::new(entry.send_body());
    *res.headers_mut() = entry.policy.response_headers(&entry.headers, now);
    if let Some(file) = &entry.file {
        // Its length, which a body read as it goes does not tell; and the file,
        // so that a range of it is read from where it starts (`present`).
        res.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(file.len()));
        res.extensions_mut().insert(file.clone());
    }
    *res.status_mut() = entry.status;
    Answer { response: res, upstream, cache: Some(status) }
}
