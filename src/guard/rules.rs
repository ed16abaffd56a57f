//! Request rules, compiled once per configuration: every regex of one kind
//! (path, query, user agent, each header) goes into one `RegexSet`, run at
//! most once per request and only when a rule needs it; the rules are then
//! walked in order and the first that holds decides.

use std::sync::Arc;

use http::{HeaderName, Method, StatusCode};
use regex::{RegexSet, RegexSetBuilder, SetMatches};

use super::access::Access;
use super::{Rejection, Subject};
use crate::config::{RuleAction, RuleConfig};
use crate::metrics::{Metrics, Reason};

pub struct Rules {
    rules: Vec<Rule>,
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

/// The patterns of one kind, and which match this request (computed once, on demand).
#[derive(Default)]
struct Set {
    patterns: Vec<String>,
    set: Option<RegexSet>,
}

impl Set {
    fn add(&mut self, re: &str) -> usize {
        self.patterns.push(re.to_string());
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

    fn matches(&self, haystack: &str) -> Option<SetMatches> {
        self.set.as_ref().map(|s| s.matches(haystack))
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
    pub fn new(label: &str, configs: &[&RuleConfig]) -> Result<Rules, String> {
        let mut rules = Rules {
            rules: Vec::new(),
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
                headers.push((at, rules.headers[at].1.add(re)));
            }
            let status = c.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::FORBIDDEN);
            rules.rules.push(Rule {
                name: Arc::from(c.name.clone().unwrap_or_else(|| format!("{label}[{i}]"))),
                methods: c.method.0.clone(),
                path: c.path.clone(),
                prefix: c.path_prefix.clone(),
                path_re: c.path_regex.as_deref().map(|re| rules.path.add(re)),
                query_re: c.query_regex.as_deref().map(|re| rules.query.add(re)),
                agent_re: c.user_agent_regex.as_deref().map(|re| rules.agent.add(re)),
                headers,
                cidr: (!c.cidr.is_empty()).then(|| Access::new(&c.cidr.0, &[])),
                action: c.action,
                status,
                body: c.body.as_deref().map(Arc::from),
            });
        }
        rules.path.build()?;
        rules.query.build()?;
        rules.agent.build()?;
        for (_, set) in &mut rules.headers {
            set.build()?;
        }
        Ok(rules)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Walks the rules in order. `log` rules log and count, and the walk goes on.
    pub fn check(&self, s: &Subject<'_>, metrics: &Metrics, route: &str) -> Result<Outcome, Rejection> {
        if self.rules.is_empty() {
            return Ok(Outcome::Pass);
        }
        let mut seen = Seen::default();
        for rule in &self.rules {
            if !self.holds(rule, s, &mut seen) {
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

    fn holds(&self, r: &Rule, s: &Subject<'_>, seen: &mut Seen) -> bool {
        if !r.methods.is_empty() && !r.methods.contains(s.method) {
            return false;
        }
        if r.path.as_deref().is_some_and(|p| p != s.path) || r.prefix.as_deref().is_some_and(|p| !s.path.starts_with(p))
        {
            return false;
        }
        if r.cidr.as_ref().is_some_and(|c| !c.contains(s.ip)) {
            return false;
        }
        if let Some(i) = r.path_re
            && !hit(&mut seen.path, || self.path.matches(s.path), i)
        {
            return false;
        }
        if let Some(i) = r.query_re
            && !hit(&mut seen.query, || self.query.matches(s.query.unwrap_or("")), i)
        {
            return false;
        }
        if let Some(i) = r.agent_re {
            let agent = s.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok());
            // No User-Agent matches no pattern: `^$` is for an empty one.
            match agent {
                Some(agent) if hit(&mut seen.agent, || self.agent.matches(agent), i) => {}
                _ => return false,
            }
        }
        if seen.headers.len() < self.headers.len() {
            seen.headers.resize_with(self.headers.len(), || None);
        }
        for &(h, i) in &r.headers {
            let (name, set) = &self.headers[h];
            // Every value of the header is tried; a value that is not text matches nothing.
            let matched = hit(
                &mut seen.headers[h],
                || {
                    let values = s.headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
                    let mut any: Option<Vec<bool>> = None;
                    for v in values {
                        let m = set.matches(v)?;
                        let acc = any.get_or_insert_with(|| vec![false; set.patterns.len()]);
                        for j in m.iter() {
                            acc[j] = true;
                        }
                    }
                    any.map(Found::Flags)
                },
                i,
            );
            if !matched {
                return false;
            }
        }
        true
    }
}

/// The sets already run for this request.
#[derive(Default)]
struct Seen {
    path: Option<Option<Found>>,
    query: Option<Option<Found>>,
    agent: Option<Option<Found>>,
    headers: Vec<Option<Option<Found>>>,
}

enum Found {
    Set(SetMatches),
    Flags(Vec<bool>),
}

impl From<SetMatches> for Found {
    fn from(m: SetMatches) -> Self {
        Found::Set(m)
    }
}

/// Whether pattern `i` matched, running the set on first use.
fn hit<F: Into<Found>>(slot: &mut Option<Option<Found>>, run: impl FnOnce() -> Option<F>, i: usize) -> bool {
    let found = slot.get_or_insert_with(|| run().map(Into::into));
    match found {
        Some(Found::Set(m)) => m.matched(i),
        Some(Found::Flags(f)) => f.get(i).copied().unwrap_or(false),
        None => false,
    }
}
