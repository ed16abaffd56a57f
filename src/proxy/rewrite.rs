//! A route's `rewrite` rules (nginx's): each regex is tried on the path in
//! order, and the first to match replaces the whole path (and maybe the
//! query); its flag says what follows. The new target is normalised and
//! checked by the guard again in `proxy::respond` before anything sees it.

use std::net::IpAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{Response, StatusCode};
use regex::Regex;

use super::{Found, Pipeline, ProxyError, Route, fixed};
use crate::config::{RewriteFlag, RewriteRule};
use crate::guard::{Guard, Outcome, Subject};
use crate::http::body::Body;

/// How many times rewrites may send a request to be routed again (nginx's 10).
const MAX_REWRITES: usize = 10;

/// Where a request's rewrites left it.
pub(super) enum Routed<'a> {
    Route(&'a Arc<Route>),
    /// Answered on this route: a redirect.
    Answered(&'a Arc<Route>, Response<Body>),
}

/// Runs `route`'s rewrites, and those of each route they send the request
/// to, on `parts.uri`. A new path is a new request to the guard's rules (whose
/// `allow` verdict `skip_rules` is) and to the router.
pub(super) fn follow<'a>(
    p: &'a Pipeline,
    mut route: &'a Arc<Route>,
    parts: &mut Parts,
    (client, host): (IpAddr, &str),
    skip_rules: &mut bool,
) -> Result<Routed<'a>, ProxyError> {
    for _ in 0..=MAX_REWRITES {
        let (uri, again) = match route.rewrites.apply(parts.uri.path(), parts.uri.query()) {
            Rewritten::Same => return Ok(Routed::Route(route)),
            Rewritten::Redirect(status, location) => return Ok(Routed::Answered(route, redirect(status, &location)?)),
            Rewritten::Send(target) => (rewritten(&p.guard, &parts.uri, &target)?, false),
            Rewritten::Route(target) => (rewritten(&p.guard, &parts.uri, &target)?, true),
        };
        parts.uri = uri;
        if !again {
            return Ok(Routed::Route(route));
        }
        *skip_rules = matches!(p.guard.check(&Subject::new(client, parts, "none"), &p.metrics)?, Outcome::Allowed);
        route = match p.router.find(host, parts.uri.path(), &parts.headers).ok_or(ProxyError::NoRoute)? {
            Found::Route(route) => route,
            Found::Directory(route) => {
                return Ok(Routed::Answered(route, super::to_directory(route.directory(), &parts.uri)?));
            }
        };
    }
    tracing::warn!(
        route = &*route.label,
        path = parts.uri.path(),
        "rewrites still routing the request again after {MAX_REWRITES} times"
    );
    Err(ProxyError::RewriteLoop)
}

/// `uri` with the target a rewrite made, normalised and checked as a
/// client's is (a rewrite cannot reach a path the guard would refuse).
fn rewritten(guard: &Guard, uri: &http::Uri, target: &str) -> Result<http::Uri, ProxyError> {
    let invalid = || ProxyError::BadRequest("the rewritten path is not a valid path");
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| invalid())?);
    let uri = http::Uri::from_parts(parts).map_err(|_| invalid())?;
    Ok(guard.target(&uri)?.unwrap_or(uri))
}

/// A redirect a rewrite asked for.
fn redirect(status: StatusCode, location: &str) -> Result<Response<Body>, ProxyError> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::LOCATION, fixed::location_value(location)?);
    Ok(res)
}

pub(crate) struct Rewrites(Vec<Rule>);

struct Rule {
    regex: Regex,
    replace: String,
    flag: Option<RewriteFlag>,
}

/// What the rules made of a request's target.
#[derive(Debug, PartialEq)]
pub(crate) enum Rewritten {
    /// No rule matched.
    Same,
    /// Route this target again (`last`, or the rules ran out after a change).
    Route(String),
    /// Send this target upstream on the same route (`break`).
    Send(String),
    /// Answer with this redirect (`redirect`, `permanent`, or an absolute URL).
    Redirect(StatusCode, String),
}

