//! Certificates obtained and renewed over ACME (RFC 8555), as Caddy does:
//! one certificate per name, ordered with instant-acme, validated by
//! `tls-alpn-01` (answered by the TLS listeners' resolver) or `http-01`
//! (answered on the cleartext listeners), stored under `acme.storage` and
//! reused across restarts.
//!
//! The work runs in one background task: names with a stored, unexpired
//! certificate are served at once, and nothing here ever blocks serving. A
//! certificate is renewed once `renew_at` of its lifetime has passed; a failed
//! order is retried after `retry_after`, doubling to an hour.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{Issued, certs, provider};
use crate::config::{AcmeConfig, Challenge, Config, HostPattern};
use crate::metrics::Metrics;

/// The names to obtain certificates for: those listed, with `"routes"`
/// standing for every exact route host.
pub(crate) fn names(acme: &AcmeConfig, config: &Config) -> Vec<String> {
    let mut names = Vec::new();
    for n in &acme.names {
        if n == "routes" {
            names.extend(config.routes.iter().filter_map(|r| match &r.host {
                Some(HostPattern::Exact(h)) => Some(h.clone()),
                _ => None,
            }));
        } else {
            names.push(n.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Why an order did not give a certificate.
#[derive(Debug, thiserror::Error)]
enum AcmeError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("{0}")]
    Other(String),
}

/// Serves the stored, still valid certificates: called before the listeners
/// accept, so a restart serves them from its first handshake.
pub(crate) fn install_stored(acme: &AcmeConfig, names: &[String], issued: &Issued) {
    if let Err(e) = std::fs::create_dir_all(&acme.storage) {
        tracing::error!(dir = %acme.storage.display(), error = %e, "acme: cannot create the storage directory");
    }
    for name in names {
        match load_stored(&acme.storage, name) {
            Some(loaded) => {
                tracing::info!(name, expires = %httpdate::fmt_http_date(loaded.info.not_after), "acme: stored certificate in use");
                issued.install(name, loaded);
            }
            None => tracing::info!(name, "acme: no stored certificate yet"),
        }
    }
}

/// Keeps every name's certificate valid until `stop` (after [`install_stored`]).
pub(crate) async fn run(
    acme: AcmeConfig,
    names: Vec<String>,
    issued: Arc<Issued>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut account: Option<Account> = None;
    // When each name is next due (renewal, or retry after a failure), and the retry pause.
    let mut due: Vec<(String, SystemTime, Duration)> =
        names.iter().map(|n| (n.clone(), next_renewal(&issued, n, acme.renew_at), acme.retry_after.get())).collect();
    loop {
        let now = SystemTime::now();
        for (name, when, pause) in due.iter_mut() {
            if *when > now {
                continue;
            }
            match obtain(&acme, &mut account, name, &issued).await {
                Ok(loaded) => {
                    tracing::info!(name = %name, expires = %httpdate::fmt_http_date(loaded.info.not_after), "acme: certificate obtained");
                    issued.install(name, loaded);
                    metrics.acme(true);
                    *pause = acme.retry_after.get();
                    *when = next_renewal(&issued, name, acme.renew_at);
                }
                Err(e) => {
                    tracing::warn!(name = %name, error = %e, retry_in = ?*pause, "acme: order failed");
                    metrics.acme(false);
                    *when = SystemTime::now() + *pause;
                    *pause = (*pause * 2).min(Duration::from_secs(3600));
                }
            }
        }
        let next = due.iter().map(|(_, when, _)| *when).min();
        let wait = next.and_then(|w| w.duration_since(SystemTime::now()).ok()).unwrap_or(Duration::ZERO);
        // Wake at least hourly: clocks jump.
        let wait = wait.min(Duration::from_secs(3600));
        if next.is_none() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// When `name`'s certificate is due for renewal: now if it has none.
fn next_renewal(issued: &Issued, name: &str, renew_at: f64) -> SystemTime {
    let Some(info) = issued.infos().into_iter().find(|i| i.names.iter().any(|n| n == name)) else {
        return SystemTime::now();
    };
    let lifetime = info.not_after.duration_since(info.not_before).unwrap_or_default();
    info.not_before + lifetime.mul_f64(renew_at)
}

fn name_dir(storage: &Path, name: &str) -> PathBuf {
    storage.join(name)
}

/// A stored certificate for `name` that is still valid.
fn load_stored(storage: &Path, name: &str) -> Option<certs::Loaded> {
    let dir = name_dir(storage, name);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.is_file() {
        return None;
    }
    match certs::load(&cert, &key, &provider()) {
        Ok(loaded) if !loaded.info.is_expired(SystemTime::now()) => Some(loaded),
        Ok(_) => {
            tracing::warn!(name, "acme: the stored certificate has expired");
            None
        }
        Err(e) => {
            tracing::warn!(name, error = %e, "acme: the stored certificate cannot be used");
            None
        }
    }
}

/// The account, from stored credentials or created (and stored) on first use.
async fn account(acme: &AcmeConfig) -> Result<Account, AcmeError> {
    let builder = || match &acme.ca_root {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    // One account per directory.
    let digest = Sha256::digest(acme.directory.as_bytes());
    let file = acme.storage.join(format!("account-{}.json", hex::encode(&digest[..8])));
    if let Ok(text) = std::fs::read_to_string(&file) {
        match serde_json::from_str::<AccountCredentials>(&text) {
            Ok(credentials) => return Ok(builder()?.from_credentials(credentials).await?),
            Err(e) => tracing::warn!(file = %file.display(), error = %e, "acme: unreadable account; creating another"),
        }
    }
    let contact = acme.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder()?.create(&new, acme.directory.clone(), None).await?;
    let text = serde_json::to_string(&credentials).map_err(|e| AcmeError::Other(e.to_string()))?;
    write_private(&file, text.as_bytes()).map_err(|e| AcmeError::Other(format!("{}: {e}", file.display())))?;
    Ok(account)
}

/// One order for `name`: challenges answered, a new key, the chain; stored.
async fn obtain(
    acme: &AcmeConfig,
    account_slot: &mut Option<Account>,
    name: &str,
    issued: &Issued,
) -> Result<certs::Loaded, AcmeError> {
    if account_slot.is_none() {
        *account_slot = Some(account(acme).await?);
    }
    let account = account_slot.as_ref().ok_or_else(|| AcmeError::Other("no account".into()))?;
    let identifiers = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut tokens = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let kind = match acme.challenge {
                Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                Challenge::Http01 => ChallengeType::Http01,
            };
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| AcmeError::Other(format!("the CA offers no {kind:?} challenge for {name}")))?;
            let authorization = challenge.key_authorization();
            match acme.challenge {
                Challenge::TlsAlpn01 => {
                    issued.set_challenge(name, Some(alpn_certificate(name, authorization.digest().as_ref())?))
                }
                Challenge::Http01 => {
                    issued.set_token(&challenge.token, Some(authorization.as_str().to_string()));
                    tokens.push(challenge.token.clone());
                }
            }
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retries).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Other(format!("order for {name} ended {status:?}")));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Other(e.to_string()))?;
        let csr = rcgen::CertificateParams::new(vec![name.to_string()])
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| AcmeError::Other(e.to_string()))?;
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&retries).await?;
        Ok((chain, key.serialize_pem()))
    }
    .await;
    issued.set_challenge(name, None);
    for t in &tokens {
        issued.set_token(t, None);
    }
    let (chain_pem, key_pem) = result?;
    let dir = name_dir(&acme.storage, name);
    std::fs::create_dir_all(&dir).map_err(|e| AcmeError::Other(format!("{}: {e}", dir.display())))?;
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    write_private(&key_file, key_pem.as_bytes())
        .map_err(|e| AcmeError::Other(format!("{}: {e}", key_file.display())))?;
    std::fs::write(&cert_file, &chain_pem).map_err(|e| AcmeError::Other(format!("{}: {e}", cert_file.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| AcmeError::Other(format!("the CA's chain is not PEM: {e}")))?;
    let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| AcmeError::Other(e.to_string()))?;
    certs::from_der(chain, der, &provider(), &cert_file, &key_file).map_err(|e| AcmeError::Other(e.to_string()))
}

