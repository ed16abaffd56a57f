//! Configuration: one typed tree, read from a TOML file and then from
//! `RELAIS_*` environment variables (`__` separates levels), validated once.
//!
//! The names here are a contract with operators and tools (see the README's
//! configuration reference): rename nothing without a migration note. Unknown
//! keys are errors, and every error names its source (file or environment)
//! and the key.

mod units;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use units::{Dur, Size};

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub guard: GuardConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The file this was read from, for reloads.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[server]`: the client-facing listeners.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to accept HTTP/1.1 and h2c on. Default `["127.0.0.1:8080"]`.
    pub listen: Vec<SocketAddr>,
    /// A client must send a request's complete header within this time
    /// (slowloris defence), counted from the connection's first byte or the end
    /// of its previous request; an HTTP/2 client must send its preface within
    /// it. On HTTP/1 the clock also runs while a keep-alive connection is idle,
    /// so this is its idle timeout too. Default 10s.
    pub header_read_timeout: Dur,
    /// A connection with no request in flight is closed after this (HTTP/2
    /// with GOAWAY), however often it pings. Default 75s (nginx's keepalive_timeout).
    pub idle_timeout: Dur,
    /// Largest request header block; beyond it the client gets 431. Default 64KiB.
    pub max_header_size: Size,
    /// Most request header fields; beyond it the client gets 431. Default 100.
    pub max_headers: usize,
    /// Largest request body; beyond it the client gets 413. Default: no limit.
    pub max_request_body: Option<Size>,
    /// On SIGTERM, in-flight requests get this long to finish. Default 30s.
    pub grace_period: Dur,
    /// Response headers from the origin that clients never see.
    /// Default `["server", "x-powered-by"]`.
    pub hide_headers: Vec<String>,
    /// Add a `Via` header in both directions. Default true.
    pub via: bool,
    /// Worker threads. Default: one per available core.
    pub workers: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(75),
            max_header_size: Size(64 * 1024),
            max_headers: 100,
            max_request_body: None,
            grace_period: Dur::secs(30),
            hide_headers: vec!["server".into(), "x-powered-by".into()],
            via: true,
            workers: None,
        }
    }
}

/// `[admin]`: the operator's listener (purge, stats, reload).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9090`.
    pub listen: SocketAddr,
    /// Bearer token required by every admin endpoint but `/health`.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: SocketAddr::from(([127, 0, 0, 1], 9090)), token: None }
    }
}

/// `[guard]`: what a request must respect before it reaches routing.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// A request body that sends nothing for this long is cut off with 408
    /// (the client's fault; the origin is not blamed). Default 30s (nginx's
    /// client_body_timeout).
    pub body_timeout: Dur,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { body_timeout: Dur::secs(30) }
    }
}

