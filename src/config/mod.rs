//! Configuration: one typed tree, read from a TOML file and then from
//! `RELAIS_*` environment variables (`__` separates levels), validated once.
//!
//! The names here are a contract with operators and tools (see the README's
//! configuration reference): rename nothing without a migration note. Unknown
//! keys are errors, and every error names its source (file or environment)
//! and the key.

mod auth;
mod buffering;
mod cache;
mod cache_key;
mod cluster;
mod compression;
mod edge;
mod files;
mod guard;
mod htpasswd;
mod log;
mod paths;
mod route;
mod server;
mod tls;
mod types;
mod units;
mod upstream;
mod warnings;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use auth::{AuthBasicConfig, AuthMethod, AuthPath, AuthRequestConfig, Realm};
pub use buffering::BufferingConfig;
pub use cache::CacheConfig;
pub use cache_key::{CookieName, KeyConfig, ParamName, QueryKey};
pub use cluster::{BusConfig, ClusterConfig, Sharding, WhenDown};
pub use compression::{CompressionConfig, Encoding, Level, Levels, MediaType, RouteCompression};
pub use edge::{
    ErrorPage, ErrorPageConfig, ErrorPages, MaintenanceConfig, PageFile, PageSource, ReturnConfig, RewriteFlag,
    RewriteRule, compile as compile_regex, read_page,
};
pub use files::{Fallback, IndexName, Symlinks};
pub use guard::{
    Cidrs, GuardConfig, KeyPart, LimitConnConfig, LimitKey, LimitReqConfig, Methods, REGEX_SIZE, Rate, RealIp,
    RouteGuard, RuleAction, RuleConfig,
};
pub use htpasswd::{HashKind, User};
pub use log::{LogColor, LogConfig, LogFormat, LogLevel};
pub use route::{CacheRules, CookieRequests, HeaderRules, RouteConfig, RouteName};
pub use server::{AdminConfig, Engine, OptionalName, ServerConfig};
pub use tls::{
    AcmeConfig, CertificateFiles, Challenge, ClientAuth, Hsts, TlsConfig, TlsVersion, UnknownName, UpstreamTls,
};
pub use types::{ErrorStatus, FieldName, FieldValue, HeaderMatch, HostPattern, ServerAddress, StatusRange, TlsName};
pub use units::{Dur, Size};
pub use upstream::{Balance, HashKey, HealthCheck, Protocol, RetryOn, ServerEntry, UpstreamConfig};

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
    pub compression: CompressionConfig,
    #[serde(default)]
    pub buffering: BufferingConfig,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Request rate zones (`[[limit_req]]`), used by name.
    #[serde(default)]
    pub limit_req: Vec<LimitReqConfig>,
    /// Concurrent request zones (`[[limit_conn]]`), used by name.
    #[serde(default)]
    pub limit_conn: Vec<LimitConnConfig>,
    /// Certificates over ACME (`[acme]`). Default: none.
    pub acme: Option<AcmeConfig>,
    /// Several relais sharing one cache (`[cluster]`). Default: none, a node on its own.
    pub cluster: Option<ClusterConfig>,
    /// Pages for error statuses, on every route (`[error_pages]`).
    #[serde(default)]
    pub error_pages: ErrorPages,
    /// Who gets through while maintenance is on, and its `Retry-After`.
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// The file this was read from, for reloads.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// `RELAIS_*` environment variables that matched no key (see [`Config::warnings`]).
    #[serde(skip)]
    pub unknown_env: Vec<String>,
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
    /// A file the configuration names (a certificate, a key) cannot be used;
    /// `key` is the key(s) naming it (see [`Config::file_error`]).
    #[error("{}{}: {reason}", if key.is_empty() { String::new() } else { format!("{key}: ") }, file.display())]
    File { file: PathBuf, key: String, reason: String },
}

