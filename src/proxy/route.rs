//! Routing: which route a request belongs to.
//!
//! Host first — exact names, then `*.suffix` patterns (longest suffix first),
//! then routes without a host — and within the first group that has a match,
//! the longest path prefix; among equal prefixes, the route with more header
//! predicates, then the one written first. Path prefixes are plain string
//! prefixes, as nginx's `location /prefix`.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Config, ConfigError, FieldName, FieldValue, HeaderMatch, HeaderRules, HostPattern, RouteConfig};
use crate::guard::{Guard, RouteGuard};
use crate::upstream::Upstream;

/// A compiled `[[routes]]` entry.
pub struct Route {
    /// Position in the file, for logs: `routes[3]`.
    pub index: usize,
    /// `routes[3]`, for metrics labels.
    pub label: Arc<str>,
    pub prefix: String,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    pub upstream: Arc<Upstream>,
    pub strip_prefix: bool,
    pub pass_host: bool,
    pub request_headers: CompiledRules,
    pub response_headers: CompiledRules,
    pub cache: cache_policy::Rules,
    /// Responses are fetched and stored in ranges of this many bytes.
    pub slice: Option<u64>,
    /// `[compression]` applies here.
    pub compression: bool,
    /// Request bodies are read whole before they go upstream.
    pub request_buffering: bool,
    /// Cleartext requests get 308 to https.
    pub redirect_https: bool,
    /// Methods, lists, rules and limits of this route.
    pub guard: RouteGuard,
}

/// Header rules with names parsed once.
#[derive(Default)]
pub struct CompiledRules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl CompiledRules {
    fn new(r: &HeaderRules) -> CompiledRules {
        let pairs = |m: &std::collections::BTreeMap<FieldName, FieldValue>| {
            m.iter().map(|(k, v)| (k.0.clone(), v.0.clone())).collect()
        };
        CompiledRules { remove: r.remove.iter().map(|n| n.0.clone()).collect(), set: pairs(&r.set), add: pairs(&r.add) }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

impl Route {
    fn new(index: usize, r: &RouteConfig, upstream: Arc<Upstream>, config: &Config, guard: RouteGuard) -> Route {
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    HeaderMatch::Present => None,
                    HeaderMatch::Equals(v) => Some(v.clone()),
                };
                (k.0.clone(), value)
            })
            .collect();
        Route {
            index,
            label: Arc::from(format!("routes[{index}]")),
            prefix: r.path.clone(),
            headers,
            upstream,
            strip_prefix: r.strip_prefix,
            pass_host: r.pass_host,
            request_headers: CompiledRules::new(&r.request_headers),
            response_headers: CompiledRules::new(&r.response_headers),
            cache: r.cache.to_rules(config.cache.targeted()),
            slice: r.cache.slice.map(|s| s.bytes()),
            compression: r.compression,
            request_buffering: r.request_buffering,
            redirect_https: r.redirect_https.unwrap_or(config.server.redirect_https),
            guard,
        }
    }

    fn matches(&self, path: &str, headers: &HeaderMap) -> bool {
        path.starts_with(&self.prefix)
            && self.headers.iter().all(|(name, want)| match (want, headers.get(name)) {
                (None, got) => got.is_some(),
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
            })
    }

    /// The path to send upstream (prefix removed when `strip_prefix`).
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.strip_prefix || self.prefix == "/" {
            return path.into();
        }
        let rest = &path[self.prefix.len().min(path.len())..];
        if rest.starts_with('/') { rest.into() } else { format!("/{rest}").into() }
    }
}

#[derive(Default)]
pub struct Router {
    exact: HashMap<String, Vec<Arc<Route>>>,
    /// (".example.com", routes), longest suffix first.
    wildcard: Vec<(String, Vec<Arc<Route>>)>,
    any: Vec<Arc<Route>>,
}

