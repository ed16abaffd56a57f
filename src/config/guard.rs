//! `[guard]`, `[[limit_req]]`, `[[limit_conn]]` and a route's `guard`: what a
//! request must respect before it reaches routing, the cache or the origin.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use http::StatusCode;

use super::{Config, ConfigError, Dur, ErrorStatus, FieldName, Size};

/// `[guard]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// A request body that sends nothing for this long is cut off with 408
    /// (the client's fault; the origin is not blamed). Default 30s (nginx's
    /// client_body_timeout).
    pub body_timeout: Dur,
    /// A request body slower than this is cut off with 408: the time spent
    /// waiting for it may reach `body_timeout` plus one second per this many
    /// bytes received (Apache mod_reqtimeout's `MinRate`). `0` turns it off.
    /// Default 500 (bytes per second).
    pub body_min_rate: Size,
    /// The client's address behind trusted proxies. Default: the peer's.
    pub real_ip: Option<RealIp>,
    /// Addresses that pass (checked first).
    pub allow: Cidrs,
    /// Addresses refused with `deny_status`.
    pub deny: Cidrs,
    /// Status for a refused address. Default 403.
    pub deny_status: ErrorStatus,
    /// Request rules, in order, before the routes' own.
    pub rules: Vec<RuleConfig>,
    /// A TOML file of more `[[rules]]`, checked after `rules`; read with the
    /// configuration and again on every reload. Relative to the configuration file's folder.
    pub rules_file: Option<PathBuf>,
    /// The rules read from `rules_file`.
    #[serde(skip)]
    pub file_rules: Vec<RuleConfig>,
    /// Longer request targets get 414. Default 8KiB.
    pub max_uri_length: Size,
    /// Paths are normalised before routing, rules and the cache key, and sent so
    /// upstream. Default true.
    pub normalize_path: bool,
    /// With `normalize_path`: `//a` is `/a` (nginx's merge_slashes). Default true.
    pub merge_slashes: bool,
    /// `%2F` and `%5C` in a path get 400 (Apache's AllowEncodedSlashes Off). Default true.
    pub reject_encoded_slashes: bool,
    /// A kept-alive connection is closed after this many requests. Default 1000
    /// (nginx's keepalive_requests).
    pub max_requests_per_connection: u64,
    /// HTTP/2 streams open at once per connection. Default 100.
    pub http2_max_concurrent_streams: u32,
    /// Zones of `[[limit_req]]` applied to every route.
    pub limit_req: Vec<String>,
    /// Zones of `[[limit_conn]]` applied to every route.
    pub limit_conn: Vec<String>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            body_timeout: Dur::secs(30),
            body_min_rate: Size(500),
            real_ip: None,
            allow: Cidrs::default(),
            deny: Cidrs::default(),
            deny_status: ErrorStatus::new(StatusCode::FORBIDDEN),
            rules: Vec::new(),
            rules_file: None,
            file_rules: Vec::new(),
            max_uri_length: Size(8 * 1024),
            normalize_path: true,
            merge_slashes: true,
            reject_encoded_slashes: true,
            max_requests_per_connection: 1000,
            http2_max_concurrent_streams: 100,
            limit_req: Vec::new(),
            limit_conn: Vec::new(),
        }
    }
}

/// `real_ip = { trusted = ["10.0.0.0/8"], header = "x-forwarded-for" }`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RealIp {
    /// Proxies whose word about the client is taken.
    pub trusted: Cidrs,
    /// `x-forwarded-for` (default: the rightmost address that is not trusted) or
    /// a header holding one address (`x-real-ip`).
    #[serde(default = "xff")]
    pub header: FieldName,
}

fn xff() -> FieldName {
    FieldName(http::HeaderName::from_static("x-forwarded-for"))
}

/// A route's `guard = { allow, deny, rules }`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteGuard {
    pub allow: Cidrs,
    pub deny: Cidrs,
    pub rules: Vec<RuleConfig>,
}

/// Address blocks: `10.0.0.0/8`, `2001:db8::/32`, single addresses, and
/// `all` (every IPv4 and IPv6 address, as nginx's `deny all`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Cidrs(pub Vec<ipnet::IpNet>);

