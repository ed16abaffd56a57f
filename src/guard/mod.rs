//! The guard: what a request must get past before it reaches routing, the
//! cache or the origin. Built once per configuration, like the router, and
//! swapped with it on reload; limit zones whose settings did not change are
//! carried over with their counts.
//!
//! In the order a request meets them (see `proxy::respond`):
//! the target ([`Guard::target`]: `max_uri_length`, path normalisation), the
//! client's address ([`Guard::client`]: `real_ip`), the global lists and rules
//! ([`Guard::check`]), then after routing the route's methods, lists and rules
//! ([`RouteGuard::check`]) and its limits ([`RouteGuard::admit`]); zones that
//! do not count cache hits are asked only on the way to the origin
//! ([`RouteGuard::admit_origin`]). A refusal is a [`Rejection`], a value: a
//! status, a short body, and its reason for the metrics and the access log;
//! `proxy/` turns it into the response.

mod access;
mod client;
mod limit;
mod path;
mod rules;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri};

pub(crate) use access::{Access, Verdict};
pub(crate) use client::Client;
pub(crate) use limit::{ConnPermit, ConnZone, ReqZone};
pub(crate) use path::{PathError, Paths, without_parameters};
pub use rules::Outcome;
pub(crate) use rules::Rules;

use crate::config::{Config, ConfigError, RouteConfig};
use crate::metrics::{Metrics, Reason};

/// The global part of the guard, from `[guard]`, `[admin]` and the zones.
pub struct Guard {
    real_ip: Option<client::RealIp>,
    paths: Paths,
    max_uri: usize,
    access: Access,
    deny_status: StatusCode,
    rules: Rules,
    /// `[admin] allow/deny`.
    pub admin: Access,
    req_zones: HashMap<String, Arc<ReqZone>>,
    conn_zones: HashMap<String, Arc<ConnZone>>,
}

/// What one request is, as rules and limits see it.
pub struct Subject<'a> {
    /// The client's address (after `real_ip`).
    pub ip: IpAddr,
    pub method: &'a Method,
    /// Normalised.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The route's label (`routes[2]`), `none` before routing.
    pub route: &'a str,
}

impl<'a> Subject<'a> {
    pub fn new(ip: IpAddr, parts: &'a http::request::Parts, route: &'a str) -> Subject<'a> {
        Subject {
            ip,
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            route,
        }
    }
}

impl Guard {
    /// Compiles the guard of a validated configuration; zones equal to one of
    /// `previous`'s are taken over, counts and all.
    pub fn new(config: &Config, previous: Option<&Guard>) -> Result<Guard, ConfigError> {
        let g = &config.guard;
        let global: Vec<_> = g.rules.iter().chain(&g.file_rules).collect();
        let rules = Rules::new("guard.rules", &global).map_err(|e| invalid("guard.rules", e))?;
        let mut req_zones = HashMap::new();
        for z in &config.limit_req {
            let kept = previous.and_then(|p| p.req_zones.get(&z.name)).filter(|old| old.config == *z);
            let zone = kept.cloned().unwrap_or_else(|| Arc::new(ReqZone::new(z)));
            req_zones.insert(z.name.clone(), zone);
        }
        let mut conn_zones = HashMap::new();
        for z in &config.limit_conn {
            let kept = previous.and_then(|p| p.conn_zones.get(&z.name)).filter(|old| old.config == *z);
            let zone = kept.cloned().unwrap_or_else(|| Arc::new(ConnZone::new(z)));
            conn_zones.insert(z.name.clone(), zone);
        }
        Ok(Guard {
            real_ip: g.real_ip.as_ref().map(client::RealIp::new),
            paths: Paths {
                normalize: g.normalize_path,
                merge_slashes: g.merge_slashes,
                reject_encoded_slashes: g.reject_encoded_slashes,
            },
            max_uri: usize::try_from(g.max_uri_length.bytes()).unwrap_or(usize::MAX),
            access: Access::new(&g.allow.0, &g.deny.0),
            deny_status: g.deny_status.0,
            rules,
            admin: Access::new(&config.admin.allow.0, &config.admin.deny.0),
            req_zones,
            conn_zones,
        })
    }

