//! Values parsed once, when the configuration is read: header names and
//! values, host patterns, server addresses and TLS names, statuses. Each is a
//! type that cannot hold a wrong value, so nothing built from a
//! [`Config`](super::Config) parses it again or can panic on it.

use std::fmt;

use http::uri::Authority;
use http::{HeaderName, HeaderValue, StatusCode};
use rustls_pki_types::ServerName;
use serde::Deserialize;

/// A header field name (`x-canary`), lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct FieldName(pub HeaderName);

impl TryFrom<String> for FieldName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HeaderName::try_from(s.as_str()).map(FieldName).map_err(|_| format!("{s:?} is not a header name"))
    }
}

impl Ord for FieldName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

impl PartialOrd for FieldName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// A header field value.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FieldValue(pub HeaderValue);

impl TryFrom<String> for FieldValue {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HeaderValue::try_from(s.as_str()).map(FieldValue).map_err(|_| format!("{s:?} is not a valid header value"))
    }
}

/// What a route asks of a request header: a value, or `"*"` for "present".
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HeaderMatch {
    Present,
    Equals(HeaderValue),
}

impl TryFrom<String> for HeaderMatch {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "*" {
            return Ok(HeaderMatch::Present);
        }
        FieldValue::try_from(s).map(|v| HeaderMatch::Equals(v.0))
    }
}

impl fmt::Display for HeaderMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderMatch::Present => f.write_str("*"),
            HeaderMatch::Equals(v) => f.write_str(v.to_str().unwrap_or("…")),
        }
    }
}

/// A route's host: an exact name (`shop.example.com`) or `*.example.com`
/// (any subdomain, not the bare domain), lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `.example.com`.
    Subdomains(String),
}

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let (bare, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        let label = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let literal = bare.starts_with('[') && bare.ends_with(']') && !wildcard;
        if !literal && !bare.split('.').all(label) {
            return Err(format!("{s:?} is not a host name or *.suffix pattern"));
        }
        Ok(if wildcard { HostPattern::Subdomains(format!(".{bare}")) } else { HostPattern::Exact(bare.to_string()) })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*{s}"),
        }
    }
}

/// An origin server: `host:port` (cleartext), `http://host[:port]` or
/// `https://host[:port]` (TLS, port 443 unless given), with a port of 1 to
/// 65535 and no user info, path or query; or `unix:/absolute/path` (a unix
/// domain socket, cleartext, sent `Host: localhost` as nginx does).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ServerAddress {
    label: String,
    authority: Authority,
    host_value: HeaderValue,
    tls: bool,
    /// The host as a TLS name (SNI, verification), when it is one.
    tls_name: Option<ServerName<'static>>,
    unix: Option<std::path::PathBuf>,
}

impl ServerAddress {
    /// `host:port`, always with the port.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The address as a Host header value (`pass_host = false`): the port only
    /// when not the scheme's default.
    pub fn host_value(&self) -> &HeaderValue {
        &self.host_value
    }

    /// Reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host as TLS verifies it: a DNS name or an address; `None` when it
    /// is neither (a `https://` server then needs the upstream's `tls.server_name`).
    pub fn tls_name(&self) -> Option<&ServerName<'static>> {
        self.tls_name.as_ref()
    }

    /// The socket of a `unix:` server.
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        self.unix.as_deref()
    }

    /// The host part of `host:port`, without an IPv6 literal's brackets.
    pub fn host(&self) -> &str {
        self.authority.host().trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(80)
    }

    /// As written in the configuration, for logs and metrics.
    pub fn as_str(&self) -> &str {
        &self.label
    }
}

impl TryFrom<String> for ServerAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("{s:?}: a unix socket is unix:/absolute/path"));
            }
            return Ok(ServerAddress {
                unix: Some(path.into()),
                label: s,
                authority: Authority::from_static("localhost"),
                host_value: HeaderValue::from_static("localhost"),
                tls: false,
                tls_name: None,
            });
        }
        let (rest, tls, default) = match (s.strip_prefix("https://"), s.strip_prefix("http://")) {
            (Some(rest), _) => (rest, true, Some(443)),
            (_, Some(rest)) => (rest, false, Some(80)),
            _ if s.contains("://") => return Err(format!("{s:?}: only http:// and https:// servers")),
            _ => (s.as_str(), false, None),
        };
        if rest.contains('@') {
            return Err(format!("{s:?}: user info is not allowed"));
        }
        if rest.contains(['/', '?', '#']) {
            return Err(format!("{s:?}: a server is host:port, without a path"));
        }
        let _: Authority = rest.parse().map_err(|_| format!("{s:?} is not host:port"))?;
        // After the last ':' outside an IPv6 literal's brackets.
        let split = rest.rsplit_once(':').filter(|(host, _)| !host.starts_with('[') || host.ends_with(']'));
        let (host, port) = match (split, default) {
            (Some((host, p)), _) if !p.is_empty() => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("{s:?}: port {p} is out of range (1-65535)")),
                Ok(port) => (host, port),
            },
            (_, Some(port)) if split.is_none() => (rest, port),
            _ => return Err(format!("{s:?} needs a port")),
        };
        let authority: Authority = format!("{host}:{port}").parse().map_err(|_| format!("{s:?} is not host:port"))?;
        let host_value = if Some(port) == default { host.to_string() } else { format!("{host}:{port}") };
        let host_value = HeaderValue::try_from(host_value).map_err(|_| format!("{s:?} is not host:port"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tls_name = ServerName::try_from(bare.to_string()).ok();
        Ok(ServerAddress { label: s, authority, host_value, tls, tls_name, unix: None })
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name TLS verifies a server as (`tls.server_name`): a DNS name or an address.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TlsName(pub ServerName<'static>);

impl TryFrom<String> for TlsName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ServerName::try_from(s.clone()).map(TlsName).map_err(|e| format!("{s:?} is not a DNS name or address: {e}"))
    }
}

/// A status relais refuses a request with (`deny_status`, a zone's or a rule's
/// `status`): 400 to 599.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u16")]
pub struct ErrorStatus(pub StatusCode);

impl TryFrom<u16> for ErrorStatus {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        match StatusCode::from_u16(code) {
            Ok(s) if (400..=599).contains(&code) => Ok(ErrorStatus(s)),
            _ => Err(format!("{code} is not an error status (400 to 599)")),
        }
    }
}

