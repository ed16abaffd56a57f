//! `[server]` and `[admin]`: the listeners and what they enforce.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Cidrs, Dur, FieldName, HostPattern, Size, TlsConfig};

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
    /// A client that takes nothing of a response for this long is cut off:
    /// its connection closed (HTTP/1.1, or an HTTP/2 connection that reads
    /// nothing), or its stream reset (one HTTP/2 stream whose window stays
    /// shut). Default 60s (nginx's send_timeout).
    pub send_timeout: Dur,
    /// A WebSocket (or other upgraded) tunnel that carries no byte either way
    /// for this long is closed. Default 5m.
    pub tunnel_idle_timeout: Dur,
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
    pub hide_headers: Vec<FieldName>,
    /// Add a `Via` header in both directions. Default true.
    pub via: bool,
    /// Worker threads. Default: one per available core.
    pub workers: Option<usize>,
    /// After binding its listeners and opening the cache and log files,
    /// relais (started as root) runs as this user, with its group; the cache
    /// and log directories must be that user's. Default: none (stay as started).
    pub user: Option<String>,
    /// Answer requests on the cleartext listeners with 308 to the same URL on
    /// https (a route's `redirect_https` wins). Default false.
    pub redirect_https: bool,
    /// TLS listeners (`[server.tls]`). Default: none.
    pub tls: Option<TlsConfig>,
    /// Connections open at once per listener; past it relais stops accepting
    /// until one closes (the kernel's backlog holds the rest). Default 16384.
    pub max_connections: usize,
    /// Every connection on `listen` starts with a PROXY protocol header (v1 or
    /// v2), from an L4 load balancer: its source address is the client's. A
    /// connection without a valid one is closed. Default false.
    pub proxy_protocol: bool,
    /// The header that carries each request's id to the origin, back to the
    /// client and into the access log (nginx's `$request_id`): kept from a
    /// peer `guard.real_ip` trusts, else made by relais. `""` turns it off.
    /// Default `"x-request-id"`.
    pub request_id: OptionalName,
    /// Which HTTP/1.1 implementation serves client connections and talks to
    /// origins: relais's own (`"relais"`) or hyper's (`"hyper"`), kept for one
    /// release as a fallback. HTTP/2 is hyper's and h2's either way. Default `"relais"`.
    pub engine: Engine,
}

/// `server.engine`: whose HTTP/1.1 code carries requests.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Relais,
    Hyper,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(75),
            send_timeout: Dur::secs(60),
            tunnel_idle_timeout: Dur::secs(300),
            max_header_size: Size(64 * 1024),
            max_headers: 100,
            max_request_body: None,
            grace_period: Dur::secs(30),
            hide_headers: vec![
                FieldName(http::header::SERVER),
                FieldName(http::HeaderName::from_static("x-powered-by")),
            ],
            via: true,
            workers: None,
            user: None,
            redirect_https: false,
            tls: None,
            max_connections: 16384,
            proxy_protocol: false,
            request_id: OptionalName(Some(http::HeaderName::from_static("x-request-id"))),
            engine: Engine::default(),
        }
    }
}

/// A header name, or `""` for none.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "String")]
pub struct OptionalName(pub Option<http::HeaderName>);

impl TryFrom<String> for OptionalName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(OptionalName(None));
        }
        FieldName::try_from(s).map(|f| OptionalName(Some(f.0)))
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
    /// Addresses that may use the admin listener (the most specific block of
    /// `allow` and `deny` decides). Default: any.
    pub allow: Cidrs,
    /// Addresses refused with 403 before authentication.
    pub deny: Cidrs,
    /// Names (or `*.suffix`) the admin API answers to as Host, besides IP
    /// literals and `localhost`: any other is refused (DNS rebinding). Default: none.
    pub hosts: Vec<HostPattern>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
            allow: Cidrs::default(),
            deny: Cidrs::default(),
            hosts: Vec::new(),
        }
    }
}