impl Router {
    pub fn new(
        config: &Config,
        upstreams: &HashMap<String, Arc<Upstream>>,
        guard: &Guard,
    ) -> Result<Router, ConfigError> {
        let mut router = Router::default();
        for (i, r) in config.routes.iter().enumerate() {
            let upstream = upstreams[&r.upstream].clone();
            let route_guard = guard.route(config, i, r)?;
            let route = Arc::new(Route::new(i, r, upstream, config, route_guard));
            match &r.host {
                None => router.any.push(route),
                Some(HostPattern::Subdomains(suffix)) => match router.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                    Some((_, list)) => list.push(route),
                    None => router.wildcard.push((suffix.clone(), vec![route])),
                },
                Some(HostPattern::Exact(h)) => router.exact.entry(h.clone()).or_default().push(route),
            }
        }
        let order = |list: &mut Vec<Arc<Route>>| {
            list.sort_by_key(|r| (std::cmp::Reverse(r.prefix.len()), std::cmp::Reverse(r.headers.len()), r.index))
        };
        router.exact.values_mut().for_each(order);
        router.wildcard.iter_mut().for_each(|(_, l)| order(l));
        order(&mut router.any);
        router.wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(router)
    }

    /// `host` is lower-case without port.
    pub fn find(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<&Arc<Route>> {
        fn pick<'a>(list: &'a [Arc<Route>], path: &str, headers: &HeaderMap) -> Option<&'a Arc<Route>> {
            list.iter().find(|r| r.matches(path, headers))
        }
        if let Some(r) = self.exact.get(host).and_then(|l| pick(l, path, headers)) {
            return Some(r);
        }
        for (suffix, list) in &self.wildcard {
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && let Some(r) = pick(list, path, headers)
            {
                return Some(r);
            }
        }
        pick(&self.any, path, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(toml: &str) -> Router {
        let config = Config::from_toml(toml, "test").unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let ups = config
            .upstreams
            .iter()
            .map(|(n, u)| (n.clone(), Arc::new(Upstream::new(n, u, metrics.clone()).unwrap())))
            .collect();
        let guard = Guard::new(&config, None).unwrap();
        Router::new(&config, &ups, &guard).unwrap()
    }

    const ROUTES: &str = r#"
[upstreams.a]
servers = ["127.0.0.1:1"]
[upstreams.b]
servers = ["127.0.0.1:2"]
[upstreams.c]
servers = ["127.0.0.1:3"]

[[routes]]
path = "/"
upstream = "a"
[[routes]]
path = "/api/"
upstream = "b"
[[routes]]
path = "/api/"
upstream = "c"
headers = { "x-canary" = "1" }
[[routes]]
host = "*.example.com"
path = "/"
upstream = "c"
[[routes]]
host = "www.example.com"
path = "/static/"
upstream = "b"
"#;

    fn up(r: &Router, host: &str, path: &str, hdr: &[(&str, &str)]) -> String {
        let mut h = HeaderMap::new();
        for (k, v) in hdr {
            h.insert(HeaderName::try_from(*k).unwrap(), HeaderValue::try_from(*v).unwrap());
        }
        r.find(host, path, &h).map(|r| r.upstream.name.clone()).unwrap_or_default()
    }

    #[test]
    fn longest_prefix_then_headers() {
        let r = router(ROUTES);
        assert_eq!(up(&r, "x.test", "/", &[]), "a");
        assert_eq!(up(&r, "x.test", "/api/users", &[]), "b");
        assert_eq!(up(&r, "x.test", "/api/users", &[("x-canary", "1")]), "c");
        assert_eq!(up(&r, "x.test", "/api/users", &[("x-canary", "2")]), "b");
    }

    #[test]
    fn exact_host_then_wildcard_then_any() {
        let r = router(ROUTES);
        assert_eq!(up(&r, "www.example.com", "/static/a.css", &[]), "b");
        assert_eq!(up(&r, "www.example.com", "/other", &[]), "c");
        assert_eq!(up(&r, "a.b.example.com", "/", &[]), "c");
        assert_eq!(up(&r, "example.com", "/", &[]), "a");
    }

    #[test]
    fn strip_prefix() {
        let config = Config::from_toml(
            "[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\npath=\"/api\"\nupstream=\"a\"\nstrip_prefix=true\n",
            "t",
        )
        .unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let ups = config
            .upstreams
            .iter()
            .map(|(n, u)| (n.clone(), Arc::new(Upstream::new(n, u, metrics.clone()).unwrap())))
            .collect();
        let guard = Guard::new(&config, None).unwrap();
        let r = Router::new(&config, &ups, &guard).unwrap();
        let route = r.find("h", "/api/x?q=1", &HeaderMap::new()).unwrap();
        assert_eq!(route.upstream_path("/api/x?q=1"), "/x?q=1");
        assert_eq!(route.upstream_path("/api"), "/");
        assert_eq!(route.upstream_path("/api?x"), "/?x");
    }
}
