//! Routing: which route a request belongs to.
//!
//! Host first — exact names, then `*.suffix` patterns (longest suffix first),
//! then routes without a host — and within the first group that has a match,
//! the longest path prefix; among equal prefixes, the route with more header
//! predicates, then the one written first.
//!
//! Prefixes match whole segments: `/api` is `/api` and `/api/…`, never
//! `/apix` or `/api..` (nginx's `location /api` takes both), so what is left
//! once `strip_prefix` cuts it is a path of its own segments. A route whose
//! prefix is a directory (`/private/`) owns the directory itself: `/private`
//! is answered with a redirect to `/private/` before any shorter route can
//! take it, as nginx answers it, unless a route has exactly that path. The
//! last segment's parameters belong to it (`/api;jsessionid=1` is `/api`'s,
//! as a servlet container reads it; the guard refuses them on other segments).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{
    Config, ConfigError, FieldName, FieldValue, HeaderMatch, HeaderRules, HostPattern, KeyConfig, RouteConfig,
};
use crate::guard::{Guard, PathError, Paths, RouteGuard, without_parameters};
use crate::upstream::Upstream;

/// A compiled `[[routes]]` entry.
pub(crate) struct Route {
    /// Position in the file (`routes[3]`): among equal prefixes, the first wins.
    pub index: usize,
    /// The route's name (`api`, `*/static/`): its label in metrics and logs.
    pub label: Arc<str>,
    pub prefix: String,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// None for a route that answers by itself.
    pub upstream: Option<Arc<Upstream>>,
    pub strip_prefix: bool,
    pub pass_host: bool,
    pub request_headers: CompiledRules,
    pub response_headers: CompiledRules,
    pub cache: cache_policy::Rules,
    /// `cache.key`, when it shapes the key (`None`: the canonical URL's).
    pub key: Option<KeyConfig>,
    /// `cache.min_uses` above 1: the requests counted per key.
    pub min_uses: Option<super::cache::MinUses>,
    /// Responses are fetched and stored in ranges of this many bytes.
    pub slice: Option<u64>,
    /// Whether and at what levels relais compresses here.
    pub compress: crate::compress::RouteSettings,
    /// Request bodies are read whole before they go upstream.
    pub request_buffering: bool,
    /// Cleartext requests get 308 to https.
    pub redirect_https: bool,
    /// Methods, lists, rules and limits of this route.
    pub guard: RouteGuard,
    /// Protocols a client may switch to (`Upgrade`), lower-case; never h2c.
    upgrades: Vec<String>,
    /// How the guard normalises paths, to check the path left by `strip_prefix`.
    paths: Paths,
    /// `path_regex`: the path must match it too; its captures fill `return`.
    pub regex: Option<regex::Regex>,
    pub rewrites: super::rewrite::Rewrites,
    /// `return`: the route's own answer.
    pub fixed: Option<super::fixed::Fixed>,
    pub error_pages: super::error_page::ErrorPages,
    /// `auth_basic` and `auth_request`, when the route has them.
    pub auth: Option<Box<crate::auth::RouteAuth>>,
    /// `root` or `alias`: the directory this route serves files from.
    pub files: Option<Arc<crate::files::Files>>,
}