impl Config {
    /// Reads `path`, then `RELAIS_*` variables over it, and validates. Relative
    /// paths in it are made relative to `path`'s folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(env());
        let dir = std::path::absolute(path).map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
        let mut config = Self::extract(figment, &path.display().to_string(), dir.parent())?;
        config.source = Some(path.to_path_buf());
        config.unknown_env = warnings::unknown_env();
        Ok(config)
    }

    /// Only `[admin]` of `path` with `RELAIS_ADMIN__*` over it: what the
    /// command line needs to reach a running relais, even when another part
    /// of the file is broken (the running one then says why on reload).
    pub fn load_admin(path: &Path) -> Result<AdminConfig, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(env());
        let name = path.display().to_string();
        match figment.find_value("admin") {
            Err(_) => Ok(AdminConfig::default()),
            Ok(_) => figment.extract_inner("admin").map_err(|e| {
                let lines: Vec<String> = e.into_iter().map(|e| describe(&e, &name)).collect();
                ConfigError::Parse(lines.join("\n"))
            }),
        }
    }

    /// Parses a TOML string (no environment); `name` is used in errors, and
    /// relative paths stay relative to the working directory.
    pub fn from_toml(toml: &str, name: &str) -> Result<Config, ConfigError> {
        Self::extract(Figment::from(Toml::string(toml)), name, None)
    }

    fn extract(figment: Figment, name: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| {
            let lines: Vec<String> = e.into_iter().map(|e| describe(&e, name)).collect();
            ConfigError::Parse(lines.join("\n"))
        })?;
        if let Some(dir) = dir {
            config.resolve_paths(dir);
        }
        config.guard.read_rules()?;
        auth::read_users(&mut config)?;
        config.validate(name)?;
        Ok(config)
    }

    /// Checks what the types cannot: references between sections, listeners
    /// that clash, ranges. (Header names and values, hosts and server
    /// addresses were parsed as they were read.)
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
        tls::validate(self, &bad)?;
        if self.buffering.memory.bytes() > u64::from(u32::MAX) || self.buffering.response_memory > self.buffering.memory
        {
            return Err(bad("buffering.memory".into(), "must be at least response_memory and at most 4GiB".into()));
        }
        compression::validate(self, &bad)?;
        guard::validate(self, &bad)?;
        cluster::validate(self, &bad)?;
        if self.server.max_connections == 0 {
            return Err(bad("server.max_connections".into(), "must be at least 1".into()));
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
            ("server.send_timeout", self.server.send_timeout),
            ("server.tunnel_idle_timeout", self.server.tunnel_idle_timeout),
            ("guard.body_timeout", self.guard.body_timeout),
            ("cache.sweep_interval", self.cache.sweep_interval),
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
        for (up, u) in &self.upstreams {
            upstream::validate(up, u, &bad)?;
        }
        self.check_pages("error_pages", &self.error_pages, &bad)?;
        for (i, r) in self.routes.iter().enumerate() {
            route::validate(i, r, self, &bad)?;
        }
        Ok(())
    }

    /// Error pages under `key`, checked, their files read (one that cannot
    /// be used is an error naming it and the key).
    pub fn check_pages(
        &self,
        key: &str,
        pages: &ErrorPages,
        bad: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<Vec<(ErrorPage, Option<PageFile>)>, ConfigError> {
        let pages = edge::pages(key, pages, &|u| self.upstreams.contains_key(u)).map_err(|(k, m)| bad(k, m))?;
        let mut read = Vec::with_capacity(pages.len());
        for page in pages {
            let file = match &page.source {
                PageSource::File(f) => Some(read_page(f).map_err(|reason| ConfigError::File {
                    file: f.clone(),
                    key: format!("{key}.\"{}\"", page.status.as_u16()),
                    reason,
                })?),
                PageSource::Upstream { .. } => None,
            };
            read.push((page, file));
        }
        Ok(read)
    }

    /// Each route's name, in order: `name`, or its host and path (`*/api/`).
    pub fn route_names(&self) -> Vec<String> {
        route::names(&self.routes)
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

/// Two listen addresses that cannot both be bound: the same port on the same
/// address, or on any address when one is a wildcard. Port 0 picks a free port.
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `routes.0.host` as `routes[0].host`, as the validation errors name keys.
fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for p in path {
        if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{p}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p);
        }
    }
    out
}