impl TryFrom<Vec<String>> for Cidrs {
    type Error = String;
    fn try_from(list: Vec<String>) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(list.len());
        for s in &list {
            let t = s.trim();
            if t == "all" {
                nets.push("0.0.0.0/0".parse().expect("a valid block"));
                nets.push("::/0".parse().expect("a valid block"));
            } else if let Ok(net) = t.parse::<ipnet::IpNet>() {
                nets.push(net.trunc());
            } else {
                let ip = t.parse::<std::net::IpAddr>().map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
                nets.push(ipnet::IpNet::from(ip));
            }
        }
        Ok(Cidrs(nets))
    }
}

impl Cidrs {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a block holds `ip` (an IPv4-mapped IPv6 address as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// One request rule: every condition given must hold; the first rule that
/// holds decides.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// For logs and the access log: `rules[3]` when not given.
    pub name: Option<String>,
    /// One method or a list.
    pub method: Methods,
    /// The path equals this.
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub query_regex: Option<String>,
    /// Header name → regex its value must match (`""`: present, `"^v$"`: equal).
    pub header: std::collections::BTreeMap<FieldName, String>,
    pub user_agent_regex: Option<String>,
    /// The client's address is in one of these.
    pub cidr: Cidrs,
    /// `deny` (default), `allow` (skip the remaining rules), `log` (dry run).
    pub action: RuleAction,
    /// With `deny`. Default 403.
    pub status: Option<ErrorStatus>,
    /// With `deny`: the body. Default: the status line.
    pub body: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    #[default]
    Deny,
    Allow,
    Log,
}

/// One method or a list: `"POST"`, `["GET", "HEAD"]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "OneOrMany")]
pub struct Methods(pub Vec<http::Method>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<OneOrMany> for Methods {
    type Error = String;
    fn try_from(raw: OneOrMany) -> Result<Self, String> {
        let names = match raw {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        let method = |n: String| {
            let upper = n.trim().to_ascii_uppercase();
            http::Method::from_bytes(upper.as_bytes()).map_err(|_| format!("{n:?} is not a method name"))
        };
        names.into_iter().map(method).collect::<Result<Vec<_>, _>>().map(Methods)
    }
}

/// `[[limit_req]]`: a request rate per key, nginx's limit_req_zone + limit_req.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitReqConfig {
    pub name: String,
    /// `ip`, `header:NAME`, `route`, `path`, or several joined by `+` (`ip+path`).
    #[serde(default)]
    pub key: LimitKey,
    /// `10r/s`, `600r/m`.
    pub rate: Rate,
    /// Requests over the rate that wait their turn (or pass, with `nodelay`). Default 0.
    #[serde(default)]
    pub burst: u32,
    /// Excess within `burst` passes at once. Default false (it waits).
    #[serde(default)]
    pub nodelay: bool,
    /// The first this many excess requests pass at once, later ones wait. Default 0.
    #[serde(default)]
    pub delay: u32,
    /// Status for excess requests. Default 429 (nginx: 503).
    #[serde(default = "too_many")]
    pub status: ErrorStatus,
    /// Count and log, refuse nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Keys remembered at most; the coldest go first. Default 100000.
    #[serde(default = "keys")]
    pub max_keys: u64,
    /// Cache hits count against the rate (default); false: only requests to the origin.
    #[serde(default = "yes")]
    pub count_hits: bool,
}

/// `[[limit_conn]]`: requests in progress per key, nginx's limit_conn.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitConnConfig {
    pub name: String,
    #[serde(default)]
    pub key: LimitKey,
    /// Requests in progress at once per key.
    pub max: u32,
    /// Default 503 (nginx's).
    #[serde(default = "unavailable")]
    pub status: ErrorStatus,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default = "keys")]
    pub max_keys: u64,
}

fn too_many() -> ErrorStatus {
    ErrorStatus::new(StatusCode::TOO_MANY_REQUESTS)
}
fn unavailable() -> ErrorStatus {
    ErrorStatus::new(StatusCode::SERVICE_UNAVAILABLE)
}
fn keys() -> u64 {
    100_000
}
fn yes() -> bool {
    true
}

/// What a limit counts by.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct LimitKey(pub Vec<KeyPart>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    Ip,
    Header(http::HeaderName),
    Route,
    Path,
}

impl Default for LimitKey {
    fn default() -> Self {
        LimitKey(vec![KeyPart::Ip])
    }
}

impl TryFrom<String> for LimitKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let part = |p: &str| match p.trim() {
            "ip" => Ok(KeyPart::Ip),
            "route" => Ok(KeyPart::Route),
            "path" => Ok(KeyPart::Path),
            other => match other.strip_prefix("header:") {
                Some(name) => http::HeaderName::try_from(name.trim())
                    .map(KeyPart::Header)
                    .map_err(|_| format!("{name:?} is not a header name")),
                None => Err(format!("{other:?}: a key is ip, header:NAME, route, path, or several joined by +")),
            },
        };
        s.split('+').map(part).collect::<Result<Vec<_>, _>>().map(LimitKey)
    }
}