impl ErrorStatus {
    pub const fn new(s: StatusCode) -> ErrorStatus {
        ErrorStatus(s)
    }
}

/// Statuses as a range, `"200-399"` or `"200"` (a health check's `expect_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(&self, status: StatusCode) -> bool {
        (self.low..=self.high).contains(&status.as_u16())
    }
}

impl TryFrom<String> for StatusRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (a, b) = s.split_once('-').unwrap_or((&s, &s));
        let range = match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            (Ok(low), Ok(high)) if 100 <= low && low <= high && high <= 599 => Some(StatusRange { low, high }),
            _ => None,
        };
        range.ok_or_else(|| format!("{s:?} is not like 200-399"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_once_or_say_why() {
        assert!(FieldName::try_from("X-Canary".to_string()).is_ok());
        assert!(FieldName::try_from("bad name".to_string()).unwrap_err().contains("header name"));
        assert!(FieldValue::try_from("a\nb".to_string()).is_err());
        assert_eq!(HeaderMatch::try_from("*".to_string()), Ok(HeaderMatch::Present));
        assert_eq!(
            HostPattern::try_from("*.Example.com".to_string()),
            Ok(HostPattern::Subdomains(".example.com".into()))
        );
        assert_eq!(HostPattern::try_from("shop.test".to_string()), Ok(HostPattern::Exact("shop.test".into())));
        for bad in ["", "*.", "a/b", "a b", "*", "a.*.b", "*.*.a"] {
            assert!(HostPattern::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        assert_eq!(ServerAddress::try_from("127.0.0.1:3000".to_string()).unwrap().as_str(), "127.0.0.1:3000");
        let https = ServerAddress::try_from("https://app.internal".to_string()).unwrap();
        assert!(https.is_tls());
        assert_eq!(
            (https.authority().as_str(), https.host_value().to_str().unwrap()),
            ("app.internal:443", "app.internal")
        );
        let https = ServerAddress::try_from("https://app.internal:8443".to_string()).unwrap();
        assert_eq!(https.host_value(), "app.internal:8443");
        assert!(!ServerAddress::try_from("http://h".to_string()).unwrap().is_tls());
        assert!(ServerAddress::try_from("[::1]:80".to_string()).is_ok());
        let unix = ServerAddress::try_from("unix:/run/app.sock".to_string()).unwrap();
        assert_eq!(unix.unix_path(), Some(std::path::Path::new("/run/app.sock")));
        assert_eq!(unix.host_value(), "localhost");
        let named = |s: &str| ServerAddress::try_from(s.to_string()).unwrap().tls_name().cloned();
        assert!(matches!(named("https://[::1]:8443"), Some(ServerName::IpAddress(_))));
        assert!(matches!(named("https://app.internal"), Some(ServerName::DnsName(_))));
        assert_eq!(StatusRange::try_from("200".to_string()), Ok(StatusRange { low: 200, high: 200 }));
        assert_eq!(StatusRange::try_from(" 200 - 399".to_string()), Ok(StatusRange { low: 200, high: 399 }));
        for bad in ["2xx", "399-200", "200-600", "99"] {
            assert!(StatusRange::try_from(bad.to_string()).is_err(), "{bad}");
        }
        assert_eq!(ErrorStatus::try_from(429), Ok(ErrorStatus(StatusCode::TOO_MANY_REQUESTS)));
        assert!(ErrorStatus::try_from(200).unwrap_err().contains("not an error status"));
        for (bad, says) in [
            ("localhost", "needs a port"),
            ("[::1]", "needs a port"),
            ("h:99999", "out of range"),
            ("h:0", "out of range"),
            ("u@h:1", "user info"),
            ("https://h/x", "without a path"),
            ("ftp://h:21", "only http"),
            ("https://h:", "needs a port"),
            ("unix:run/app.sock", "absolute"),
        ] {
            let e = ServerAddress::try_from(bad.to_string()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