/// One figment error as "SOURCE: key: what is wrong".
fn describe(e: &figment::Error, file: &str) -> String {
    let key = if e.path.is_empty() { "(top level)".to_string() } else { key_path(&e.path) };
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
    fn route_names_are_checked_and_default_to_host_and_path() {
        let routes = |names: &[&str]| {
            let mut t = "[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n".to_string();
            for (i, n) in names.iter().enumerate() {
                let name = if n.is_empty() { String::new() } else { format!("name = \"{n}\"\n") };
                t += &format!("[[routes]]\n{name}host = \"a.test\"\npath = \"/p{}\"\nupstream = \"a\"\n", i % 2);
            }
            Config::from_toml(&t, "x.toml")
        };
        let msg = routes(&["api", "web", "api"]).unwrap_err().to_string();
        assert!(msg.contains("x.toml: routes[2].name") && msg.contains("routes[0].name"), "{msg}");
        for bad in ["", "a b", "x\\\"y", &"n".repeat(65), "none"] {
            let toml =
                format!("[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nname = \"{bad}\"\nupstream = \"a\"\n");
            let msg = Config::from_toml(&toml, "x.toml").unwrap_err().to_string();
            assert!(
                msg.contains("routes[0].name") && (msg.contains("not a route name") || msg.contains("taken")),
                "{bad}: {msg}"
            );
        }
        // Two routes without a name on the same host and path (told apart by
        // headers, say) get distinct names; a name given wins over a default.
        let c = routes(&["", "", "", "a.test/p0"]).unwrap();
        assert_eq!(c.route_names(), ["a.test/p0-2", "a.test/p1", "a.test/p0-3", "a.test/p0"]);
    }

    #[test]
    fn a_slice_must_fit_what_the_cache_stores() {
        let route = |slice: &str| {
            format!(
                "[cache]\nmax_object_size = \"8MiB\"\n[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\ncache = {{ slice = \"{slice}\" }}\n"
            )
        };
        assert_eq!(Config::from_toml(&route("1MiB"), "x.toml").unwrap().routes[0].cache.slice, Some(Size::mib(1)));
        for (slice, says) in [("16MiB", "max_object_size"), ("100", "1KiB")] {
            let msg = Config::from_toml(&route(slice), "x.toml").unwrap_err().to_string();
            assert!(msg.contains("x.toml") && msg.contains("routes[0].cache.slice") && msg.contains(says), "{msg}");
        }
    }

    #[test]
    fn retry_settings_are_checked() {
        for (extra, key) in [
            ("retry_on = [\"404\"]", "retry_on[0]"),
            ("retry_budget = 1.5", "retry_budget"),
            ("hash_balance_factor = 50", "hash_balance_factor"),
        ] {
            let toml = format!("[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n{extra}\n");
            let msg = Config::from_toml(&toml, "x.toml").unwrap_err().to_string();
            assert!(msg.contains(&format!("upstreams.a.{key}")), "{msg}");
        }
    }

    #[test]
    fn statuses_and_tls_names_are_parsed_as_they_are_read() {
        let up = |extra: &str| format!("[upstreams.a]\nservers=[\"https://a..b:8443\"]\n{extra}\n");
        for (toml, key, says) in [
            (up(""), "upstreams.a.servers[0]", "tls.server_name"),
            (up("tls = { server_name = \"a..b\" }"), "upstreams.a.tls.server_name", "not a DNS name"),
            (
                up("tls = { server_name = \"app\" }\nhealth = { path = \"/\", expect_status = \"2xx\" }"),
                "upstreams.a.health.expect_status",
                "like 200-399",
            ),
            (
                up("tls = { server_name = \"app\" }\nhealth = { path = \"/\", host = \"a\\nb\" }"),
                "upstreams.a.health.host",
                "header value",
            ),
            ("[guard]\ndeny_status = 302\n".into(), "guard.deny_status", "not an error status"),
            (
                "[[limit_conn]]\nname = \"z\"\nmax = 1\nstatus = 600\n".into(),
                "limit_conn[0].status",
                "not an error status",
            ),
            ("[guard]\nrules = [{ status = 200 }]\n".into(), "guard.rules[0].status", "not an error status"),
        ] {
            let msg = Config::from_toml(&toml, "x.toml").unwrap_err().to_string();
            assert!(msg.contains(&format!("x.toml: {key}")) && msg.contains(says), "{toml}: {msg}");
        }
        let c = Config::from_toml(
            &up("tls = { server_name = \"app.internal\" }\nretry_on = [\"reset\", \"502\"]"),
            "x.toml",
        )
        .unwrap();
        let u = &c.upstreams["a"];
        assert!(u.retries_reset() && u.retries_status(http::StatusCode::BAD_GATEWAY));
        assert!(!u.retries_status(http::StatusCode::SERVICE_UNAVAILABLE));
        let shown: Vec<String> = u.retry_on.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["reset", "502"]);
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
    fn parsed_values_are_named_by_their_key() {
        let base = "[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n";
        for (extra, key, says) in [
            ("host = \"a b\"\n", "routes[0].host", "host name"),
            ("headers = { \"bad name\" = \"1\" }\n", "routes[0].headers", "header name"),
            ("request_headers = { set = { x = \"a\\nb\" } }\n", "routes[0].request_headers.set.x", "header value"),
            ("response_headers = { remove = [\"a:b\"] }\n", "routes[0].response_headers.remove[0]", "header name"),
        ] {
            let msg = Config::from_toml(&format!("{base}{extra}"), "x.toml").unwrap_err().to_string();
            assert!(msg.contains(&format!("x.toml: {key}")) && msg.contains(says), "{extra}: {msg}");
        }
        let msg = Config::from_toml("[server]\nhide_headers = [\"a b\"]\n", "x.toml").unwrap_err().to_string();
        assert!(msg.contains("server.hide_headers[0]"), "{msg}");
        let msg = Config::from_toml("[server]\nrequest_id = \"x id\"\n", "x.toml").unwrap_err().to_string();
        assert!(msg.contains("x.toml: server.request_id") && msg.contains("header name"), "{msg}");
    }

    #[test]
    fn request_id_names_a_header_or_none() {
        let named = |toml: &str| Config::from_toml(toml, "x.toml").unwrap().server.request_id.0;
        assert_eq!(named("").unwrap(), "x-request-id");
        assert_eq!(named("[server]\nrequest_id = \"X-Trace-Id\"\n").unwrap(), "x-trace-id");
        assert_eq!(named("[server]\nrequest_id = \"\"\n"), None);
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
    fn guard_mistakes_are_named() {
        let base = "[upstreams.a]\nservers=[\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n";
        for (extra, key, says) in [
            ("limit_req = [\"nope\"]\n", "routes[0].limit_req", "unknown zone \"nope\""),
            ("guard = { allow = [\"10.0.0.0/8\"], deny = [\"10.1.2.3/8\"] }\n", "routes[0].guard.deny", "in allow too"),
            ("guard = { rules = [{ path_regex = \"(\" }] }\n", "routes[0].guard.rules[0].path_regex", "regex"),
            ("guard = { deny = [\"10.0.0.300\"] }\n", "routes[0].guard.deny", "not an address"),
            ("methods = [\"GE T\"]\n", "routes[0].methods", "not a method"),
        ] {
            let msg = Config::from_toml(&format!("{base}{extra}"), "x.toml").unwrap_err().to_string();
            assert!(msg.contains(&format!("x.toml: {key}")) && msg.contains(says), "{extra}: {msg}");
        }
        for (toml, key, says) in [
            ("[[limit_req]]\nname = \"z\"\nrate = \"10r/d\"\n", "limit_req[0].rate", "is not a rate"),
            (
                "[[limit_req]]\nname = \"z\"\nrate = \"1r/s\"\nburst = 2\ndelay = 3\n",
                "limit_req[0].delay",
                "more than burst",
            ),
            (
                "[[limit_req]]\nname = \"z\"\nrate = \"1r/s\"\nstatus = 200\n",
                "limit_req[0].status",
                "not an error status",
            ),
            ("[[limit_conn]]\nname = \"z\"\nmax = 0\n", "limit_conn[0].max", "at least 1"),
            ("[guard]\nreal_ip = { trusted = [] }\n", "guard.real_ip.trusted", "at least one"),
            ("[guard]\nlimit_conn = [\"z\"]\n", "guard.limit_conn", "unknown zone"),
            ("[guard]\nrules = [{ action = \"allow\", status = 403 }]\n", "guard.rules[0].status", "only a deny rule"),
            ("[guard]\nrules_file = \"/nonexistent/rules.toml\"\n", "/nonexistent/rules.toml", "does not exist"),
            ("[admin]\ndeny = [\"all\"]\nallow = [\"::/0\"]\n", "admin.deny", "in allow too"),
            ("[server]\nmax_connections = 0\n", "server.max_connections", "at least 1"),
        ] {
            let msg = Config::from_toml(toml, "x.toml").unwrap_err().to_string();
            assert!(msg.contains(key) && msg.contains(says), "{toml}: {msg}");
        }
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

    /// The command line finds the admin API in a file broken elsewhere.
    #[test]
    fn admin_alone_is_read_from_a_file_broken_elsewhere() {
        Jail::expect_with(|jail| {
            jail.create_file("broken.toml", "[admin]\nlisten = \"127.0.0.1:9191\"\n[[routes]]\nupstream = 1\n")?;
            jail.create_file("plain.toml", "[cache]\nmemory_capacity = \"many\"\n")?;
            jail.set_env("RELAIS_ADMIN__TOKEN", "s3cret");
            let a = Config::load_admin(Path::new("broken.toml")).map_err(|e| e.to_string())?;
            assert_eq!((a.listen.port(), a.token.as_deref()), (9191, Some("s3cret")));
            let a = Config::load_admin(Path::new("plain.toml")).map_err(|e| e.to_string())?;
            assert_eq!((a.listen.port(), a.token.as_deref()), (9090, Some("s3cret")));
            assert!(matches!(Config::load_admin(Path::new("none.toml")), Err(ConfigError::Missing(_))));
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
