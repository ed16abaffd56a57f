//! Request rules, compiled once per configuration: every regex of one kind
//! (path, query, user agent, each header) goes into one `RegexSet`, run once
//! per request; the rules that can still hold are then walked in order and
//! the first that holds decides.

use std::sync::Arc;

use http::{HeaderName, Method, StatusCode};
use regex::{RegexSet, RegexSetBuilder, SetMatches};

use super::access::Access;
use super::{Rejection, Subject};
use crate::config::{RuleAction, RuleConfig};
use crate::metrics::{Metrics, Reason};

pub(crate) struct Rules {
    rules: Vec<Rule>,
    /// Rules without a regex: the only ones that can hold when no pattern matched.
    plain: Vec<usize>,
    path: Set,
    query: Set,
    agent: Set,
    headers: Vec<(HeaderName, Set)>,
}

struct Rule {
    name: Arc<str>,
    methods: Vec<Method>,
    path: Option<String>,
    prefix: Option<String>,
    path_re: Option<usize>,
    query_re: Option<usize>,
    agent_re: Option<usize>,
    /// (index into `Rules::headers`, pattern in its set)
    headers: Vec<(usize, usize)>,
    cidr: Option<Access>,
    action: RuleAction,
    status: StatusCode,
    body: Option<Arc<str>>,
}

/// The patterns of one kind, and the rule each belongs to.
#[derive(Default)]
struct Set {
    patterns: Vec<String>,
    owners: Vec<usize>,
    set: Option<RegexSet>,
}

impl Set {
    fn add(&mut self, re: &str, rule: usize) -> usize {
        self.patterns.push(re.to_string());
        self.owners.push(rule);
        self.patterns.len() - 1
    }

    fn build(&mut self) -> Result<(), String> {
        if !self.patterns.is_empty() {
            let set = RegexSetBuilder::new(&self.patterns)
                .size_limit(crate::config::REGEX_SIZE * self.patterns.len())
                .build()
                .map_err(|e| e.to_string())?;
            self.set = Some(set);
        }
        Ok(())
    }

    /// Which patterns match, or `None` if none does. Most requests match
    /// nothing, and `is_match` stops early where `matches` runs every pattern.
    fn matches(&self, haystack: &str) -> Option<SetMatches> {
        let set = self.set.as_ref()?;
        set.is_match(haystack).then(|| set.matches(haystack))
    }
}

/// What the rules said.
pub enum Outcome {
    /// No rule decided: carry on.
    Pass,
    /// An `allow` rule held: the remaining rules (global and the route's) are skipped.
    Allowed,
}

impl Rules {
    /// `label` names the rules in logs (`guard.rules`, `routes[2].guard.rules`).
    pub(crate) fn new(label: &str, configs: &[&RuleConfig]) -> Result<Rules, String> {
        let mut rules = Rules {
            rules: Vec::new(),
            plain: Vec::new(),
            path: Set::default(),
            query: Set::default(),
            agent: Set::default(),
            headers: Vec::new(),
        };
        for (i, c) in configs.iter().enumerate() {
            let mut headers = Vec::new();
            for (name, re) in &c.header {
                let at = match rules.headers.iter().position(|(n, _)| *n == name.0) {
                    Some(at) => at,
                    None => {
                        rules.headers.push((name.0.clone(), Set::default()));
                        rules.headers.len() - 1
                    }
                };
                headers.push((at, rules.headers[at].1.add(re, i)));
            }
            let status = c.status.map_or(StatusCode::FORBIDDEN, |s| s.0);
            let rule = Rule {
                name: Arc::from(c.name.clone().unwrap_or_else(|| format!("{label}[{i}]"))),
                methods: c.method.0.clone(),
                path: c.path.clone(),
                prefix: c.path_prefix.clone(),
                path_re: c.path_regex.as_deref().map(|re| rules.path.add(re, i)),
                query_re: c.query_regex.as_deref().map(|re| rules.query.add(re, i)),
                agent_re: c.user_agent_regex.as_deref().map(|re| rules.agent.add(re, i)),
                headers,
                cidr: (!c.cidr.is_empty()).then(|| Access::new(&c.cidr.0, &[])),
                action: c.action,
                status,
                body: c.body.as_deref().map(Arc::from),
            };
            if rule.path_re.is_none() && rule.query_re.is_none() && rule.agent_re.is_none() && rule.headers.is_empty() {
                rules.plain.push(i);
            }
            rules.rules.push(rule);
        }
        rules.path.build()?;
        rules.query.build()?;
        rules.agent.build()?;
        for (_, set) in &mut rules.headers {
            set.build()?;
        }
        Ok(rules)
    }

