//! A route's `rewrite` rules (nginx's): each regex is tried on the path in
//! order, and the first to match replaces the whole path (and maybe the
//! query); its flag says what follows. The new target is normalised and
//! checked by the guard again in `proxy::respond` before anything sees it.

use http::StatusCode;
use regex::Regex;

use crate::config::{RewriteFlag, RewriteRule};

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