/// RFC 8737: a self-signed certificate for `name` carrying the digest of the
/// key authorization, shown only to `acme-tls/1` handshakes.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let other = |e: rcgen::Error| AcmeError::Other(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(other)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(other)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(other)?;
    let der =
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(|e| AcmeError::Other(e.to_string()))?;
    let signing = provider().key_provider.load_private_key(der).map_err(|e| AcmeError::Other(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// Writes a file only its owner can read (keys, account credentials).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_stands_for_every_exact_route_host() {
        let config = Config::from_toml(
            "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\n\
             [acme]\ndirectory = \"https://ca.test/dir\"\nnames = [\"Extra.Test.\", \"routes\"]\n\
             [upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\nhost = \"shop.test\"\nupstream = \"a\"\n[[routes]]\nhost = \"*.wild.test\"\nupstream = \"a\"\n\
             [[routes]]\nupstream = \"a\"\n[[routes]]\nhost = \"shop.test\"\npath = \"/api/\"\nupstream = \"a\"\n",
            "t",
        )
        .unwrap();
        let acme = config.acme.clone().unwrap();
        assert_eq!(names(&acme, &config), ["extra.test", "shop.test"]);
    }

    #[test]
    fn renewal_comes_at_the_configured_fraction_of_the_lifetime() {
        let issued = Issued::default();
        assert!(next_renewal(&issued, "a.test", 0.5) <= SystemTime::now(), "no certificate: at once");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let cert = params.self_signed(&key).unwrap();
        let der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let loaded =
            certs::from_der(vec![cert.der().clone()], der, &provider(), Path::new("c"), Path::new("k")).unwrap();
        issued.install("a.test", loaded);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000); // 2030-01-01
        assert_eq!(next_renewal(&issued, "a.test", 0.5), start + Duration::from_secs(15 * 86_400));
    }
}