/// A rate such as `10r/s` or `600r/m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    pub requests: u32,
    pub per: std::time::Duration,
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a rate such as \"10r/s\" or \"600r/m\"");
        let (n, unit) = s.trim().split_once("r/").ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => std::time::Duration::from_secs(1),
            "m" => std::time::Duration::from_secs(60),
            "h" => std::time::Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if requests == 0 {
            return Err(format!("{s:?}: the rate must be more than 0"));
        }
        Ok(Rate { requests, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}r/{unit}", self.requests)
    }
}

/// A rules file: `[[rules]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RulesFile {
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl GuardConfig {
    /// Reads `rules_file` (already resolved against the configuration file's folder).
    pub(super) fn read_rules(&mut self) -> Result<(), ConfigError> {
        use figment::providers::{Format, Toml};
        let Some(path) = &self.rules_file else { return Ok(()) };
        if !path.is_file() {
            let (file, key, reason) = (path.clone(), "guard.rules_file".into(), "does not exist".into());
            return Err(ConfigError::File { file, key, reason });
        }
        let parsed: RulesFile = figment::Figment::from(Toml::file_exact(path)).extract().map_err(|e| {
            let name = path.display().to_string();
            ConfigError::Parse(e.into_iter().map(|e| super::describe(&e, &name)).collect::<Vec<_>>().join("\n"))
        })?;
        self.file_rules = parsed.rules;
        Ok(())
    }
}

/// What the types cannot check in `[guard]`, the zones and the routes' guards:
/// zone names, regexes and ranges.
pub(super) fn validate(c: &Config, bad: &dyn Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
    let g = &c.guard;
    if g.max_uri_length.bytes() < 256 {
        return Err(bad("guard.max_uri_length".into(), "must be at least 256B".into()));
    }
    if g.max_requests_per_connection == 0 {
        return Err(bad("guard.max_requests_per_connection".into(), "must be at least 1".into()));
    }
    if g.http2_max_concurrent_streams == 0 {
        return Err(bad("guard.http2_max_concurrent_streams".into(), "must be at least 1".into()));
    }
    if let Some(r) = &g.real_ip
        && r.trusted.is_empty()
    {
        return Err(bad("guard.real_ip.trusted".into(), "needs at least one address or block".into()));
    }
    lists(bad, "guard", &g.allow, &g.deny)?;
    lists(bad, "admin", &c.admin.allow, &c.admin.deny)?;
    rules(bad, "guard.rules", &g.rules)?;
    if let Some(file) = &g.rules_file {
        // Errors in the rules file name that file.
        let in_file =
            |key: String, msg: String| ConfigError::Invalid { source_name: file.display().to_string(), key, msg };
        rules(&in_file, "rules", &g.file_rules)?;
    }
    let mut names = std::collections::HashSet::new();
    for (i, z) in c.limit_req.iter().enumerate() {
        let key = |k: &str| format!("limit_req[{i}].{k}");
        if !names.insert(("req", z.name.as_str())) {
            return Err(bad(key("name"), format!("{:?} is defined twice", z.name)));
        }
        if z.burst > 100_000 {
            return Err(bad(key("burst"), "must be at most 100000".into()));
        }
        if z.delay > z.burst {
            return Err(bad(key("delay"), format!("{} is more than burst {}", z.delay, z.burst)));
        }
        if z.nodelay && z.delay > 0 {
            return Err(bad(key("delay"), "nodelay and delay exclude each other".into()));
        }
        if z.max_keys == 0 {
            return Err(bad(key("max_keys"), "must be at least 1".into()));
        }
    }
    for (i, z) in c.limit_conn.iter().enumerate() {
        let key = |k: &str| format!("limit_conn[{i}].{k}");
        if !names.insert(("conn", z.name.as_str())) {
            return Err(bad(key("name"), format!("{:?} is defined twice", z.name)));
        }
        if z.max == 0 {
            return Err(bad(key("max"), "must be at least 1".into()));
        }
        if z.max_keys == 0 {
            return Err(bad(key("max_keys"), "must be at least 1".into()));
        }
    }
    let zone = |kind: &str, key: String, used: &[String]| {
        let known: Vec<&str> = names.iter().filter(|(k, _)| *k == kind).map(|(_, n)| *n).collect();
        match used.iter().find(|n| !known.contains(&n.as_str())) {
            Some(n) => Err(bad(key, format!("unknown zone {n:?} (defined: {})", known.join(", ")))),
            None => Ok(()),
        }
    };
    zone("req", "guard.limit_req".into(), &g.limit_req)?;
    zone("conn", "guard.limit_conn".into(), &g.limit_conn)?;
    for (i, r) in c.routes.iter().enumerate() {
        zone("req", format!("routes[{i}].limit_req"), &r.limit_req)?;
        zone("conn", format!("routes[{i}].limit_conn"), &r.limit_conn)?;
        lists(bad, &format!("routes[{i}].guard"), &r.guard.allow, &r.guard.deny)?;
        rules(bad, &format!("routes[{i}].guard.rules"), &r.guard.rules)?;
    }
    Ok(())
}