/// What routing found for a request.
pub(crate) enum Found<'a> {
    Route(&'a Arc<Route>),
    /// The path is this route's directory without its slash: redirect to it.
    Directory(&'a Arc<Route>),
}

/// Header rules with names parsed once.
#[derive(Default)]
pub(crate) struct CompiledRules {
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

    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
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
    fn new(
        index: usize,
        name: &str,
        r: &RouteConfig,
        upstream: Option<Arc<Upstream>>,
        config: &Config,
        guard: RouteGuard,
        paths: Paths,
    ) -> Route {
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
            label: Arc::from(name),
            prefix: r.path.clone(),
            headers,
            upstream,
            strip_prefix: r.strip_prefix,
            pass_host: r.pass_host,
            request_headers: CompiledRules::new(&r.request_headers),
            response_headers: CompiledRules::new(&r.response_headers),
            cache: r.cache.to_rules(config.cache.targeted()),
            key: (!r.cache.key.is_default()).then(|| r.cache.key.clone()),
            min_uses: super::cache::MinUses::new(r.cache.min_uses.unwrap_or(1)),
            slice: r.cache.slice.map(|s| s.bytes()),
            compress: crate::compress::RouteSettings::new(&config.compression, &r.compression),
            request_buffering: r.request_buffering,
            redirect_https: r.redirect_https.unwrap_or(config.server.redirect_https),
            guard,
            upgrades: r.upgrades.iter().map(|p| p.as_str().to_string()).collect(),
            paths,
            regex: r.path_regex.as_deref().map(|re| crate::config::compile_regex(re).expect("checked at load")),
            rewrites: super::rewrite::Rewrites::new(&r.rewrite),
            fixed: r.answer.as_ref().map(super::fixed::Fixed::new),
            error_pages: Default::default(),
            auth: None,
            files: crate::files::Files::new(r, &config.compression.encodings, Arc::from(name)),
        }
    }

    /// The prefix covers `path` on a segment boundary (parameters end a segment).
    fn covers(&self, path: &str) -> bool {
        path.starts_with(&self.prefix)
            && (self.prefix.ends_with('/')
                || matches!(path.as_bytes().get(self.prefix.len()), None | Some(b'/' | b';')))
    }

    /// `path` is this route's directory (`/private/`) without its slash (with
    /// or without parameters).
    fn is_directory(&self, path: &str) -> bool {
        self.prefix.strip_suffix('/').is_some_and(|dir| dir == without_parameters(path) && !dir.is_empty())
    }

    /// The directory [`Found::Directory`] redirects to: the prefix.
    pub(crate) fn directory(&self) -> &str {
        &self.prefix
    }

    /// `path_regex`, if any, matches `path`.
    fn regex_matches(&self, path: &str) -> bool {
        self.regex.as_ref().is_none_or(|re| re.is_match(path))
    }

    fn headers_match(&self, headers: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, want)| match (want, headers.get(name)) {
            (None, got) => got.is_some(),
            (Some(want), Some(got)) => want == got,
            (Some(_), None) => false,
        })
    }

    /// The path and query to send upstream: `target` with the prefix removed
    /// when `strip_prefix`. What is left is a new path, so it is checked
    /// again: it must be in normal form as the client's was, or the request
    /// is refused (the origin would read a path the router and rules did not).
    pub(crate) fn upstream_path<'a>(&self, target: &'a str) -> Result<Cow<'a, str>, PathError> {
        // A path a rewrite (`break`) took out of the prefix is sent as it is.
        let Some(rest) = target.strip_prefix(self.prefix.as_str()).filter(|_| self.strip_prefix && self.prefix != "/")
        else {
            return Ok(target.into());
        };
        let sent: Cow<'a, str> = if rest.starts_with('/') { rest.into() } else { format!("/{rest}").into() };
        let path = sent.split_once('?').map_or(&*sent, |(p, _)| p);
        if self.paths.normalize(path)? != path {
            return Err(PathError::NotNormal);
        }
        Ok(sent)
    }

    /// The protocols of a client's `Upgrade` this route lets through (never
    /// h2c), as the value to send; None when there are none.
    pub(crate) fn upgrade(&self, asked: &HeaderValue) -> Option<HeaderValue> {
        let asked = asked.to_str().ok()?;
        let allowed: Vec<&str> = asked
            .split(',')
            .map(str::trim)
            .filter(|p| {
                let name = p.split('/').next().unwrap_or("").to_ascii_lowercase();
                name != "h2c" && self.upgrades.contains(&name)
            })
            .collect();
        if allowed.is_empty() {
            return None;
        }
        HeaderValue::try_from(allowed.join(", ")).ok()
    }
}

#[derive(Default)]
pub(crate) struct Router {
    exact: HashMap<String, Vec<Arc<Route>>>,
    /// (".example.com", routes), longest suffix first.
    wildcard: Vec<(String, Vec<Arc<Route>>)>,
    any: Vec<Arc<Route>>,
}

impl Router {
    pub(crate) fn new(
        config: &Config,
        upstreams: &HashMap<String, Arc<Upstream>>,
        guard: &Guard,
    ) -> Result<Router, ConfigError> {
        let mut router = Router::default();
        let names = config.route_names();
        for ((i, r), name) in config.routes.iter().enumerate().zip(&names) {
            let upstream = r.upstream.as_ref().map(|u| upstreams[u].clone());
            let route_guard = guard.route(config, i, r)?;
            let bad = |key: String, msg: String| ConfigError::Invalid { source_name: "configuration".into(), key, msg };
            let pages = config.check_pages(&format!("routes[{i}].error_pages"), &r.error_pages, &bad)?;
            let mut route = Route::new(i, name, r, upstream, config, route_guard, guard.paths());
            route.error_pages = super::error_page::ErrorPages::new(pages, upstreams);
            route.auth = crate::auth::RouteAuth::new(r, config, upstreams, guard);
            let route = Arc::new(route);
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
            list.sort_by_key(|r| {
                let predicates = (r.regex.is_some(), r.headers.len());
                (std::cmp::Reverse(r.prefix.len()), std::cmp::Reverse(predicates), r.index)
            })
        };
        router.exact.values_mut().for_each(order);
        router.wildcard.iter_mut().for_each(|(_, l)| order(l));
        order(&mut router.any);
        router.wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(router)
    }

