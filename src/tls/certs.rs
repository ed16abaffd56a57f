//! Certificates read from PEM files: the chain, a signing key that matches
//! its leaf, and what an operator needs to know of it (names, validity).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// A certificate ready to serve, and what it says of itself.
#[derive(Clone, Debug)]
pub(crate) struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (subject alternative names; the common name when there are none),
    /// lower-cased, `*.` wildcards included.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Where it came from, for messages.
    pub source: PathBuf,
}

/// Days before its end from which a certificate is warned about.
pub(super) const WARN_DAYS: u64 = 14;

impl CertInfo {
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after || now < self.not_before
    }

    /// Whole days left before it ends (0 in its last day and after).
    pub fn days_left(&self, now: SystemTime) -> u64 {
        self.not_after.duration_since(now).map_or(0, |d| d.as_secs() / 86_400)
    }

    /// Why it cannot be served at `now`, if it cannot.
    pub fn unusable(&self, now: SystemTime) -> Option<String> {
        let names = self.names.join(", ");
        if now >= self.not_after {
            let date = httpdate::fmt_http_date(self.not_after);
            Some(format!("the certificate for {names} expired on {date}"))
        } else if now < self.not_before {
            let date = httpdate::fmt_http_date(self.not_before);
            Some(format!("the certificate for {names} is not valid before {date}"))
        } else {
            None
        }
    }

    /// Logs it if it ends within [`WARN_DAYS`] (a warning) or has ended (an error).
    pub fn log_expiry(&self, now: SystemTime) {
        let (source, names) = (self.source.display(), self.names.join(", "));
        let expires = httpdate::fmt_http_date(self.not_after);
        if now >= self.not_after {
            tracing::error!(cert = %source, %names, %expires, "TLS certificate expired: clients refuse it; replace it and reload");
        } else if self.days_left(now) < WARN_DAYS {
            let days_left = self.days_left(now);
            tracing::warn!(cert = %source, %names, %expires, days_left, "TLS certificate expires soon: replace it and reload");
        }
    }
}

/// Reads a PEM chain (leaf first) and its key; checks that they match and that
/// the chain is in order (each certificate issued by the next).
pub(super) fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let chain = read_chain(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::file(key, format!("no private key (PKCS#8, PKCS#1 or SEC1) read: {e}")))?;
    from_der(chain, der, provider, cert, key)
}

/// The same from DER already in memory (a certificate obtained over ACME).
pub(super) fn from_der(
    chain: Vec<CertificateDer<'static>>,
    der: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<Loaded, TlsError> {
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::file(key, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::file(key, format!("the key does not match {}: {e}", cert.display())))?;
    let info = inspect(&certified.cert, cert)?;
    Ok(Loaded { key: Arc::new(certified), info })
}

/// Every certificate in a PEM file; at least one.
pub(super) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::file(path, format!("unreadable: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::file(path, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::file(path, "no certificate in it".into()));
    }
    Ok(chain)
}

/// Names and validity of the leaf, and the chain's order.
fn inspect(chain: &[CertificateDer<'_>], source: &Path) -> Result<CertInfo, TlsError> {
    fn parse<'a>(
        der: &'a CertificateDer<'_>,
        source: &Path,
    ) -> Result<x509_parser::certificate::X509Certificate<'a>, TlsError> {
        x509_parser::parse_x509_certificate(der.as_ref())
            .map(|(_, c)| c)
            .map_err(|e| TlsError::file(source, format!("not an X.509 certificate: {e}")))
    }
    let parsed: Vec<_> = chain.iter().map(|c| parse(c, source)).collect::<Result<_, _>>()?;
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer() != pair[1].subject() {
            return Err(TlsError::file(
                source,
                format!("certificate {} is not issued by the next one: put the leaf first, then each issuer", i + 1),
            ));
        }
    }
    let leaf = &parsed[0];
    let mut names: Vec<String> = match leaf.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(leaf.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 { SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64) } else { SystemTime::UNIX_EPOCH }
    };
    Ok(CertInfo {
        names,
        not_before: time(leaf.validity().not_before),
        not_after: time(leaf.validity().not_after),
        source: source.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_chain_and_its_key_load_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["Shop.Test".into(), "*.shop.test".into()]).unwrap();
        let leaf = params.signed_by(&key, &issuer).unwrap();
        let cert = write(dir.path(), "chain.pem", &format!("{}{}", leaf.pem(), ca.pem()));
        let key_file = write(dir.path(), "key.pem", &key.serialize_pem());
        let loaded = load(&cert, &key_file, &provider()).unwrap();
        assert_eq!(loaded.info.names, ["shop.test", "*.shop.test"]);
        assert!(!loaded.info.is_expired(SystemTime::now()));
        assert_eq!(loaded.info.unusable(SystemTime::now()), None);
        let day = Duration::from_secs(86_400);
        let later = loaded.info.not_after + day;
        assert!(loaded.info.unusable(later).is_some_and(|e| e.contains("shop.test") && e.contains("expired on")));
        let earlier = loaded.info.not_before - day;
        assert!(loaded.info.unusable(earlier).is_some_and(|e| e.contains("not valid before")));
        assert_eq!(loaded.info.days_left(loaded.info.not_after - day * 3 - Duration::from_secs(5)), 3);
        assert_eq!(loaded.info.days_left(later), 0);

        // Out of order: the CA first.
        let wrong = write(dir.path(), "wrong.pem", &format!("{}{}", ca.pem(), leaf.pem()));
        let e = load(&wrong, &key_file, &provider()).unwrap_err().to_string();
        assert!(e.contains("wrong.pem") && e.contains("key does not match"), "{e}");
        let other = rcgen::KeyPair::generate().unwrap();
        let other_file = write(dir.path(), "other.pem", &other.serialize_pem());
        let e = load(&cert, &other_file, &provider()).unwrap_err().to_string();
        assert!(e.contains("other.pem") && e.contains("does not match"), "{e}");
        let reversed = write(dir.path(), "reversed.pem", &format!("{}{}{}", leaf.pem(), leaf.pem(), ca.pem()));
        let e = load(&reversed, &key_file, &provider()).unwrap_err().to_string();
        assert!(e.contains("not issued by the next"), "{e}");
        let e = load(&dir.path().join("missing.pem"), &key_file, &provider()).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