/// The same block in `allow` and `deny` would leave the answer to an accident of order.
fn lists(
    bad: &dyn Fn(String, String) -> ConfigError,
    at: &str,
    allow: &Cidrs,
    deny: &Cidrs,
) -> Result<(), ConfigError> {
    match allow.0.iter().find(|n| deny.0.contains(n)) {
        Some(n) => Err(bad(format!("{at}.deny"), format!("{n} is in allow too"))),
        None => Ok(()),
    }
}

fn rules(bad: &dyn Fn(String, String) -> ConfigError, at: &str, rules: &[RuleConfig]) -> Result<(), ConfigError> {
    for (i, r) in rules.iter().enumerate() {
        let key = |k: &str| format!("{at}[{i}].{k}");
        let regexes =
            [("path_regex", &r.path_regex), ("query_regex", &r.query_regex), ("user_agent_regex", &r.user_agent_regex)];
        for (k, re) in regexes {
            if let Some(re) = re {
                regex_ok(re).map_err(|e| bad(key(k), e))?;
            }
        }
        for (name, re) in &r.header {
            regex_ok(re).map_err(|e| bad(key(&format!("header.{name}")), e))?;
        }
        if let Some(p) = r.path.as_ref().or(r.path_prefix.as_ref())
            && !p.starts_with('/')
        {
            return Err(bad(
                key(if r.path.is_some() { "path" } else { "path_prefix" }),
                format!("{p:?} must start with '/'"),
            ));
        }
        if r.status.is_some() && r.action != RuleAction::Deny {
            return Err(bad(key("status"), "only a deny rule has a status".into()));
        }
        if r.body.as_ref().is_some_and(|b| b.len() > 4096) {
            return Err(bad(key("body"), "must be at most 4KiB".into()));
        }
    }
    Ok(())
}

/// Compiles `re` as the guard will, with the same size limit.
pub(super) fn regex_ok(re: &str) -> Result<(), String> {
    regex::RegexBuilder::new(re).size_limit(REGEX_SIZE).build().map(|_| ()).map_err(|e| e.to_string())
}

/// Compiled size allowed per regex: a typo cannot make a 100 MB automaton.
pub const REGEX_SIZE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_keys_and_blocks_parse_or_say_why() {
        assert_eq!(Rate::try_from("10r/s".to_string()).unwrap().requests, 10);
        assert_eq!(Rate::try_from("600r/m".to_string()).unwrap().per, std::time::Duration::from_secs(60));
        for bad in ["10", "10r/d", "0r/s", "r/s", "ten r/s"] {
            assert!(Rate::try_from(bad.to_string()).is_err(), "{bad}");
        }
        let key = LimitKey::try_from("ip+header:X-Api-Key".to_string()).unwrap();
        assert_eq!(key.0, [KeyPart::Ip, KeyPart::Header(http::HeaderName::from_static("x-api-key"))]);
        assert!(LimitKey::try_from("cookie:x".to_string()).is_err());
        let cidrs = |l: &[&str]| Cidrs::try_from(l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let got = cidrs(&["10.1.2.3/8", "::1", "all"]).unwrap();
        let shown: Vec<String> = got.0.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128", "0.0.0.0/0", "::/0"]);
        assert!(cidrs(&["10.0.0.0/33"]).is_err());
        assert!(cidrs(&["example.com"]).is_err());
        let m: Methods = serde_json::from_str(r#"["get", "POST"]"#).unwrap();
        assert_eq!(m.0, [http::Method::GET, http::Method::POST]);
        assert!(serde_json::from_str::<Methods>(r#""GE T""#).is_err());
    }
}