    /// Walks the rules that can hold, in order. `log` rules log and count,
    /// and the walk goes on.
    pub(crate) fn check(&self, s: &Subject<'_>, metrics: &Metrics, route: &str) -> Result<Outcome, Rejection> {
        if self.rules.is_empty() {
            return Ok(Outcome::Pass);
        }
        // Every set runs once; a rule with a regex can only hold if one of
        // its patterns matched, so a request that matches no pattern (nearly
        // all of them) walks only the plain rules.
        let seen = self.run(s);
        let mut candidates;
        let order: &[usize] = if seen.is_empty() {
            &self.plain
        } else {
            candidates = self.plain.clone();
            for (set, m) in [(&self.path, &seen.path), (&self.query, &seen.query), (&self.agent, &seen.agent)] {
                if let Some(m) = m {
                    candidates.extend(m.iter().map(|j| set.owners[j]));
                }
            }
            for (h, flags) in &seen.headers {
                let owners = &self.headers[*h].1.owners;
                candidates.extend(flags.iter().enumerate().filter(|(_, f)| **f).map(|(j, _)| owners[j]));
            }
            candidates.sort_unstable();
            candidates.dedup();
            &candidates
        };
        for &i in order {
            let rule = &self.rules[i];
            if !self.holds(rule, s, &seen) {
                continue;
            }
            match rule.action {
                RuleAction::Allow => return Ok(Outcome::Allowed),
                RuleAction::Deny => {
                    tracing::debug!(target: "relais::guard", rule = %rule.name, client = %s.ip, path = s.path, "denied by rule");
                    return Err(Rejection::new(Reason::Rule, rule.status).body(rule.body.clone()).rule(&rule.name));
                }
                RuleAction::Log => {
                    metrics.guard(Reason::Rule, route, true);
                    tracing::info!(
                        target: "relais::guard",
                        rule = %rule.name,
                        client = %s.ip,
                        method = %s.method,
                        path = s.path,
                        "rule matched (log only)"
                    );
                }
            }
        }
        Ok(Outcome::Pass)
    }

    /// Runs every set against its part of the request.
    fn run(&self, s: &Subject<'_>) -> Seen {
        let agent = || s.headers.get(http::header::USER_AGENT)?.to_str().ok();
        let mut seen = Seen {
            path: self.path.matches(s.path),
            query: self.query.matches(s.query.unwrap_or("")),
            // No User-Agent matches no pattern: `^$` is for an empty one.
            agent: self.agent.set.as_ref().and_then(|_| self.agent.matches(agent()?)),
            headers: Vec::new(),
        };
        for (h, (name, set)) in self.headers.iter().enumerate() {
            // Every value of the header is tried; a value that is not text matches nothing.
            let mut flags: Option<Vec<bool>> = None;
            for v in s.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
                let Some(m) = set.matches(v) else { continue };
                let acc = flags.get_or_insert_with(|| vec![false; set.patterns.len()]);
                for j in m.iter() {
                    acc[j] = true;
                }
            }
            if let Some(flags) = flags {
                seen.headers.push((h, flags));
            }
        }
        seen
    }

    fn holds(&self, r: &Rule, s: &Subject<'_>, seen: &Seen) -> bool {
        if !r.methods.is_empty() && !r.methods.contains(s.method) {
            return false;
        }
        let named = |p: &str| p == s.path || p == super::without_parameters(s.path);
        if r.path.as_deref().is_some_and(|p| !named(p)) || r.prefix.as_deref().is_some_and(|p| !covers(p, s.path)) {
            return false;
        }
        if r.cidr.as_ref().is_some_and(|c| !c.contains(s.ip)) {
            return false;
        }
        let hit = |m: &Option<SetMatches>, i: Option<usize>| i.is_none_or(|i| m.as_ref().is_some_and(|m| m.matched(i)));
        if !hit(&seen.path, r.path_re) || !hit(&seen.query, r.query_re) || !hit(&seen.agent, r.agent_re) {
            return false;
        }
        r.headers.iter().all(|&(h, i)| seen.headers.iter().any(|(at, flags)| *at == h && flags[i]))
    }
}

/// A `path_prefix` holds for the paths that start with it (a plain string
/// prefix: `/wp-` covers `/wp-login.php`), and one that ends in `/` also for
/// the directory itself: a rule on `/private/` holds for `/private`, which a
/// route on `/private/` redirects and another route would otherwise take.
/// A `path` holds for its path and for it with parameters (`/login;x`, which
/// servlet containers read as `/login`); so does a directory.
fn covers(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix) || prefix.strip_suffix('/').is_some_and(|dir| dir == super::without_parameters(path))
}

/// Which patterns matched this request; `None` and absent mean none did.
struct Seen {
    path: Option<SetMatches>,
    query: Option<SetMatches>,
    agent: Option<SetMatches>,
    headers: Vec<(usize, Vec<bool>)>,
}

impl Seen {
    fn is_empty(&self) -> bool {
        self.path.is_none() && self.query.is_none() && self.agent.is_none() && self.headers.is_empty()
    }
}