/// `[cache]`: the two tiers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory tier budget (bodies + headers). Default 256MiB.
    pub memory_capacity: Size,
    /// Directory of the disk tier. Default `./relais-cache`.
    pub disk_path: PathBuf,
    /// Disk tier budget. Default 4GiB.
    pub disk_capacity: Size,
    /// Larger bodies are streamed through and not stored. Default 64MiB.
    pub max_object_size: Size,
    /// A request waiting for another's fetch of the same URL goes to the origin
    /// itself after this. Default 10s.
    pub lock_timeout: Dur,
    /// Bodies waiting to be written to disk, at most; past that a new entry is kept in
    /// memory only, so a slow disk cannot grow memory without bound. Default 32MiB.
    pub disk_write_backlog: Size,
    /// Pass the origin's `Surrogate-Key` and `Cache-Tag` headers on to clients. Default false.
    pub expose_tag_headers: bool,
    /// Bodies being fetched to be stored are held in memory up to this in total
    /// (at most 4GiB); a fetch that does not fit streams through unstored. Default 128MiB.
    pub fill_memory: Size,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_capacity: Size::mib(256),
            disk_path: PathBuf::from("./relais-cache"),
            disk_capacity: Size::mib(4096),
            max_object_size: Size::mib(64),
            lock_timeout: Dur::secs(10),
            disk_write_backlog: Size::mib(32),
            expose_tag_headers: false,
            fill_memory: Size::mib(128),
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`. Default `human`.
    pub format: LogFormat,
    /// One line per request on target `relais::access`. Default true.
    pub access: bool,
    /// Filter when `RUST_LOG` is not set. Default `info`.
    pub level: String,
    /// `auto` (default): colour only when stderr is a terminal. `always`, `never`.
    pub color: LogColor,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogColor {
    #[default]
    Auto,
    Always,
    Never,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Human, access: true, level: "info".into(), color: LogColor::Auto }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// `[upstreams.NAME]`: a pool of origin servers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `"host:port"` or `{ address = "host:port", weight = 3 }`.
    pub servers: Vec<ServerEntry>,
    /// `round_robin` (weighted, the default) or `least_conn`.
    #[serde(default)]
    pub balance: Balance,
    /// Default 5s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time until the response header arrives; then 504. Default 60s.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    /// Idle pooled connections are closed after this. Default 90s.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Most idle pooled connections per server. Default 256.
    #[serde(default = "default_max_idle")]
    pub max_idle: usize,
    /// Failures (connect error or timeout) before a server is skipped. Default 1.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// How long a failed server is skipped. Default 10s.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: Dur,
}

fn default_connect_timeout() -> Dur {
    Dur::secs(5)
}
fn default_response_timeout() -> Dur {
    Dur::secs(60)
}
fn default_idle_timeout() -> Dur {
    Dur::secs(90)
}
fn default_max_idle() -> usize {
    256
}
fn default_max_fails() -> u32 {
    1
}
fn default_fail_timeout() -> Dur {
    Dur::secs(10)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEntry {
    Address(String),
    Weighted { address: String, weight: u32 },
}

fn one() -> u32 {
    1
}

/// By hand rather than `untagged`, whose only error is "did not match any variant".
impl<'de> Deserialize<'de> for ServerEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Weighted {
            address: String,
            #[serde(default = "one")]
            weight: u32,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ServerEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"host:port\" or { address = \"host:port\", weight = 1..1000 }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ServerEntry, E> {
                Ok(ServerEntry::Address(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ServerEntry, A::Error> {
                let w = Weighted::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ServerEntry::Weighted { address: w.address, weight: w.weight })
            }
        }
        d.deserialize_any(V)
    }
}

impl ServerEntry {
    pub fn address(&self) -> &str {
        match self {
            ServerEntry::Address(a) | ServerEntry::Weighted { address: a, .. } => a,
        }
    }
    pub fn weight(&self) -> u32 {
        match self {
            ServerEntry::Address(_) => 1,
            ServerEntry::Weighted { weight, .. } => *weight,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
}

/// `[[routes]]`: which requests go where, and how they are treated.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact host or `*.example.com`; absent matches any host.
    pub host: Option<String>,
    /// Path prefix; the longest match wins. Default `/`.
    #[serde(default = "root")]
    pub path: String,
    /// Request headers that must all match: a value, or `*` for "present".
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Name of an `[upstreams.NAME]` table.
    pub upstream: String,
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
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
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
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CookieRequests {
    #[default]
    Cache,
    Bypass,
}

impl CacheRules {
    pub fn to_rules(&self) -> cache_policy::Rules {
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
        }
    }
}

/// A configuration that could not be loaded: the message names the source and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{0}")]
    Parse(String),
    #[error("{source_name}: {key}: {msg}")]
    Invalid { source_name: String, key: String, msg: String },
}

impl Config {
    /// Reads `path`, then `RELAIS_*` variables over it, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(env());
        let mut config = Self::extract(figment, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses a TOML string (no environment); `name` is used in errors.
    pub fn from_toml(toml: &str, name: &str) -> Result<Config, ConfigError> {
        Self::extract(Figment::from(Toml::string(toml)), name)
    }

    fn extract(figment: Figment, name: &str) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let lines: Vec<String> = e.into_iter().map(|e| describe(&e, name)).collect();
            ConfigError::Parse(lines.join("\n"))
        })?;
        config.validate(name)?;
        Ok(config)
    }

    /// Checks what types cannot: references, ranges, header syntax.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |key: String, msg: String| ConfigError::Invalid { source_name: name.to_string(), key, msg };
        if self.server.listen.is_empty() {
            return Err(bad("server.listen".into(), "needs at least one address".into()));
        }
        for (i, a) in self.server.listen.iter().enumerate() {
            if let Some(j) = self.server.listen[..i].iter().position(|b| overlaps(a, b)) {
                let b = self.server.listen[j];
                return Err(bad(format!("server.listen[{i}]"), format!("{a} overlaps server.listen[{j}] ({b})")));
            }
            if overlaps(a, &self.admin.listen) {
                return Err(bad(
                    "admin.listen".into(),
                    format!("{} is also server.listen[{i}] ({a})", self.admin.listen),
                ));
            }
        }
        if self.admin.token.is_none() && !self.admin.listen.ip().is_loopback() {
            return Err(bad(
                "admin.token".into(),
                format!(
                    "admin.listen {} is not a loopback address: set a token (or RELAIS_ADMIN__TOKEN)",
                    self.admin.listen
                ),
            ));
        }
        if self.admin.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(bad("admin.token".into(), "is empty".into()));
        }
        if self.cache.fill_memory.bytes() > u64::from(u32::MAX) {
            return Err(bad("cache.fill_memory".into(), format!("{} is more than 4GiB", self.cache.fill_memory)));
        }
        let positive = [
            ("server.header_read_timeout", self.server.header_read_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("guard.body_timeout", self.guard.body_timeout),
        ];
        for (key, d) in positive {
            if d.get().is_zero() {
                return Err(bad(key.into(), "must be more than 0".into()));
            }
        }
        if !(1..=1000).contains(&self.server.max_headers) {
            return Err(bad("server.max_headers".into(), "must be between 1 and 1000".into()));
        }
        if self.server.max_header_size.bytes() < 8192 {
            return Err(bad("server.max_header_size".into(), "must be at least 8KiB".into()));
        }
        for (i, h) in self.server.hide_headers.iter().enumerate() {
            http::HeaderName::try_from(h.as_str())
                .map_err(|_| bad(format!("server.hide_headers[{i}]"), format!("{h:?} is not a header name")))?;
        }
        for (up, u) in &self.upstreams {
            if u.servers.is_empty() {
                return Err(bad(format!("upstreams.{up}.servers"), "needs at least one server".into()));
            }
            for (i, s) in u.servers.iter().enumerate() {
                let key = format!("upstreams.{up}.servers[{i}]");
                check_authority(s.address()).map_err(|m| bad(key.clone(), m))?;
                if s.weight() == 0 || s.weight() > 1000 {
                    return Err(bad(key, "weight must be between 1 and 1000".into()));
                }
            }
            if u.max_fails == 0 {
                return Err(bad(format!("upstreams.{up}.max_fails"), "must be at least 1".into()));
            }
            for (key, d) in [
                ("connect_timeout", u.connect_timeout),
                ("response_timeout", u.response_timeout),
                ("idle_timeout", u.idle_timeout),
            ] {
                if d.get().is_zero() {
                    return Err(bad(format!("upstreams.{up}.{key}"), "must be more than 0".into()));
                }
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            if !self.upstreams.contains_key(&r.upstream) {
                let known: Vec<&str> = self.upstreams.keys().map(String::as_str).collect();
                return Err(bad(
                    key("upstream"),
                    format!("unknown upstream {:?} (defined: {})", r.upstream, known.join(", ")),
                ));
            }
            if !r.path.starts_with('/') {
                return Err(bad(key("path"), format!("{:?} must start with '/'", r.path)));
            }
            if let Some(h) = &r.host {
                let bare = h.strip_prefix("*.").unwrap_or(h);
                if bare.is_empty() || bare.contains(['*', '/', ' ']) {
                    return Err(bad(key("host"), format!("{h:?} is not a host name or *.suffix pattern")));
                }
            }
            for (n, v) in &r.headers {
                http::HeaderName::try_from(n.as_str())
                    .map_err(|_| bad(key("headers"), format!("{n:?} is not a header name")))?;
                http::HeaderValue::try_from(v.as_str())
                    .map_err(|_| bad(key(&format!("headers.{n}")), "not a valid header value".into()))?;
            }
            for (part, rules) in [("request_headers", &r.request_headers), ("response_headers", &r.response_headers)] {
                for (n, v) in rules.set.iter().chain(&rules.add) {
                    http::HeaderName::try_from(n.as_str())
                        .map_err(|_| bad(key(part), format!("{n:?} is not a header name")))?;
                    http::HeaderValue::try_from(v.as_str())
                        .map_err(|_| bad(key(&format!("{part}.{n}")), "not a valid header value".into()))?;
                }
                for n in &rules.remove {
                    http::HeaderName::try_from(n.as_str())
                        .map_err(|_| bad(key(&format!("{part}.remove")), format!("{n:?} is not a header name")))?;
                }
            }
            let c = &r.cache;
            if let (Some(min), Some(max)) = (c.min_ttl, c.max_ttl)
                && min > max
            {
                return Err(bad(key("cache.min_ttl"), format!("{min} is more than max_ttl {max}")));
            }
        }
        Ok(())
    }

    /// Most worker threads worth running.
    pub fn workers(&self) -> usize {
        self.server.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
    }

    pub fn grace_period(&self) -> Duration {
        self.server.grace_period.get()
    }
}

/// `RELAIS_SECTION__KEY` variables. Only names with `__` are configuration,
/// so unrelated variables that share the prefix (`RELAIS_BIN`) are left alone.
fn env() -> Env {
    Env::prefixed("RELAIS_").filter(|k| k.as_str().contains("__")).split("__")
}

/// `host:port` with a port; hosts are names or IP literals.
fn check_authority(s: &str) -> Result<(), String> {
    if s.contains('@') {
        return Err(format!("{s:?}: user info is not allowed"));
    }
    let _: http::uri::Authority = s.parse().map_err(|_| format!("{s:?} is not host:port"))?;
    // After the last ':' outside an IPv6 literal's brackets.
    let port = s.rsplit_once(':').filter(|(host, _)| !host.starts_with('[') || host.ends_with(']')).map(|(_, p)| p);
    match port {
        None | Some("") => Err(format!("{s:?} needs a port")),
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{s:?}: port {p} is out of range (1-65535)")),
            Ok(_) => Ok(()),
        },
    }
}

/// Two listen addresses that cannot both be bound: the same port on the same
/// address, or on any address when one is a wildcard. Port 0 picks a free port.
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// One figment error as "SOURCE: key: what is wrong".
fn describe(e: &figment::Error, file: &str) -> String {
    let key = if e.path.is_empty() { "(top level)".to_string() } else { e.path.join(".") };
    let source = match e.metadata.as_ref() {
        Some(m) if m.name.contains("environment") => {
            format!("environment variable RELAIS_{}", e.path.join("__").to_uppercase())
        }
        _ => file.to_string(),
    };
    format!("{source}: {key}: {}", e.kind)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;
    use figment::Jail;

    const MINIMAL: &str = r#"
[upstreams.app]
servers = ["127.0.0.1:3000", { address = "127.0.0.1:3001", weight = 3 }]

[[routes]]
path = "/"
upstream = "app"
cache = { default_ttl = "1m", max_ttl = "1h" }
"#;

    #[test]
    fn minimal_file_gets_defaults() {
        let c = Config::from_toml(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.cache.memory_capacity, Size::mib(256));
        assert_eq!(c.upstreams["app"].servers[1].weight(), 3);
        assert_eq!(c.routes[0].cache.default_ttl, Some(Dur::secs(60)));
        assert!(c.routes[0].pass_host);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[cache]\nmemory_capacty = \"1MiB\"\n", "relais.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("relais.toml"), "{msg}");
        assert!(msg.contains("memory_capacty"), "{msg}");
    }

    #[test]
    fn bad_size_is_named() {
        let err = Config::from_toml("[cache]\nmemory_capacity = \"lots\"\n", "relais.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cache.memory_capacity") && msg.contains("lots"), "{msg}");
    }

    #[test]
    fn unknown_upstream_is_named() {
        let toml = "[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"b\"\n";
        let msg = Config::from_toml(toml, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("routes[0].upstream") && msg.contains("\"b\""), "{msg}");
    }

    #[test]
    fn server_without_port_is_rejected() {
        let toml = "[upstreams.a]\nservers=[\"localhost\"]\n";
        let msg = Config::from_toml(toml, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("upstreams.a.servers[0]"), "{msg}");
    }

    #[test]
    fn out_of_range_ports_and_bad_weights_are_said_plainly() {
        let msg =
            Config::from_toml("[upstreams.a]\nservers=[\"127.0.0.1:99999\"]\n", "x.toml").unwrap_err().to_string();
        assert!(msg.contains("upstreams.a.servers[0]") && msg.contains("out of range"), "{msg}");
        let msg = Config::from_toml("[upstreams.a]\nservers=[\"127.0.0.1:0\"]\n", "x.toml").unwrap_err().to_string();
        assert!(msg.contains("out of range"), "{msg}");
        for (weight, says) in [("-1", "-1"), ("\"3\"", "string"), ("0", "between 1 and 1000")] {
            let toml = format!("[upstreams.a]\nservers=[{{ address = \"127.0.0.1:1\", weight = {weight} }}]\n");
            let msg = Config::from_toml(&toml, "x.toml").unwrap_err().to_string();
            assert!(msg.contains("upstreams.a.servers") && msg.contains(says), "weight {weight}: {msg}");
            assert!(!msg.contains("untagged"), "{msg}");
        }
        let toml = "[upstreams.a]\nservers=[{ adress = \"127.0.0.1:1\" }]\n";
        let msg = Config::from_toml(toml, "x.toml").unwrap_err().to_string();
        assert!(msg.contains("adress"), "{msg}");
    }

    #[test]
    fn zero_timeouts_are_refused() {
        for (toml, key) in [
            ("[server]\nheader_read_timeout = \"0s\"\n", "server.header_read_timeout"),
            ("[server]\nidle_timeout = 0\n", "server.idle_timeout"),
            ("[guard]\nbody_timeout = \"0ms\"\n", "guard.body_timeout"),
            ("[upstreams.a]\nservers=[\"127.0.0.1:1\"]\nresponse_timeout = \"0s\"\n", "upstreams.a.response_timeout"),
            ("[upstreams.a]\nservers=[\"127.0.0.1:1\"]\nconnect_timeout = 0\n", "upstreams.a.connect_timeout"),
        ] {
            let msg = Config::from_toml(toml, "x.toml").unwrap_err().to_string();
            assert!(msg.contains(key) && msg.contains("more than 0"), "{msg}");
        }
    }

    #[test]
    fn listeners_that_cannot_all_be_bound_are_refused() {
        for (toml, key) in [
            ("[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n", "server.listen[1]"),
            ("[server]\nlisten = [\"0.0.0.0:8080\", \"127.0.0.1:8080\"]\n", "server.listen[1]"),
            ("[server]\nlisten = [\"127.0.0.1:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n", "admin.listen"),
            ("[admin]\nlisten = \"0.0.0.0:9090\"\n", "admin.token"),
            ("[admin]\ntoken = \" \"\n", "admin.token"),
        ] {
            let msg = Config::from_toml(toml, "x.toml").unwrap_err().to_string();
            assert!(msg.contains(key), "{toml}: {msg}");
        }
        let ok = "[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\", \"127.0.0.1:8081\"]\n[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"t\"\n";
        Config::from_toml(ok, "x.toml").unwrap();
    }

    #[test]
    fn environment_overrides_file() {
        Jail::expect_with(|jail| {
            jail.create_file("relais.toml", MINIMAL)?;
            jail.set_env("RELAIS_CACHE__MEMORY_CAPACITY", "1GiB");
            jail.set_env("RELAIS_ADMIN__TOKEN", "s3cret");
            let c = Config::load(Path::new("relais.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.cache.memory_capacity, Size(1 << 30));
            assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
            Ok(())
        });
    }

    #[test]
    fn unrelated_prefixed_variables_are_ignored() {
        Jail::expect_with(|jail| {
            jail.create_file("relais.toml", MINIMAL)?;
            jail.set_env("RELAIS_BIN", "target/release/relais");
            jail.set_env("RELAIS_LOG", "warn");
            Config::load(Path::new("relais.toml")).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        Jail::expect_with(|jail| {
            jail.create_file("relais.toml", MINIMAL)?;
            jail.set_env("RELAIS_CACHE__MAX_OBJECT_SIZE", "huge");
            let msg = Config::load(Path::new("relais.toml")).unwrap_err().to_string();
            assert!(msg.contains("RELAIS_CACHE__MAX_OBJECT_SIZE"), "{msg}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_names_the_path() {
        let msg = Config::load(Path::new("/nonexistent/relais.toml")).unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/relais.toml"), "{msg}");
    }
}