impl Rewrites {
    /// From checked rules (their regexes compile).
    pub(crate) fn new(rules: &[RewriteRule]) -> Rewrites {
        let compile = |r: &RewriteRule| crate::config::compile_regex(&r.regex).expect("checked at load");
        Rewrites(rules.iter().map(|r| Rule { regex: compile(r), replace: r.replace.clone(), flag: r.flag }).collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs the rules on `path` (the query is not matched, only carried).
    pub(crate) fn apply(&self, path: &str, query: Option<&str>) -> Rewritten {
        let mut now: Option<(String, Option<String>)> = None;
        for rule in &self.0 {
            let current = now.as_ref().map_or(path, |(p, _)| p.as_str());
            let Some(caps) = rule.regex.captures(current) else { continue };
            let mut out = String::new();
            caps.expand(&rule.replace, &mut out);
            let carried = now.as_ref().map_or(query, |(_, q)| q.as_deref());
            let (new_path, new_query) = match out.split_once('?') {
                // A replacement ending in `?` drops the request's query.
                Some((p, "")) => (p.to_string(), None),
                Some((p, q)) => (p.to_string(), Some(carried.map_or(q.to_string(), |c| format!("{q}&{c}")))),
                None => (out.clone(), carried.map(str::to_string)),
            };
            let target = match &new_query {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path.clone(),
            };
            let absolute = new_path.starts_with("http://") || new_path.starts_with("https://");
            match rule.flag {
                Some(RewriteFlag::Permanent) => return Rewritten::Redirect(StatusCode::MOVED_PERMANENTLY, target),
                Some(RewriteFlag::Redirect) => return Rewritten::Redirect(StatusCode::FOUND, target),
                _ if absolute => return Rewritten::Redirect(StatusCode::FOUND, target),
                Some(RewriteFlag::Last) => return Rewritten::Route(target),
                Some(RewriteFlag::Break) => return Rewritten::Send(target),
                None => now = Some((new_path, new_query)),
            }
        }
        match now {
            Some((p, Some(q))) => Rewritten::Route(format!("{p}?{q}")),
            Some((p, None)) => Rewritten::Route(p),
            None => Rewritten::Same,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(&str, &str, Option<RewriteFlag>)]) -> Rewrites {
        let rules: Vec<RewriteRule> = list
            .iter()
            .map(|(re, to, flag)| RewriteRule { regex: re.to_string(), replace: to.to_string(), flag: *flag })
            .collect();
        Rewrites::new(&rules)
    }

    #[test]
    fn flags_and_queries_as_nginx() {
        use RewriteFlag::*;
        let r = rules(&[("^/old/(.*)$", "/new/$1", Some(Last))]);
        assert_eq!(r.apply("/old/a/b", Some("x=1")), Rewritten::Route("/new/a/b?x=1".into()));
        assert_eq!(r.apply("/other", None), Rewritten::Same);
        let r = rules(&[("^/p/(\\d+)$", "/item?id=$1", Some(Break))]);
        assert_eq!(r.apply("/p/7", Some("a=b")), Rewritten::Send("/item?id=7&a=b".into()));
        let r = rules(&[("^/p/(\\d+)$", "/item/${1}x?", Some(Break))]);
        assert_eq!(r.apply("/p/7", Some("a=b")), Rewritten::Send("/item/7x".into()), "a trailing ? drops the query");
        let r = rules(&[("^/a$", "/b", Some(Permanent))]);
        assert_eq!(r.apply("/a", None), Rewritten::Redirect(StatusCode::MOVED_PERMANENTLY, "/b".into()));
        let r = rules(&[("^/a$", "https://example.com/b", None)]);
        assert_eq!(r.apply("/a", None), Rewritten::Redirect(StatusCode::FOUND, "https://example.com/b".into()));
        // Without a flag the next rule sees the new path; a change then routes again.
        let r = rules(&[("^/a/(.*)$", "/b/$1", None), ("^/b/(.*)$", "/c/$1", None), ("^/z$", "/y", None)]);
        assert_eq!(r.apply("/a/1", None), Rewritten::Route("/c/1".into()));
    }
}
