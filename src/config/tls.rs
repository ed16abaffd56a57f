//! `[server.tls]` (TLS listeners and their certificates), `[acme]`
//! (certificates obtained and renewed by relais), and an upstream's `tls`.
//! Only paths and choices live here; reading the files is `crate::tls`'s.
//! Relative paths are resolved against the configuration file's folder (`paths.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError, Dur, FieldName, TlsName, overlaps};

/// `[server.tls]`: listeners that speak TLS, HTTP/1.1 and HTTP/2 chosen by ALPN.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses to accept TLS on.
    pub listen: Vec<SocketAddr>,
    /// Oldest protocol version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// PEM chain and key files. The first is the default; SNI picks among all
    /// by the names in each certificate (exact and `*.` wildcards).
    #[serde(default)]
    pub certificates: Vec<CertificateFiles>,
    /// A client naming no known host gets the default certificate (`default`)
    /// or a failed handshake (`reject`).
    #[serde(default)]
    pub unknown_name: UnknownName,
    /// A request whose host is not a name of the certificate its connection
    /// got (exact or `*.` wildcard) is answered 421 Misdirected Request, on
    /// HTTP/1.1 and HTTP/2. Default false: any host, as nginx.
    #[serde(default)]
    pub strict_host: bool,
    /// A client must finish its handshake within this (a slow handshake is a
    /// slowloris too). Default 10s.
    #[serde(default = "ten_seconds")]
    pub handshake_timeout: Dur,
    /// Handshakes in progress at most; more connections wait to start theirs.
    /// A connection takes its place once its ClientHello starts to arrive:
    /// until then it waits under `server.header_read_timeout`. Default 1024.
    #[serde(default = "handshakes")]
    pub max_handshakes: usize,
    /// Handshakes in progress at most from one source (an IPv4 address or an
    /// IPv6 /64). Default 64.
    #[serde(default = "handshakes_per_source")]
    pub max_handshakes_per_source: usize,
    /// Client certificates (mTLS): CA certificates (PEM) that sign them.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `required` (default) or `optional`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Header that carries the verified client certificate's subject to the
    /// origin (a client's own header of that name is removed). Default: none.
    pub client_subject_header: Option<FieldName>,
    /// `Strict-Transport-Security` on every TLS response. Default: none.
    pub hsts: Option<Hsts>,
    /// Connections on these listeners start with a PROXY protocol header
    /// before the TLS handshake (see `server.proxy_protocol`). Default false.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// QUIC and HTTP/3 on UDP beside each `listen` address (same ip:port),
    /// with the same certificates, advertised by `Alt-Svc` on the TLS
    /// listeners' responses. Default false.
    #[serde(default)]
    pub http3: bool,
    /// `Alt-Svc`'s `ma`: how long a client may remember the HTTP/3 offer.
    /// Default 24h.
    #[serde(default = "a_day")]
    pub alt_svc_max_age: Dur,
    /// 0-RTT on HTTP/3: a resuming client's safe requests (GET, HEAD, OPTIONS
    /// without a body) are answered before its handshake ends, sent upstream
    /// with `Early-Data: 1`; other requests wait for the handshake. Default false.
    #[serde(default)]
    pub early_data: bool,
}

