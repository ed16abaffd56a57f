//! Rate and concurrency limits per key, with nginx's semantics.
//!
//! A `[[limit_req]]` zone keeps, per key, a GCRA bucket (governor) that
//! admits `burst + 1` requests at once and one more every `1/rate`: a request
//! it refuses gets the zone's status and `Retry-After`. An admitted request
//! beyond the rate waits its turn in a second bucket of `delay + 1` (nginx's
//! `delay`; `nodelay` means no wait at all), so excess goes out at the rate.
//! A zone holds at most `max_keys` keys (quick_cache, whose hit is one
//! atomic bit), each at most 32 bytes (a longer one is its digest): past it
//! the coldest go first, and a forgotten key starts again with a full
//! bucket. An empty key (a header the request does not carry) is not
//! limited, as in nginx.
//!
//! A `[[limit_conn]]` zone counts requests in progress per key; a
//! [`ConnPermit`] gives its place back when the response has been sent. When
//! a zone already holds `max_keys` keys, a request with a new key is refused,
//! as nginx does when a zone is full.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::RandomState;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::StatusCode;
use quick_cache::UnitWeighter;
use quick_cache::sync::DefaultLifecycle;

use super::{Rejection, Subject};
use crate::config::{KeyPart, LimitConnConfig, LimitKey, LimitReqConfig};
use crate::metrics::{Metrics, Reason};

/// A `[[limit_req]]` zone.
pub(crate) struct ReqZone {
    pub config: LimitReqConfig,
    admit: Quota,
    pace: Option<Quota>,
    clock: DefaultClock,
    /// SipHash, not quick_cache's faster default: the keys are the clients' to choose.
    keys: quick_cache::sync::Cache<Vec<u8>, Arc<Buckets>, UnitWeighter, RandomState>,
    status: StatusCode,
}

struct Buckets {
    admit: DefaultDirectRateLimiter,
    pace: Option<DefaultDirectRateLimiter>,
}

impl ReqZone {
    pub(crate) fn new(config: &LimitReqConfig) -> ReqZone {
        let period = config.rate.per / config.rate.requests;
        let period = period.max(Duration::from_nanos(1));
        let quota = |burst: u32| {
            let cells = NonZeroU32::new(burst.saturating_add(1)).unwrap_or(NonZeroU32::MIN);
            Quota::with_period(period).expect("a period of at least 1ns").allow_burst(cells)
        };
        let admit = quota(config.burst);
        let pace = (!config.nodelay).then(|| quota(config.delay));
        let max = usize::try_from(config.max_keys).unwrap_or(usize::MAX);
        let keys = quick_cache::sync::Cache::with(
            max,
            config.max_keys,
            UnitWeighter,
            RandomState::new(),
            DefaultLifecycle::default(),
        );
        let status = config.status.0;
        ReqZone { config: config.clone(), admit, pace, clock: DefaultClock::default(), keys, status }
    }

    /// Admits the request now, after its turn, or refuses it. A dry-run zone
    /// counts and logs what it would refuse, and never waits.
    pub(crate) async fn admit(&self, s: &Subject<'_>, metrics: &Metrics, route: &str) -> Result<(), Rejection> {
        let Some(buckets) = self.check(s, metrics, route)? else { return Ok(()) };
        if let Some(pace) = &buckets.pace {
            while let Err(not_until) = pace.check() {
                tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
            }
        }
        Ok(())
    }

    /// Takes one from the client's bucket, never waiting its turn (failed
    /// logins: `auth_basic.limit_req`).
    pub(crate) fn take(&self, s: &Subject<'_>, metrics: &Metrics, route: &str) -> Result<(), Rejection> {
        self.check(s, metrics, route).map(|_| ())
    }

    /// Admits or refuses the request; the buckets to pace it by, unless it is
    /// not limited (an empty key, a dry run).
    fn check(&self, s: &Subject<'_>, metrics: &Metrics, route: &str) -> Result<Option<Arc<Buckets>>, Rejection> {
        let Some(key) = key_of(&self.config.key, s) else { return Ok(None) };
        let Ok::<_, Infallible>(buckets) = self.keys.get_or_insert_with(&key[..], || {
            Ok(Arc::new(Buckets {
                admit: RateLimiter::direct_with_clock(self.admit, self.clock.clone()),
                pace: self.pace.map(|q| RateLimiter::direct_with_clock(q, self.clock.clone())),
            }))
        });
        if let Err(not_until) = buckets.admit.check() {
            let wait = not_until.wait_time_from(self.clock.now());
            if self.config.dry_run {
                metrics.guard(Reason::LimitReq, route, true);
                tracing::info!(target: "relais::guard", zone = %self.config.name, client = %s.ip, "limit_req would refuse (dry run)");
                return Ok(None);
            }
            tracing::debug!(target: "relais::guard", zone = %self.config.name, client = %s.ip, "limit_req refused");
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Rejection::new(Reason::LimitReq, self.status).retry_after(seconds.max(1)));
        }
        Ok((!self.config.dry_run).then_some(buckets))
    }
}

