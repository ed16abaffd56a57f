//! `[[routes]]`: which requests go where, and how they are treated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::edge::{ErrorPages, ReturnConfig, RewriteRule};
use super::files::{Fallback, IndexName, Symlinks};
use super::{
    Config, ConfigError, Dur, FieldName, FieldValue, HeaderMatch, HostPattern, Methods, RouteCompression, RouteGuard,
    Size,
};

/// `[[routes]]`: which requests go where, and how they are treated.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// What metrics, logs and the dashboard call this route: 1 to 64 of
    /// `A-Z a-z 0-9 _ . - / *`, unique. Default: host and path (`*/api/`).
    pub name: Option<RouteName>,
    /// Exact host or `*.example.com`; absent matches any host.
    pub host: Option<HostPattern>,
    /// Path prefix; the longest match wins. Default `/`.
    #[serde(default = "root")]
    pub path: String,
    /// A regex the path must also match (nginx's `location ~`); its captures
    /// are `{1}`, `{2}`… in `return`.
    pub path_regex: Option<String>,
    /// Request headers that must all match: a value, or `*` for "present".
    #[serde(default)]
    pub headers: BTreeMap<FieldName, HeaderMatch>,
    /// Name of an `[upstreams.NAME]` table. A route that answers by itself
    /// (`return`, or static files without a fallback) needs none.
    pub upstream: Option<String>,
    /// Remove `path` from the request path before forwarding. Default false.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Forward the client's Host (true, default) or the server's address.
    #[serde(default = "yes")]
    pub pass_host: bool,
    /// Changes to the request sent upstream.
    #[serde(default)]
    pub request_headers: HeaderRules,
    /// Changes to the response sent to the client.
    #[serde(default)]
    pub response_headers: HeaderRules,
    /// Cache rules for this route.
    #[serde(default)]
    pub cache: CacheRules,
    /// Answer cleartext requests with 308 to https; default: `server.redirect_https`.
    pub redirect_https: Option<bool>,
    /// Methods this route answers; others get 405 with `Allow`. Default: any.
    #[serde(default)]
    pub methods: Methods,
    /// `[[limit_req]]` zones applied here, after `guard.limit_req`.
    #[serde(default)]
    pub limit_req: Vec<String>,
    /// `[[limit_conn]]` zones applied here, after `guard.limit_conn`.
    #[serde(default)]
    pub limit_conn: Vec<String>,
    /// This route's own access lists and rules, after the global ones.
    #[serde(default)]
    pub guard: RouteGuard,
    /// `false` turns `[compression]` off here; a table sets this route's own
    /// levels (`{ levels = { gzip = 9 } }`). Default: on when `[compression]` is.
    #[serde(default)]
    pub compression: RouteCompression,
    /// Read a request's whole body before sending anything upstream, so a slow
    /// upload does not hold an origin connection. Default false.
    #[serde(default)]
    pub request_buffering: bool,
    /// Protocols a client may switch to with `Upgrade` here; others are sent
    /// as ordinary requests without it. Never `h2c`. Default `["websocket"]`.
    #[serde(default = "websocket")]
    pub upgrades: Vec<Protocol>,
    /// Answer by itself: a redirect or a fixed body (nginx's `return`).
    #[serde(rename = "return")]
    pub answer: Option<ReturnConfig>,
    /// Rules that change the path, in order (nginx's `rewrite`).
    #[serde(default)]
    pub rewrite: Vec<RewriteRule>,
    /// Pages for error statuses, before the global `[error_pages]`.
    #[serde(default)]
    pub error_pages: ErrorPages,
    /// Users and passwords from an htpasswd file (nginx's `auth_basic`).
    pub auth_basic: Option<super::AuthBasicConfig>,
    /// A subrequest to an auth upstream decides (nginx's `auth_request`).
    pub auth_request: Option<super::AuthRequestConfig>,
    /// Serve files from this directory: the file is `root` + the request's
    /// path (nginx `root`). Relative to the configuration file's folder.
    pub root: Option<PathBuf>,
    /// Serve files from this directory, which replaces the route's `path`
    /// (nginx `alias`). Relative to the configuration file's folder.
    pub alias: Option<PathBuf>,
    /// Files tried, in order, for a path that names a directory. Default `["index.html"]`.
    #[serde(default = "super::files::index_html")]
    pub index: Vec<IndexName>,
    /// When no file matches: `"upstream"` or a file (`"/index.html"`). Default: 404.
    pub fallback: Option<Fallback>,
    /// `"inside"` (default): symbolic links resolving outside the directory
    /// are 404; `"follow"`: any.
    #[serde(default)]
    pub symlinks: Symlinks,
    /// Serve a file's `.br`, `.zst` or `.gz` sibling to a client that accepts it. Default true.
    #[serde(default = "yes")]
    pub precompressed: bool,
}

