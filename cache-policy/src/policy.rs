//! The policy stored with each cache entry: may the response be stored, how long
//! it stays fresh, how old it is, and how it may be used once stale.
//!
//! A [`Policy`] is computed once per stored (or revalidated) response and holds only
//! numbers and flags: no request headers (so no `Authorization` or `Cookie`) and no
//! copy of the response headers, which the caller stores beside it. Invariants:
//! `ttl(now) <= lifetime()`, `age(now)` never decreases as `now` grows, and a
//! response whose origin forbids stale use (`must-revalidate`, `proxy-revalidate`,
//! `no-cache`) has no stale window of any kind.

use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, Method, request, response};
use http_cache_semantics::{CacheOptions, CachePolicy};
use serde::{Deserialize, Serialize};

use crate::cache_control::CacheControl;
use crate::freshness;
use crate::headers::{age_value, http_date, single_date};
use crate::{Bypass, Rules, vary_names};

/// What a stored response may be used for, decided from its headers, the route's
/// rules and the times it was fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Status of the stored response, reused when a 304 refreshes it.
    status: u16,
    /// When the response headers arrived (RFC 9111 `response_time`).
    response_time: SystemTime,
    /// Age it already had on arrival (RFC 9111 §4.2.3 `corrected_initial_age`).
    initial_age: Duration,
    /// Freshness lifetime, rules applied.
    lifetime: Duration,
    /// Response `no-cache` (or `Pragma: no-cache`): validate before every use.
    no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate` or `no-cache`: never serve stale.
    no_stale: bool,
    /// Effective stale-while-revalidate window (response, else rule).
    swr: Duration,
    /// The response's own `stale-if-error`.
    sie_response: Option<Duration>,
    /// The route's `stale-if-error` when the policy was made.
    sie_rule: Option<Duration>,
    /// The response has an `ETag` or a `Last-Modified`.
    validator: bool,
}

/// How a stored response may be used for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it (fresh, or stale within the request's `max-stale`).
    Fresh,
    /// Stale. Within the stale-while-revalidate window it may be served while a
    /// background revalidation runs; within the stale-if-error window it may be
    /// served if revalidation fails (connection error or 5xx). Otherwise revalidate
    /// first.
    Stale { within_swr: bool, within_sie: bool },
    /// Revalidate before use, and never fall back to it: the response says
    /// `no-cache`, or it is stale and the request's `no-cache`, `max-age` or
    /// `min-fresh` rules out serving it stale.
    MustRevalidate,
    /// Fresh, but the request's `no-cache`, `max-age` or `min-fresh` demands the
    /// origin (RFC 9211 `fwd=request`); revalidate, never fall back to it.
    RequestRevalidates,
}

impl Policy {
    /// Decides whether a response may be stored, and with what lifetime.
    ///
    /// `req` is the canonical request (absolute URI, `Host`), `request_time` when it
    /// was sent upstream and `response_time` when the response headers arrived. Only
    /// GET responses are stored (HEAD is served from GET).
    pub fn new(
        req: &request::Parts,
        res: &response::Parts,
        rules: &Rules,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Result<Policy, Bypass> {
        // A targeted field (RFC 9213) replaces Cache-Control and Expires for relais.
        let targeted_view;
        let (cc, res, targeted) = match CacheControl::targeted(&res.headers, &rules.targeted) {
            Some(cc) => {
                let (mut view, ()) = http::Response::new(()).into_parts();
                view.status = res.status;
                view.version = res.version;
                view.headers = res.headers.clone();
                view.headers.remove(EXPIRES);
                targeted_view = view;
                (cc, &targeted_view, true)
            }
            None => (CacheControl::parse(&res.headers), res, false),
        };
        check_storable(req, res, &cc, rules)?;
        // http-cache-semantics knows neither `must-understand`, targeted fields,
        // nor the statuses stored only for their explicit freshness.
        let cross_check = freshness::cross_checked(res.status.as_u16()) && !cc.has("must-understand") && !targeted;
        if cross_check && !shared_cache_agrees(req, res, response_time) {
            return Err(Bypass::NotStorable);
        }

        // A Date that is missing or invalid is taken as the arrival time (RFC 9110 §6.6.1).
        let date = single_date(&res.headers, DATE).unwrap_or(response_time);
        let apparent_age = response_time.duration_since(date).unwrap_or_default();
        let response_delay = response_time.duration_since(request_time).unwrap_or_default();
        let corrected_age = age_value(&res.headers).saturating_add(response_delay);

        let overridden = rules.override_ttl.is_some();
        let no_cache = !overridden && cc.has("no-cache");
        // A stored error (5xx) is never served stale: not instead of a new
        // error, nor while it is revalidated.
        let no_stale =
            no_cache || cc.has("must-revalidate") || cc.has("proxy-revalidate") || res.status.is_server_error();
        let policy = Policy {
            status: res.status.as_u16(),
            response_time,
            initial_age: apparent_age.max(corrected_age),
            lifetime: freshness::lifetime(&cc, &res.headers, rules, date),
            no_cache,
            no_stale,
            swr: if no_stale {
                Duration::ZERO
            } else {
                cc.seconds("stale-while-revalidate").or(rules.stale_while_revalidate).unwrap_or_default()
            },
            sie_response: cc.seconds("stale-if-error"),
            sie_rule: rules.stale_if_error,
            validator: res.headers.contains_key(ETAG) || res.headers.contains_key(LAST_MODIFIED),
        };
        let reusable = !policy.lifetime.is_zero()
            || policy.validator
            || !policy.swr.is_zero()
            || policy.stored_sie().is_some_and(|w| !w.is_zero());
        if !reusable {
            return Err(Bypass::ZeroTtl);
        }
        Ok(policy)
    }

    /// Keeps it fresh at most `max`, and never stale (a short-lived copy of what another cache owns).
    pub fn cap_lifetime(&mut self, max: Duration) {
        self.lifetime = self.lifetime.min(max);
        self.swr = Duration::ZERO;
        self.no_stale = true;
    }

    /// Makes the entry stale as of `now` (a soft purge): it is revalidated on its
    /// next use, and its stale windows count from `now`.
    pub fn expire(&mut self, now: SystemTime) {
        self.lifetime = self.lifetime.min(self.age(now));
    }

    /// Current age (RFC 9111 §4.2.3): the age on arrival plus the time spent here.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age.saturating_add(now.duration_since(self.response_time).unwrap_or_default())
    }

    /// Freshness lifetime, rules applied.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Remaining freshness: `lifetime - age`, zero once stale.
    pub fn ttl(&self, now: SystemTime) -> Duration {
        self.lifetime.saturating_sub(self.age(now))
    }

    /// Remaining freshness in whole seconds, negative once stale: the `ttl`
    /// parameter of `Cache-Status` (RFC 9211 §2.5).
    pub fn ttl_secs(&self, now: SystemTime) -> i64 {
        let age = self.age(now);
        if age <= self.lifetime { secs_i64(self.lifetime - age) } else { -secs_i64(age - self.lifetime) }
    }

    /// Whether the stored response has a validator (`ETag` or `Last-Modified`).
    pub fn has_validator(&self) -> bool {
        self.validator
    }

    /// Effective stale-while-revalidate window: the response's directive, else the
    /// route's; zero if the response forbids stale use.
    pub fn stale_while_revalidate(&self) -> Duration {
        self.swr
    }

    /// Effective stale-if-error window for this request: the response's directive,
    /// else the request's `stale-if-error=N` (RFC 5861 §4), else the route's; zero if
    /// the response forbids stale use.
    pub fn stale_if_error(&self, req: &request::Parts) -> Duration {
        if self.no_stale {
            return Duration::ZERO;
        }
        self.sie_response
            .or_else(|| CacheControl::parse(&req.headers).seconds("stale-if-error"))
            .or(self.sie_rule)
            .unwrap_or_default()
    }

    /// How long the entry stays useful without a validator: the remaining freshness
    /// plus the longest stale window. A sensible minimum for the store's expiry.
    pub fn usable_for(&self, now: SystemTime) -> Duration {
        let window = self.swr.max(self.stored_sie().unwrap_or_default());
        self.lifetime.saturating_add(window).saturating_sub(self.age(now))
    }

    /// How the stored response may be used for `req` at `now`, applying the request's
    /// `no-cache` (and `Pragma: no-cache`), `max-age`, `min-fresh` and `max-stale`.
    pub fn evaluate(&self, req: &request::Parts, now: SystemTime) -> Freshness {
        let req_cc = CacheControl::parse(&req.headers);
        if self.no_cache {
            return Freshness::MustRevalidate;
        }
        let age = self.age(now);
        let ttl = self.ttl(now);
        let request_refuses = req_cc.has("no-cache")
            || req_cc.seconds("max-age").is_some_and(|max| age > max)
            || req_cc.seconds("min-fresh").is_some_and(|min| ttl < min);
        if request_refuses {
            return if age < self.lifetime { Freshness::RequestRevalidates } else { Freshness::MustRevalidate };
        }
        if age < self.lifetime {
            return Freshness::Fresh;
        }
        let staleness = age - self.lifetime;
        if !self.no_stale {
            match req_cc.arg("max-stale") {
                Some(None) => return Freshness::Fresh,
                Some(Some(_)) if req_cc.seconds("max-stale").is_some_and(|m| staleness <= m) => {
                    return Freshness::Fresh;
                }
                _ => {}
            }
        }
        Freshness::Stale { within_swr: staleness < self.swr, within_sie: staleness < self.stale_if_error(req) }
    }

    /// Headers for a response served from the cache: the stored ones with `Age` set
    /// to [`Policy::age`] in seconds. A stored `Date` is kept as is; if there is none,
    /// the arrival time is written as an IMF-fixdate.
    pub fn response_headers(&self, stored: &HeaderMap, now: SystemTime) -> HeaderMap {
        let mut headers = stored.clone();
        let age = self.age(now).as_secs().min(1 << 31);
        headers.insert(http::header::AGE, HeaderValue::from(age));
        if !headers.contains_key(DATE)
            && let Some(date) = http_date(self.response_time)
        {
            headers.insert(DATE, date);
        }
        headers
    }

    /// The stale-if-error window known without a request.
    fn stored_sie(&self) -> Option<Duration> {
        if self.no_stale { None } else { self.sie_response.or(self.sie_rule) }
    }

    /// Status of the stored response.
    pub(crate) fn status(&self) -> u16 {
        self.status
    }
}

/// RFC 9111 §3 in shared-cache mode, plus the route's and relais' own refusals,
/// in an order that names the most specific reason.
fn check_storable(req: &request::Parts, res: &response::Parts, cc: &CacheControl, rules: &Rules) -> Result<(), Bypass> {
    if rules.bypass {
        return Err(Bypass::Route);
    }
    if req.method != Method::GET {
        return Err(Bypass::Method);
    }
    if CacheControl::parse(&req.headers).has("no-store") {
        return Err(Bypass::RequestNoStore);
    }
    let must_understand = cc.has("must-understand");
    if !freshness::status_storable(res.status, freshness::has_explicit(cc, &res.headers), must_understand) {
        return Err(Bypass::Status);
    }
    // A part is only of use with its place in a whole of known length.
    if res.status == http::StatusCode::PARTIAL_CONTENT && crate::range::content_range(&res.headers).is_none() {
        return Err(Bypass::Status);
    }
    // With `must-understand` and a status relais understands, `no-store` is
    // there for caches that do not (RFC 9111 §5.2.2.3).
    if cc.has("no-store") && !must_understand {
        return Err(Bypass::NoStore);
    }
    // A qualified `private="field"` is treated as unqualified: safe, and rare.
    if cc.has("private") {
        return Err(Bypass::Private);
    }
    // RFC 9111 §3.5: these directives let a shared cache store an authenticated response.
    let shareable = cc.has("public") || cc.has("s-maxage") || cc.has("must-revalidate");
    if req.headers.contains_key(AUTHORIZATION) && !shareable {
        return Err(Bypass::Authorization);
    }
    if crate::headers::sets_cookie(&res.headers) && !rules.store_set_cookie {
        return Err(Bypass::SetCookie);
    }
    vary_names(&res.headers)?;
    Ok(())
}

/// Cross-check with http-cache-semantics in shared mode. The policy it builds holds
/// every request header, so it lives only for this call and is never stored.
fn shared_cache_agrees(req: &request::Parts, res: &response::Parts, now: SystemTime) -> bool {
    let options = CacheOptions { shared: true, ..CacheOptions::default() };
    CachePolicy::new_options(req, res, now, options).is_storable()
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
