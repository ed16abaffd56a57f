//! Authentication per route, checked after the route's limits and before
//! the cache and the origin (`proxy::respond`): `auth_basic`, users and
//! password hashes of an htpasswd file ([`basic`]), then `auth_request`, a
//! subrequest to an auth upstream that says yes or no ([`request`]).
//!
//! Built with the router, so a reload reads the users again and forgets
//! every remembered verification and answer. A refusal is a [`Refusal`], a
//! value: `proxy/` makes the response, counts and logs it as the guard's.

mod basic;
mod request;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::config::{Config, RouteConfig};
use crate::guard::Guard;
use crate::metrics::{Metrics, Reason};
use crate::upstream::Upstream;

/// A route's `auth_basic` and `auth_request`, compiled.
pub(crate) struct RouteAuth {
    basic: Option<basic::Basic>,
    request: Option<request::Subrequest>,
}

/// A request authentication refused: the status the client gets, with the
/// challenge (`WWW-Authenticate`) and `Retry-After` to send.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub reason: Reason,
    pub status: StatusCode,
    pub challenge: Option<HeaderValue>,
    pub retry_after: Option<u64>,
}

impl Refusal {
    fn new(reason: Reason, status: StatusCode) -> Refusal {
        Refusal { reason, status, challenge: None, retry_after: None }
    }
}

/// What authentication knows of a request beside its head.
pub(crate) struct Asker<'a> {
    /// The client's address (after `real_ip`).
    pub client: IpAddr,
    /// The route's label, for metrics.
    pub route: &'a str,
    /// Adds `X-Forwarded-*` as a forwarded request gets them.
    pub forwarded: &'a (dyn Fn(&mut HeaderMap) + Sync),
}

impl RouteAuth {
    /// Route `r`'s authentication, if it has any. Its upstream and zone were
    /// validated to exist.
    pub(crate) fn new(
        r: &RouteConfig,
        config: &Config,
        upstreams: &HashMap<String, Arc<Upstream>>,
        guard: &Guard,
    ) -> Option<Box<RouteAuth>> {
        let basic = r.auth_basic.as_ref().map(|b| basic::Basic::new(b, guard));
        let request =
            r.auth_request.as_ref().map(|a| request::Subrequest::new(a, config, upstreams[&a.upstream].clone()));
        (basic.is_some() || request.is_some()).then(|| Box::new(RouteAuth { basic, request }))
    }

    /// Whether the client's `Authorization` goes upstream: not when
    /// `auth_basic` used it, unless it says `keep_authorization`.
    pub(crate) fn keeps_authorization(&self) -> bool {
        self.basic.as_ref().is_none_or(basic::Basic::keeps_authorization)
    }

    /// Lets the request through (with the headers `auth_request` copies set
    /// on it) or refuses it.
    pub(crate) async fn check(&self, parts: &mut Parts, asker: &Asker<'_>, metrics: &Metrics) -> Result<(), Refusal> {
        if let Some(basic) = &self.basic {
            basic.check(parts, asker, metrics).await?;
        }
        if let Some(request) = &self.request {
            request.check(parts, asker, metrics).await?;
        }
        Ok(())
    }
}

/// A keyed hash (HMAC-SHA-256 under a key of this process) of `parts`, each
/// prefixed by its length: what remembered verifications and answers are
/// found by, so a credential is never held in memory as it was sent.
fn keyed<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use hmac::Mac;
    static KEY: LazyLock<[u8; 32]> = LazyLock::new(rand::random);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&*KEY).expect("HMAC takes any key length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