impl RouteConfig {
    /// Whether the route never forwards, so needs no upstream.
    pub(crate) fn answers_alone(&self) -> bool {
        self.answer.is_some()
            || (self.root.is_some() || self.alias.is_some()) && self.fallback != Some(Fallback::Upstream)
    }
}

fn websocket() -> Vec<Protocol> {
    vec![Protocol("websocket".into())]
}

/// An `Upgrade` protocol name (RFC 9110 §7.8), lower-case, without version.
/// `h2c` is refused: its 101 would hand the client a raw HTTP/2 connection to
/// the origin, past every rule, route and limit.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Protocol(String);

impl Protocol {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Protocol {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if s.is_empty() || !s.bytes().all(token) {
            return Err(format!("{s:?} is not a protocol name (a token such as \"websocket\")"));
        }
        if s.eq_ignore_ascii_case("h2c") {
            return Err("h2c is never tunnelled: its 101 would give the client the origin's HTTP/2 past every rule, route and limit".into());
        }
        Ok(Protocol(s.to_ascii_lowercase()))
    }
}

/// A route's name, as written: checked once, so a label never needs escaping.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct RouteName(String);

impl RouteName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A byte a route name may hold.
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_.-/*".contains(&b)
}

impl TryFrom<String> for RouteName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 || !s.bytes().all(name_byte) {
            return Err(format!("{s:?} is not a route name (1 to 64 of A-Z a-z 0-9 _ . - / *)"));
        }
        if s == "none" || s == "admin" {
            return Err(format!(
                "{s:?} is taken: metrics count requests no route took as \"none\", the admin API's as \"admin\""
            ));
        }
        Ok(RouteName(s))
    }
}

/// Every route's name, in order: its own, or host and path (`*/api/`), with
/// bytes a name cannot hold as `_` and `-2`, `-3`… added to the second and
/// later route that would otherwise share one. Computed, not stored, so what
/// is read and what is shown cannot differ.
pub(crate) fn names(routes: &[RouteConfig]) -> Vec<String> {
    let given: std::collections::HashSet<&str> =
        routes.iter().filter_map(|r| r.name.as_ref()).map(RouteName::as_str).collect();
    let mut taken = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(routes.len());
    for r in routes {
        let name = match &r.name {
            Some(n) => n.as_str().to_string(),
            None => {
                let host = r.host.as_ref().map_or("*".to_string(), ToString::to_string);
                let base: String =
                    format!("{host}{}", r.path).bytes().map(|b| if name_byte(b) { b as char } else { '_' }).collect();
                let mut name = base.clone();
                let mut n = 2;
                while given.contains(name.as_str()) || taken.contains(&name) {
                    name = format!("{base}-{n}");
                    n += 1;
                }
                name
            }
        };
        taken.insert(name.clone());
        out.push(name);
    }
    out
}

fn root() -> String {
    "/".into()
}
fn yes() -> bool {
    true
}

/// `set` replaces, `add` appends, `remove` deletes (applied remove, set, add).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRules {
    pub set: BTreeMap<FieldName, FieldValue>,
    pub add: BTreeMap<FieldName, FieldValue>,
    pub remove: Vec<FieldName>,
}

/// A route's `cache = { ... }` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheRules {
    /// Freshness when the origin gives none (instead of the heuristic).
    pub default_ttl: Option<Dur>,
    pub min_ttl: Option<Dur>,
    pub max_ttl: Option<Dur>,
    /// Ignore the origin's freshness and use this.
    pub override_ttl: Option<Dur>,
    pub stale_while_revalidate: Option<Dur>,
    pub stale_if_error: Option<Dur>,
    /// Never cache this route.
    pub bypass: bool,
    /// Store responses with Set-Cookie (stored and served without it).
    pub store_set_cookie: bool,
    /// `cache` (default): a request with `Cookie` uses the cache like any other,
    /// and the origin's Cache-Control decides whether its answer is shared (RFC
    /// 9111; nginx's default). `bypass`: such requests go to the origin and their
    /// answers are not stored (Varnish's default), for origins that personalise
    /// by cookie without saying `private`.
    pub cookie_requests: CookieRequests,
    /// Fetch and store the origin's responses in ranges of this size (nginx's
    /// `slice`): a large file is cached piece by piece, as clients read it.
    pub slice: Option<Size>,
    /// What the cache key is made of beside scheme, host and path (default:
    /// the query as sent, nothing else).
    pub key: super::KeyConfig,
    /// A response is stored once its key has been asked for this many times
    /// (nginx's `proxy_cache_min_uses`). Default 1: at once.
    pub min_uses: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CookieRequests {
    #[default]
    Cache,
    Bypass,
}

impl CacheRules {
    /// `targeted`: the targeted cache-control fields honoured (`[cache]`).
    pub fn to_rules(&self, targeted: Vec<http::HeaderName>) -> cache_policy::Rules {
        let d = |d: Option<Dur>| d.map(Dur::get);
        cache_policy::Rules {
            default_ttl: d(self.default_ttl),
            min_ttl: d(self.min_ttl),
            max_ttl: d(self.max_ttl),
            override_ttl: d(self.override_ttl),
            stale_while_revalidate: d(self.stale_while_revalidate),
            stale_if_error: d(self.stale_if_error),
            bypass: self.bypass,
            store_set_cookie: self.store_set_cookie,
            bypass_cookie_requests: self.cookie_requests == CookieRequests::Bypass,
            targeted,
        }
    }
}

/// What the types cannot check in `routes[i]`: the upstream it names, its
/// path, its cache rules against `[cache]`.
pub(super) fn validate(
    i: usize,
    r: &RouteConfig,
    c: &Config,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    if let Some(name) = &r.name
        && let Some(j) = c.routes[..i].iter().position(|o| o.name.as_ref() == Some(name))
    {
        return Err(bad(key("name"), format!("{:?} is also routes[{j}].name", name.as_str())));
    }
    match &r.upstream {
        Some(up) if !c.upstreams.contains_key(up) => {
            let known: Vec<&str> = c.upstreams.keys().map(String::as_str).collect();
            return Err(bad(key("upstream"), format!("unknown upstream {up:?} (defined: {})", known.join(", "))));
        }
        Some(_) => {}
        None if !r.answers_alone() => {
            return Err(bad(
                key("upstream"),
                "missing: a route without one must answer by itself (return, root or alias)".into(),
            ));
        }
        None => {}
    }
    if !r.path.starts_with('/') {
        return Err(bad(key("path"), format!("{:?} must start with '/'", r.path)));
    }
    super::edge::answers(&key, r.answer.as_ref(), &r.rewrite, r.path_regex.as_deref(), bad)?;
    c.check_pages(&key("error_pages"), &r.error_pages, bad)?;
    super::auth::validate(i, r, c, bad)?;
    super::files::validate(r, &key, bad)?;
    let rules = &r.cache;
    if let (Some(min), Some(max)) = (rules.min_ttl, rules.max_ttl)
        && min > max
    {
        return Err(bad(key("cache.min_ttl"), format!("{min} is more than max_ttl {max}")));
    }
    if let Err((field, reason)) = super::cache_key::validate(&rules.key) {
        return Err(bad(key(&format!("cache.key.{field}")), reason));
    }
    match rules.min_uses {
        Some(0) => return Err(bad(key("cache.min_uses"), "must be at least 1".into())),
        Some(n) if n > 1 && rules.slice.is_some() => {
            return Err(bad(key("cache.min_uses"), "a slice route stores every slice it fetches".into()));
        }
        _ => {}
    }
    if !rules.key.cookies.is_empty() && rules.cookie_requests == CookieRequests::Bypass {
        let why = "cookie_requests = \"bypass\" keeps every request with a cookie from the cache";
        return Err(bad(key("cache.key.cookies"), why.into()));
    }
    if let Some(slice) = rules.slice {
        if slice.bytes() < 1024 {
            return Err(bad(key("cache.slice"), format!("{slice} is less than 1KiB")));
        }
        let max = c.cache.max_object_size;
        if slice > max {
            return Err(bad(key("cache.slice"), format!("{slice} is more than cache.max_object_size ({max})")));
        }
    }
    Ok(())
}