    /// The compiled guard of route `index`: `[guard]`'s zones, then its own.
    pub fn route(&self, config: &Config, index: usize, r: &RouteConfig) -> Result<RouteGuard, ConfigError> {
        let label = format!("routes[{index}].guard.rules");
        let own: Vec<_> = r.guard.rules.iter().collect();
        let rules = Rules::new(&label, &own).map_err(|msg| invalid(&label, msg))?;
        let req = pick(&self.req_zones, config.guard.limit_req.iter().chain(&r.limit_req));
        let (hits, origin) = req.into_iter().partition(|z| z.config.count_hits);
        let conn = pick(&self.conn_zones, config.guard.limit_conn.iter().chain(&r.limit_conn));
        let methods = (!r.methods.0.is_empty()).then(|| {
            let mut list = r.methods.0.clone();
            if list.contains(&Method::GET) && !list.contains(&Method::HEAD) {
                // As nginx's limit_except: allowing GET allows HEAD.
                list.push(Method::HEAD);
            }
            let names: Vec<&str> = list.iter().map(Method::as_str).collect();
            let allow = HeaderValue::try_from(names.join(", ")).unwrap_or(HeaderValue::from_static("GET"));
            (list, allow)
        });
        Ok(RouteGuard {
            methods,
            access: Access::new(&r.guard.allow.0, &r.guard.deny.0),
            deny_status: self.deny_status,
            rules,
            req: hits,
            origin_req: origin,
            conn,
        })
    }

    /// The request target checked and normalised: 414 over `max_uri_length`,
    /// 400 for a path that cannot be normalised; `Some` with the new target
    /// when normalising changed it.
    pub fn target(&self, uri: &Uri) -> Result<Option<Uri>, Rejection> {
        let len = uri.path_and_query().map_or(1, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len())
            + uri.scheme_str().map_or(0, |s| s.len() + 3);
        if len > self.max_uri {
            return Err(Rejection::new(Reason::UriLength, StatusCode::URI_TOO_LONG));
        }
        let normal = self
            .paths
            .normalize(uri.path())
            .map_err(|e| Rejection::new(Reason::Path, StatusCode::BAD_REQUEST).body(Some(Arc::from(e.message()))))?;
        let std::borrow::Cow::Owned(path) = normal else { return Ok(None) };
        let target = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(target.parse().map_err(|_| Rejection::new(Reason::Path, StatusCode::BAD_REQUEST))?);
        Uri::from_parts(parts).map(Some).map_err(|_| Rejection::new(Reason::Path, StatusCode::BAD_REQUEST))
    }

    /// The `[[limit_req]]` zone named `name`.
    pub(crate) fn req_zone(&self, name: &str) -> Option<Arc<ReqZone>> {
        self.req_zones.get(name).cloned()
    }

    /// How paths are normalised (a path made by cutting another is checked with it).
    pub fn paths(&self) -> Paths {
        self.paths
    }

    /// The client behind trusted proxies; None: the peer is the client.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<Client> {
        self.real_ip.as_ref()?.client(peer, headers)
    }

    /// Whether `peer` is a proxy `real_ip` trusts (whose request id is kept, too).
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.real_ip.as_ref().is_some_and(|r| r.trusts(peer))
    }

    /// The global lists, then the global rules.
    pub fn check(&self, s: &Subject<'_>, metrics: &Metrics) -> Result<Outcome, Rejection> {
        if self.access.check(s.ip) == Some(Verdict::Deny) {
            tracing::debug!(target: "relais::guard", client = %s.ip, "denied by guard.deny");
            return Err(Rejection::new(Reason::Access, self.deny_status));
        }
        self.rules.check(s, metrics, s.route)
    }
}

fn invalid(key: &str, msg: String) -> ConfigError {
    ConfigError::Invalid { source_name: "configuration".into(), key: key.into(), msg }
}

/// The zones named (validated to exist), each once, in order.
fn pick<'n, Z>(zones: &HashMap<String, Arc<Z>>, names: impl Iterator<Item = &'n String>) -> Vec<Arc<Z>> {
    let mut picked: Vec<Arc<Z>> = Vec::new();
    for name in names {
        let zone = &zones[name];
        if !picked.iter().any(|z| Arc::ptr_eq(z, zone)) {
            picked.push(zone.clone());
        }
    }
    picked
}

