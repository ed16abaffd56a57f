//! Which certificate a handshake gets: by SNI, exact names first, then a
//! `*.` wildcard one label up, then certificates obtained over ACME, then the
//! default (or none, when unknown names are rejected). An `acme-tls/1`
//! handshake gets the challenge certificate of its name, and nothing else.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Issued;
use super::certs::Loaded;

pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug)]
pub struct Resolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*.`: `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    issued: Arc<Issued>,
}

impl Resolver {
    /// `loaded` in the order configured: the first is the default, and a name
    /// in two certificates goes to the first.
    pub fn new(loaded: &[Loaded], reject_unknown: bool, issued: Arc<Issued>) -> Resolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for l in loaded {
            for name in &l.info.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert_with(|| l.key.clone()),
                    None => exact.entry(name.clone()).or_insert_with(|| l.key.clone()),
                };
            }
        }
        let default = if reject_unknown { None } else { loaded.first().map(|l| l.key.clone()) };
        Resolver { exact, wildcard, default, issued }
    }

    fn by_name(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return Some(k.clone());
        }
        self.issued.certificate(&name)
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let acme = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return name.and_then(|n| self.issued.challenge(n));
        }
        match name {
            Some(n) => self.by_name(n).or_else(|| self.default.clone()),
            None => self.default.clone(),
        }
    }
}