/// A `[[limit_conn]]` zone.
pub(crate) struct ConnZone {
    pub config: LimitConnConfig,
    counts: Mutex<HashMap<Box<[u8]>, u32>>,
    status: StatusCode,
}

/// A place in a `[[limit_conn]]` zone, given back on drop.
pub struct ConnPermit {
    zone: Arc<ConnZone>,
    key: Box<[u8]>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut counts = self.zone.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl ConnZone {
    pub(crate) fn new(config: &LimitConnConfig) -> ConnZone {
        let status = config.status.0;
        ConnZone { config: config.clone(), counts: Mutex::default(), status }
    }

    /// A place for this request, or a refusal. None: the request is not counted
    /// (an empty key, or a dry run that would have refused it).
    pub(crate) fn acquire(
        self: &Arc<Self>,
        s: &Subject<'_>,
        metrics: &Metrics,
        route: &str,
    ) -> Result<Option<ConnPermit>, Rejection> {
        let Some(key) = key_of(&self.config.key, s) else { return Ok(None) };
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let full = counts.len() as u64 >= self.config.max_keys && !counts.contains_key(&key);
        let n = counts.get(&key).copied().unwrap_or(0);
        if full || n >= self.config.max {
            drop(counts);
            if self.config.dry_run {
                metrics.guard(Reason::LimitConn, route, true);
                tracing::info!(target: "relais::guard", zone = %self.config.name, client = %s.ip, "limit_conn would refuse (dry run)");
                return Ok(None);
            }
            tracing::debug!(target: "relais::guard", zone = %self.config.name, client = %s.ip, "limit_conn refused");
            return Err(Rejection::new(Reason::LimitConn, self.status));
        }
        counts.insert(key.clone(), n + 1);
        Ok(Some(ConnPermit { zone: self.clone(), key }))
    }
}

/// Keys this long or longer are remembered by their SHA-256 (as long as
/// this), so that a zone's memory is `max_keys` times a small size whatever
/// the headers or paths its keys are made of. Shorter keys are kept as they
/// are: the two kinds never meet.
const DIGESTED: usize = 32;

/// The zone key of a request: its parts joined by a NUL (which no part can
/// hold); None when a part is empty (nginx leaves such requests unlimited).
fn key_of(key: &LimitKey, s: &Subject<'_>) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(32);
    for (i, part) in key.0.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        match part {
            KeyPart::Ip => match s.ip.to_canonical() {
                std::net::IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                std::net::IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            },
            KeyPart::Header(name) => {
                let value = s.headers.get(name).map(|v| v.as_bytes()).filter(|v| !v.is_empty())?;
                out.extend_from_slice(value);
            }
            KeyPart::Route => out.extend_from_slice(s.route.as_bytes()),
            KeyPart::Path => out.extend_from_slice(s.path.as_bytes()),
        }
    }
    if out.len() >= DIGESTED {
        use sha2::Digest;
        return Some(Box::from(&sha2::Sha256::digest(&out)[..]));
    }
    Some(out.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn zone(body: &str) -> ReqZone {
        let toml = format!("[[limit_req]]\nname = \"z\"\n{body}\n");
        let config = crate::config::Config::from_toml(&toml, "test.toml").unwrap();
        ReqZone::new(&config.limit_req[0])
    }

    fn admitted(zone: &ReqZone, ip: [u8; 4]) -> bool {
        let parts = http::Request::get("/").body(()).unwrap().into_parts().0;
        let s = Subject::new(std::net::Ipv4Addr::from(ip).into(), &parts, "none");
        zone.admit(&s, &Metrics::new(), "none").now_or_never().expect("nodelay never waits").is_ok()
    }

    /// Memory stays within `max_keys` however many clients come, and a flood
    /// of new addresses does not push out a client that is being limited (its
    /// bucket would start full again).
    #[test]
    fn a_zone_holds_its_keys_and_a_flood_of_new_ones_keeps_the_limited() {
        let z = zone("rate = \"1r/m\"\nnodelay = true\nmax_keys = 1000");
        assert!(admitted(&z, [192, 0, 2, 1]));
        assert!(!admitted(&z, [192, 0, 2, 1]), "over the rate");
        for i in 0..20_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            admitted(&z, [10, b, c, d]);
        }
        assert!(z.keys.len() <= 1100, "{} keys held", z.keys.len());
        assert!(!admitted(&z, [192, 0, 2, 1]), "still limited after the flood");
    }
}
