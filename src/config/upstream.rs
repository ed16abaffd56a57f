//! `[upstreams.NAME]`: pools of origin servers.

use std::fmt;

use http::StatusCode;
use serde::Deserialize;

use super::{ConfigError, Dur, FieldValue, ServerAddress, StatusRange, UpstreamTls};

/// `[upstreams.NAME]`: a pool of origin servers.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `"host:port"` or `{ address = "host:port", weight = 3 }`.
    pub servers: Vec<ServerEntry>,
    /// `round_robin` (weighted, the default), `least_conn`, `ewma`, `hash` or `ip_hash`.
    #[serde(default)]
    pub balance: Balance,
    /// With `balance = "hash"`: what is hashed. Default `uri`.
    #[serde(default)]
    pub hash_key: HashKey,
    /// With `hash` or `ip_hash`: a server holding more than this percentage
    /// of the pool's average requests in flight passes a key on to the next
    /// server along the ring (bounded-load consistent hashing). 0 (the
    /// default) never does; otherwise at least 100.
    #[serde(default)]
    pub hash_balance_factor: u32,
    /// Default 5s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time until the response header arrives; then 504. Default 60s.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    /// Idle pooled connections are closed after this. Default 90s.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Most idle pooled connections per server (nginx `keepalive`). Default 256.
    #[serde(default = "default_max_idle")]
    pub max_idle: usize,
    /// `http1` (the default) or `h2c`: HTTP/2 to every server, by prior
    /// knowledge in cleartext and by ALPN over TLS (falling back to HTTP/1.1
    /// when an https server does not choose h2).
    #[serde(default)]
    pub protocol: Protocol,
    /// With `protocol = "h2c"`: requests at once on one connection before
    /// another is opened. Default 100.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// Failures (connect error or timeout) before a server is skipped. Default 1.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// How long a failed server is skipped. Default 10s.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: Dur,
    /// For `https://` servers: how they are verified, and a client certificate.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// Besides connect failures (always retried), what sends an idempotent
    /// request without a body to the next server: statuses (`"502"`) and
    /// `"reset"` (the connection broke before the response head). Default none.
    #[serde(default)]
    pub retry_on: Vec<RetryOn>,
    /// Most retries of one request on such answers. Default 1.
    #[serde(default = "one_retry")]
    pub max_retries: u32,
    /// Retries on such answers may add at most this share of requests (a
    /// retry budget, as Linkerd and Envoy keep), so retries cannot multiply an
    /// outage. Default 0.2.
    #[serde(default = "default_retry_budget")]
    pub retry_budget: f64,
    /// Name servers (`"ip:port"`) that resolve servers given by name. Default:
    /// the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub resolver: Vec<std::net::SocketAddr>,
    /// The longest a name's addresses are kept before it is looked up again
    /// (sooner when its TTL says so); `"0s"` resolves names at each connect
    /// instead. Default 30s.
    #[serde(default = "default_resolve_interval")]
    pub resolve_interval: Dur,
    /// A server that comes back (after passive or active health took it out,
    /// or an ejection) regains its weight over this time, linearly. Not with
    /// `hash` or `ip_hash`. Default 0s (at once).
    #[serde(default)]
    pub slow_start: Dur,
    /// Active health checks. Default: none (passive health only).
    pub health: Option<HealthCheck>,
    /// Outlier ejection on consecutive 5xx answers and timeouts. Default: none.
    pub outlier: Option<Outlier>,
}

/// `outlier = { consecutive_5xx = 5, ... }` (Envoy's outlier detection).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Outlier {
    /// 5xx answers or timeouts in a row that eject a server. Default 5.
    #[serde(default = "default_consecutive")]
    pub consecutive_5xx: u32,
    /// The first ejection's length; each next one of the same server is one more of these. Default 30s.
    #[serde(default = "default_base_ejection")]
    pub base_ejection: Dur,
    /// The longest ejection. Default 300s.
    #[serde(default = "default_max_ejection")]
    pub max_ejection: Dur,
    /// At most this share of the pool is ejected at once, so a failure of the
    /// checks themselves cannot empty it. Default 50.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

fn default_resolve_interval() -> Dur {
    Dur::secs(30)
}
fn default_consecutive() -> u32 {
    5
}
fn default_base_ejection() -> Dur {
    Dur::secs(30)
}
fn default_max_ejection() -> Dur {
    Dur::secs(300)
}
fn default_max_ejection_percent() -> u32 {
    50
}

/// `health = { path = "/healthz", ... }`: each server asked on its own.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    /// Failed checks in a row that take a server down. Default 3.
    #[serde(default = "default_check_fails")]
    pub fails: u32,
    /// Passed checks in a row that bring it back. Default 2.
    #[serde(default = "default_check_passes")]
    pub passes: u32,
    /// Statuses that pass, `"200-399"` (the default) or `"200"`.
    #[serde(default = "default_expect_status")]
    pub expect_status: StatusRange,
    /// Text the body must contain, if set.
    pub expect_body: Option<String>,
    /// Host header sent; default the server's address.
    pub host: Option<FieldValue>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<super::FieldName, FieldValue>,
}

/// A `retry_on` entry: a status (429 or a 5xx) or `reset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum RetryOn {
    Status(StatusCode),
    /// The connection broke before the response head.
    Reset,
}