/// A route's part of the guard.
pub struct RouteGuard {
    /// The methods answered, and their `Allow` header; None: any.
    methods: Option<(Vec<Method>, HeaderValue)>,
    access: Access,
    deny_status: StatusCode,
    rules: Rules,
    /// Zones every request counts against.
    req: Vec<Arc<ReqZone>>,
    /// Zones only requests to the origin count against (`count_hits = false`).
    origin_req: Vec<Arc<ReqZone>>,
    conn: Vec<Arc<ConnZone>>,
}

impl RouteGuard {
    /// Methods, then the route's lists, then its rules (unless a global
    /// `allow` rule said to skip them).
    pub fn check(&self, s: &Subject<'_>, skip_rules: bool, metrics: &Metrics) -> Result<(), Rejection> {
        if let Some((list, allow)) = &self.methods
            && !list.contains(s.method)
        {
            return Err(Rejection::new(Reason::Method, StatusCode::METHOD_NOT_ALLOWED).allow(allow.clone()));
        }
        if self.access.check(s.ip) == Some(Verdict::Deny) {
            tracing::debug!(target: "relais::guard", client = %s.ip, route = s.route, "denied by the route's deny");
            return Err(Rejection::new(Reason::Access, self.deny_status));
        }
        if !skip_rules {
            self.rules.check(s, metrics, s.route)?;
        }
        Ok(())
    }

    /// The route's connection zones, then its rate zones (which may make the
    /// request wait its turn). The permits are held until the response is sent.
    pub async fn admit(&self, s: &Subject<'_>, metrics: &Metrics) -> Result<Vec<ConnPermit>, Rejection> {
        let mut permits = Vec::new();
        for zone in &self.conn {
            permits.extend(zone.acquire(s, metrics, s.route)?);
        }
        for zone in &self.req {
            zone.admit(s, metrics, s.route).await?;
        }
        Ok(permits)
    }

    /// Whether some zone counts only requests to the origin.
    pub fn limits_origin(&self) -> bool {
        !self.origin_req.is_empty()
    }

    /// The zones that count only requests to the origin (cache misses,
    /// revalidations, bypasses).
    pub async fn admit_origin(&self, s: &Subject<'_>, metrics: &Metrics) -> Result<(), Rejection> {
        for zone in &self.origin_req {
            zone.admit(s, metrics, s.route).await?;
        }
        Ok(())
    }

    /// Whether admitting costs nothing (no zones).
    pub fn has_limits(&self) -> bool {
        !self.req.is_empty() || !self.conn.is_empty()
    }
}

/// A request the guard refused, as data: the status and short body the
/// client gets, and the reason counted and logged. `proxy/` makes the
/// response (`proxy::error`); the guard never builds one.
#[derive(Debug)]
pub struct Rejection {
    pub reason: Reason,
    pub status: StatusCode,
    /// The body instead of the status line (a rule's `body`, a path's fault).
    pub body: Option<Arc<str>>,
    /// Seconds for `Retry-After` (a rate zone that refused).
    pub retry_after: Option<u64>,
    /// The route's methods, for `Allow` with a 405.
    pub allow: Option<HeaderValue>,
    /// The rule that refused, for the log.
    pub rule: Option<Arc<str>>,
}

impl Rejection {
    pub fn new(reason: Reason, status: StatusCode) -> Rejection {
        Rejection { reason, status, body: None, retry_after: None, allow: None, rule: None }
    }

    fn body(self, body: Option<Arc<str>>) -> Rejection {
        Rejection { body, ..self }
    }

    fn retry_after(self, seconds: u64) -> Rejection {
        Rejection { retry_after: Some(seconds), ..self }
    }

    fn allow(self, methods: HeaderValue) -> Rejection {
        Rejection { allow: Some(methods), ..self }
    }

    fn rule(self, name: &Arc<str>) -> Rejection {
        Rejection { rule: Some(name.clone()), ..self }
    }
}
