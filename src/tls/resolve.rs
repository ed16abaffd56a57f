//! Which certificate a handshake gets: by SNI, exact names first, then a
//! `*.` wildcard one label up, then certificates obtained over ACME, then the
//! default (or none, when unknown names are rejected). An `acme-tls/1`
//! handshake gets the challenge certificate of its name, and nothing else.
//!
//! The names of the certificate a connection got are found the same way, for
//! `strict_host`: a request for a host outside them is misdirected.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Issued;
use super::certs::Loaded;

pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug)]
pub(super) struct Resolver {
    exact: HashMap<String, Served>,
    /// By the suffix after `*.`: `example.com` for `*.example.com`.
    wildcard: HashMap<String, Served>,
    default: Option<Served>,
    issued: Arc<Issued>,
}

/// A configured certificate and the names it carries.
#[derive(Clone, Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    names: Arc<[String]>,
}

impl Resolver {
    /// `loaded` in the order configured: the first is the default, and a name
    /// in two certificates goes to the first.
    pub(super) fn new(loaded: &[Loaded], reject_unknown: bool, issued: Arc<Issued>) -> Resolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let served: Vec<Served> =
            loaded.iter().map(|l| Served { key: l.key.clone(), names: l.info.names.clone().into() }).collect();
        for s in &served {
            for name in s.names.iter() {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert_with(|| s.clone()),
                    None => exact.entry(name.clone()).or_insert_with(|| s.clone()),
                };
            }
        }
        let default = if reject_unknown { None } else { served.first().cloned() };
        Resolver { exact, wildcard, default, issued }
    }

    /// The configured certificate for `name` (lower-cased, no trailing dot).
    fn configured(&self, name: &str) -> Option<&Served> {
        if let Some(s) = self.exact.get(name) {
            return Some(s);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    fn by_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normal(name);
        match self.configured(&name) {
            Some(s) => Some(s.key.clone()),
            None => self.issued.certificate(&name),
        }
    }

    /// The names of the certificate a handshake naming `sni` got.
    pub(super) fn names(&self, sni: Option<&str>) -> Option<Arc<[String]>> {
        let Some(name) = sni.map(normal) else { return self.default.as_ref().map(|d| d.names.clone()) };
        if let Some(s) = self.configured(&name) {
            return Some(s.names.clone());
        }
        // Certificates obtained over ACME carry one name each.
        if self.issued.certificate(&name).is_some() {
            return Some(Arc::from([name]));
        }
        self.default.as_ref().map(|d| d.names.clone())
    }
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a certificate for `names` covers `host` (lower-cased): one of them
/// exactly, or a `*.` wildcard one label up.
pub(crate) fn covers(names: &[String], host: &str) -> bool {
    let parent = host.split_once('.').map(|(_, p)| p);
    names.iter().any(|n| match n.strip_prefix("*.") {
        Some(suffix) => parent == Some(suffix),
        None => n == host,
    })
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let acme = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return name.and_then(|n| self.issued.challenge(n));
        }
        match name {
            Some(n) => self.by_name(n).or_else(|| self.default.as_ref().map(|d| d.key.clone())),
            None => self.default.as_ref().map(|d| d.key.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_certificate_covers_its_names_and_one_label_under_its_wildcards() {
        let names = ["a.test".to_string(), "*.w.test".to_string()];
        assert!(covers(&names, "a.test"));
        assert!(covers(&names, "x.w.test"));
        assert!(!covers(&names, "w.test"), "a wildcard does not cover its parent");
        assert!(!covers(&names, "y.x.w.test"), "one label only");
        assert!(!covers(&names, "b.test"));
        assert!(!covers(&names, ""));
    }
}