    /// `host` is lower-case without port, `path` normalised.
    pub(crate) fn find(&self, host: &str, path: &str, headers: &HeaderMap) -> Option<Found<'_>> {
        /// Longest prefix first: a directory route (one byte longer than
        /// `path`) is met before any route that covers `path`.
        fn pick<'a>(list: &'a [Arc<Route>], path: &str, headers: &HeaderMap) -> Option<Found<'a>> {
            let mut directory = None;
            for r in list {
                if !r.headers_match(headers) || !r.regex_matches(path) {
                    continue;
                }
                if r.covers(path) {
                    return Some(match directory {
                        Some(d) if r.prefix != without_parameters(path) => Found::Directory(d),
                        _ => Found::Route(r),
                    });
                }
                if directory.is_none() && r.is_directory(path) {
                    directory = Some(r);
                }
            }
            directory.map(Found::Directory)
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

    /// `url` (canonical, [`crate::cache::key::url`]) as the route that would
    /// serve it keys it (its `cache.key` applied), and that route's `cache.key`:
    /// what purges and invalidations name. `headers` stand in for a
    /// request's, for routes that match on headers.
    pub(crate) fn key_url(&self, url: String, headers: &HeaderMap) -> (String, Option<&KeyConfig>) {
        let Ok(uri) = url.parse::<http::Uri>() else { return (url, None) };
        match self.find(uri.host().unwrap_or(""), uri.path(), headers) {
            Some(Found::Route(route)) if let Some(rules) = &route.key => {
                (crate::cache::key::shape_url(rules, url), Some(rules))
            }
            _ => (url, None),
        }
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
            .map(|(n, u)| (n.clone(), Arc::new(Upstream::new(n, u, config.server.engine, metrics.clone()).unwrap())))
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
        match r.find(host, path, &h) {
            Some(Found::Route(r)) => r.upstream.as_ref().unwrap().name.clone(),
            Some(Found::Directory(r)) => format!("301 to {}", r.prefix),
            None => String::new(),
        }
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
    fn prefixes_match_whole_segments_and_own_their_directory() {
        let r = router(ROUTES);
        assert_eq!(up(&r, "x.test", "/api", &[]), "301 to /api/");
        assert_eq!(up(&r, "x.test", "/api", &[("x-canary", "1")]), "301 to /api/");
        assert_eq!(up(&r, "x.test", "/apix", &[]), "a");
        assert_eq!(up(&r, "x.test", "/api;jsessionid=1", &[]), "301 to /api/", "a servlet's /api");
        assert_eq!(up(&r, "www.example.com", "/static", &[]), "301 to /static/");
        assert_eq!(up(&r, "a.example.com", "/static", &[]), "c", "another host's directory");
        let r = router(&ROUTES.replace("path = \"/api/\"\nupstream = \"b\"", "path = \"/api\"\nupstream = \"b\""));
        assert_eq!(up(&r, "x.test", "/api", &[]), "b", "a route for exactly the path wins");
        assert_eq!(up(&r, "x.test", "/api;x", &[]), "b", "with its parameters too");
        assert_eq!(up(&r, "x.test", "/api/x", &[]), "b");
        assert_eq!(up(&r, "x.test", "/api/x", &[("x-canary", "1")]), "c");
        for other in ["/apix", "/api..", "/api.x/y", "/ap"] {
            assert_eq!(up(&r, "x.test", other, &[]), "a", "{other}");
        }
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
            .map(|(n, u)| (n.clone(), Arc::new(Upstream::new(n, u, config.server.engine, metrics.clone()).unwrap())))
            .collect();
        let guard = Guard::new(&config, None).unwrap();
        let r = Router::new(&config, &ups, &guard).unwrap();
        let Some(Found::Route(route)) = r.find("h", "/api/x", &HeaderMap::new()) else { panic!("no route") };
        assert_eq!(route.upstream_path("/api/x?q=1").unwrap(), "/x?q=1");
        assert_eq!(route.upstream_path("/api").unwrap(), "/");
        assert_eq!(route.upstream_path("/api?x").unwrap(), "/?x");
        assert_eq!(route.upstream_path("/api/a%20b?%2e%2e").unwrap(), "/a%20b?%2e%2e");
        // What routing never hands it, it refuses rather than sends: a cut that leaves dots.
        assert_eq!(route.upstream_path("/api../admin"), Err(PathError::NotNormal));
        assert_eq!(route.upstream_path("/api/./x"), Err(PathError::NotNormal));
    }

    #[test]
    fn upgrades_only_by_name_and_never_h2c() {
        let r = router(&ROUTES.replace(
            "path = \"/api/\"\nupstream = \"b\"",
            "path = \"/api/\"\nupstream = \"b\"\nupgrades = [\"websocket\", \"Foo\"]",
        ));
        let route = |path| match r.find("x.test", path, &HeaderMap::new()) {
            Some(Found::Route(route)) => route.clone(),
            _ => panic!("no route for {path}"),
        };
        let (api, root) = (route("/api/x"), route("/x"));
        let ask = |route: &Route, v: &'static str| route.upgrade(&HeaderValue::from_static(v));
        assert_eq!(ask(&root, "websocket").unwrap(), "websocket", "the default");
        assert_eq!(ask(&root, "WebSocket"), Some(HeaderValue::from_static("WebSocket")));
        assert_eq!(ask(&root, "h2c"), None);
        assert_eq!(ask(&root, "foo"), None);
        assert_eq!(ask(&api, "h2c, foo/2, bar, websocket").unwrap(), "foo/2, websocket");
        assert_eq!(ask(&api, "h2c"), None);
    }
}