impl TryFrom<String> for RetryOn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "reset" {
            return Ok(RetryOn::Reset);
        }
        let status = s.parse::<u16>().ok().filter(|s| (500..=599).contains(s) || *s == 429);
        match status.and_then(|s| StatusCode::from_u16(s).ok()) {
            Some(code) => Ok(RetryOn::Status(code)),
            None => Err(format!("{s:?} is not \"reset\", 429 or a 5xx status")),
        }
    }
}

/// As written: `502`, `reset`.
impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryOn::Status(code) => write!(f, "{}", code.as_u16()),
            RetryOn::Reset => f.write_str("reset"),
        }
    }
}

impl UpstreamConfig {
    /// An answer with `status` goes to the next server (`retry_on`).
    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.retry_on.contains(&RetryOn::Status(status))
    }

    /// A connection that broke before the response head is retried (`retry_on = ["reset"]`).
    pub fn retries_reset(&self) -> bool {
        self.retry_on.contains(&RetryOn::Reset)
    }
}

fn default_check_interval() -> Dur {
    Dur::secs(5)
}
fn default_check_timeout() -> Dur {
    Dur::secs(2)
}
fn default_check_fails() -> u32 {
    3
}
fn default_check_passes() -> u32 {
    2
}
fn default_expect_status() -> StatusRange {
    StatusRange { low: 200, high: 399 }
}

fn one_retry() -> u32 {
    1
}
fn default_retry_budget() -> f64 {
    0.2
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
fn default_max_streams() -> usize {
    100
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
    Address(ServerAddress),
    Weighted { address: ServerAddress, weight: u32 },
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
            address: ServerAddress,
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
                ServerAddress::try_from(v.to_string()).map(ServerEntry::Address).map_err(E::custom)
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
    pub fn address(&self) -> &ServerAddress {
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
pub enum Protocol {
    #[default]
    Http1,
    H2c,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    Ewma,
    Hash,
    IpHash,
}

impl Balance {
    /// The configuration's word for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::Ewma => "ewma",
            Balance::Hash => "hash",
            Balance::IpHash => "ip_hash",
        }
    }
}

/// What `balance = "hash"` hashes: `uri`, `header:NAME`, `cookie:NAME` or `ip`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HashKey {
    #[default]
    Uri,
    Header(http::HeaderName),
    Cookie(String),
    Ip,
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("{text:?} is not uri, ip, header:NAME or cookie:NAME"));
        match text.split_once(':') {
            None if text == "uri" => Ok(HashKey::Uri),
            None if text == "ip" => Ok(HashKey::Ip),
            Some(("header", name)) => http::HeaderName::try_from(name).map(HashKey::Header).map_err(|_| bad()),
            Some(("cookie", name)) if !name.is_empty() && !name.contains([';', '=', ' ']) => {
                Ok(HashKey::Cookie(name.into()))
            }
            _ => Err(bad()),
        }
    }
}

/// What the types cannot check in `[upstreams.NAME]`: counts and ranges, and
/// that every `https://` server has a name to verify.
pub(super) fn validate(
    up: &str,
    u: &UpstreamConfig,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if u.servers.is_empty() {
        return Err(bad(format!("upstreams.{up}.servers"), "needs at least one server".into()));
    }
    for (i, s) in u.servers.iter().enumerate() {
        let key = format!("upstreams.{up}.servers[{i}]");
        if s.weight() == 0 || s.weight() > 1000 {
            return Err(bad(key, "weight must be between 1 and 1000".into()));
        }
        let a = s.address();
        if a.is_tls() && a.tls_name().is_none() && u.tls.server_name.is_none() {
            let msg = format!("{:?} is not a name TLS can verify: set tls.server_name", a.host());
            return Err(bad(key, msg));
        }
    }
    if u.max_fails == 0 {
        return Err(bad(format!("upstreams.{up}.max_fails"), "must be at least 1".into()));
    }
    if let Some(h) = &u.health {
        let key = |k: &str| format!("upstreams.{up}.health.{k}");
        if !h.path.starts_with('/') {
            return Err(bad(key("path"), format!("{:?} must start with '/'", h.path)));
        }
        if h.fails == 0 || h.passes == 0 {
            return Err(bad(key("fails"), "fails and passes must be at least 1".into()));
        }
        if h.interval.get().is_zero() || h.timeout.get().is_zero() {
            return Err(bad(key("interval"), "interval and timeout must be more than 0".into()));
        }
    }
    if let Some(o) = &u.outlier
        && (o.consecutive_5xx == 0 || o.max_ejection_percent > 100)
    {
        return Err(bad(
            format!("upstreams.{up}.outlier"),
            "consecutive_5xx must be at least 1 and max_ejection_percent at most 100".into(),
        ));
    }
    if (1..100).contains(&u.hash_balance_factor) {
        return Err(bad(
            format!("upstreams.{up}.hash_balance_factor"),
            "is a percentage of the average load: 0 (off) or at least 100".into(),
        ));
    }
    if !(0.0..=1.0).contains(&u.retry_budget) {
        return Err(bad(format!("upstreams.{up}.retry_budget"), "must be between 0 and 1".into()));
    }
    if u.max_streams == 0 {
        return Err(bad(format!("upstreams.{up}.max_streams"), "must be at least 1".into()));
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
    Ok(())
}
