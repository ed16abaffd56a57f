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
    /// (slowloris defence). On HTTP/1 the clock also runs while a keep-alive
    /// connection is idle, so this is the idle timeout too. Default 10s.
    pub header_read_timeout: Dur,
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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Human, access: true, level: "info".into() }
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

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServerEntry {
    Address(String),
    Weighted {
        address: String,
        #[serde(default = "one")]
        weight: u32,
    },
}

fn one() -> u32 {
    1
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
    let auth: http::uri::Authority = s.parse().map_err(|_| format!("{s:?} is not host:port"))?;
    if auth.port_u16().is_none() {
        return Err(format!("{s:?} needs a port"));
    }
    if s.contains('@') {
        return Err(format!("{s:?}: user info is not allowed"));
    }
    Ok(())
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