fn ten_seconds() -> Dur {
    Dur::secs(10)
}
fn a_day() -> Dur {
    Dur::secs(86_400)
}
fn handshakes() -> usize {
    1024
}
fn handshakes_per_source() -> usize {
    64
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// PEM: the leaf certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key.
    pub key: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownName {
    #[default]
    Default,
    Reject,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

/// `hsts = { max_age = "365d", include_subdomains = true, preload = false }`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    pub max_age: Dur,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

impl Hsts {
    /// The header value.
    pub fn value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age.get().as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

/// `[acme]`: certificates obtained and renewed over ACME (RFC 8555).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL, e.g. Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// Contact address given to the CA.
    pub email: Option<String>,
    /// Names to obtain certificates for; the word `"routes"` among them adds
    /// every exact route host. Each name gets a certificate of its own.
    pub names: Vec<String>,
    /// Account and certificates, kept across restarts. Default `relais-acme`
    /// (relative paths: to the configuration file's folder).
    #[serde(default = "acme_storage")]
    pub storage: PathBuf,
    /// `tls-alpn-01` (default: answered on the TLS listeners) or `http-01`
    /// (answered on the cleartext listeners).
    #[serde(default)]
    pub challenge: Challenge,
    /// Extra root certificate (PEM) trusted for the directory itself (a test CA).
    pub ca_root: Option<PathBuf>,
    /// Renew once this fraction of a certificate's lifetime has passed. Default 0.67.
    #[serde(default = "two_thirds")]
    pub renew_at: f64,
    /// First wait after a failed order; it doubles up to an hour. Default 1m.
    #[serde(default = "a_minute")]
    pub retry_after: Dur,
}

fn acme_storage() -> PathBuf {
    PathBuf::from("./relais-acme")
}
fn two_thirds() -> f64 {
    0.67
}
fn a_minute() -> Dur {
    Dur::secs(60)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Challenge {
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    #[serde(rename = "http-01")]
    Http01,
}

/// An upstream's `tls = { ... }`, for its `https://` servers.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// CA certificates (PEM) to verify the servers against, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Name sent in SNI and verified in the certificate, instead of each server's host.
    pub server_name: Option<TlsName>,
    /// Accept any certificate. Never in production: logged at start.
    pub insecure_skip_verify: bool,
    /// Client certificate (PEM chain) and key for mTLS to the origin.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// `[server.tls]`, `[acme]` and the upstreams' `tls`: what must go together.
pub(super) fn validate(c: &Config, bad: &dyn Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
    if let Some(tls) = &c.server.tls {
        if tls.listen.is_empty() {
            return Err(bad("server.tls.listen".into(), "needs at least one address".into()));
        }
        for (i, a) in tls.listen.iter().enumerate() {
            let clash = c.server.listen.iter().chain(tls.listen[..i].iter()).find(|b| overlaps(a, b));
            if let Some(b) = clash {
                return Err(bad(format!("server.tls.listen[{i}]"), format!("{a} overlaps {b}")));
            }
            if overlaps(a, &c.admin.listen) {
                return Err(bad("admin.listen".into(), format!("{} is also server.tls.listen[{i}]", c.admin.listen)));
            }
        }
        if tls.certificates.is_empty() && c.acme.is_none() {
            return Err(bad("server.tls.certificates".into(), "needs a certificate (or [acme] to obtain them)".into()));
        }
        if tls.max_handshakes == 0 {
            return Err(bad("server.tls.max_handshakes".into(), "must be at least 1".into()));
        }
        if tls.max_handshakes_per_source == 0 {
            return Err(bad("server.tls.max_handshakes_per_source".into(), "must be at least 1".into()));
        }
        if tls.handshake_timeout.get().is_zero() {
            return Err(bad("server.tls.handshake_timeout".into(), "must be more than 0".into()));
        }
        if tls.http3 && tls.alt_svc_max_age.get().is_zero() {
            return Err(bad(
                "server.tls.alt_svc_max_age".into(),
                "must be more than 0 (clients would forget HTTP/3 at once)".into(),
            ));
        }
        if tls.early_data && !tls.http3 {
            return Err(bad("server.tls.early_data".into(), "is 0-RTT on HTTP/3: needs http3 = true".into()));
        }
        if tls.early_data && tls.client_ca.is_some() {
            return Err(bad(
                "server.tls.early_data".into(),
                "cannot go with client_ca (a client certificate is only known once the handshake ends)".into(),
            ));
        }
        if tls.client_subject_header.is_some() && tls.client_ca.is_none() {
            return Err(bad("server.tls.client_subject_header".into(), "needs client_ca".into()));
        }
    }
    if let Some(acme) = &c.acme {
        if acme.names.is_empty() {
            return Err(bad("acme.names".into(), "needs at least one name (or \"routes\")".into()));
        }
        if !(acme.renew_at > 0.0 && acme.renew_at < 1.0) {
            return Err(bad("acme.renew_at".into(), "must be between 0 and 1 (a fraction of the lifetime)".into()));
        }
        if acme.challenge == Challenge::TlsAlpn01 && c.server.tls.is_none() {
            return Err(bad("acme.challenge".into(), "tls-alpn-01 needs [server.tls] listeners".into()));
        }
    }
    for (up, u) in &c.upstreams {
        if u.tls.client_cert.is_some() != u.tls.client_key.is_some() {
            return Err(bad(format!("upstreams.{up}.tls"), "client_cert and client_key go together".into()));
        }
    }
    Ok(())
}
