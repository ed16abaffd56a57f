//! Per-route cache rules, as configured by the operator.
//!
//! Rules are consulted when a response is stored ([`crate::Policy::new`]) and when it
//! is revalidated; the resulting lifetime and stale windows are frozen into the
//! [`crate::Policy`], so a config reload affects new and revalidated entries only.
//! Rules never make a `no-store` or `private` response storable.

use std::time::Duration;

use http::HeaderName;

/// How one route caches. The default caches by the origin's headers alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    /// Lifetime used when the origin gives no explicit freshness (no `s-maxage`,
    /// `max-age` or `Expires`), instead of the Last-Modified heuristic.
    /// Default: none (the heuristic applies).
    pub default_ttl: Option<Duration>,
    /// Lower bound of the freshness lifetime. Does not apply to `no-cache`
    /// responses, which are revalidated on every use. Default: none.
    pub min_ttl: Option<Duration>,
    /// Upper bound of the freshness lifetime; wins over `min_ttl` if they cross.
    /// Default: none.
    pub max_ttl: Option<Duration>,
    /// Lifetime that replaces the origin's freshness (`max-age`, `s-maxage`,
    /// `Expires`, `no-cache`, `Pragma`), still clamped by `min_ttl`/`max_ttl`.
    /// `no-store`, `private` and the other storability rules still apply. Default: none.
    pub override_ttl: Option<Duration>,
    /// `stale-while-revalidate` window when the response has none. Default: none.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` window when neither response nor request has one. Default: none.
    pub stale_if_error: Option<Duration>,
    /// Never use the cache on this route. Default: false.
    pub bypass: bool,
    /// Store responses that carry `Set-Cookie`, without the `Set-Cookie` header.
    /// Default: false (such responses are not stored).
    pub store_set_cookie: bool,
    /// Requests carrying `Cookie` go to the origin and their answers are not
    /// stored (Varnish's default). Default: false (the origin's Cache-Control
    /// decides, as RFC 9111 allows).
    pub bypass_cookie_requests: bool,
    /// Targeted cache-control fields (RFC 9213), in order of precedence
    /// (`relais-cache-control`, `cdn-cache-control`): the first with a valid,
    /// non-empty value replaces `Cache-Control` and `Expires` for the cache.
    /// Default: none.
    pub targeted: Vec<HeaderName>,
}
