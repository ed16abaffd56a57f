//! TLS, on rustls with the aws-lc-rs provider: the server side of the TLS
//! listeners (certificates by SNI, ALPN, client certificates), the client side
//! for `https://` upstreams, and certificates obtained over ACME.
//!
//! aws-lc-rs rather than ring: its RSA and P-256 handshakes are faster, which
//! is what a connection-per-request client pays for, and it is rustls's default.
//!
//! A [`Tls`] is built from one configuration, reading every file it names and
//! refusing a certificate that is expired or not yet valid; a reload builds a
//! new one or is refused, and the listener takes the current one for each new
//! handshake, so open connections keep theirs. [`watch_expiry`] warns daily
//! about certificates that end while relais runs.

pub(crate) mod acme;
mod certs;
pub(crate) mod client;
mod resolve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::HeaderValue;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;

pub use certs::CertInfo;
pub(crate) use certs::Loaded;
pub(crate) use resolve::{ACME_TLS_ALPN, covers};

use crate::config::{ClientAuth, FieldName, TlsConfig, TlsVersion, UnknownName};

/// A file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub(crate) struct TlsError {
    pub file: PathBuf,
    pub reason: String,
}

impl TlsError {
    pub(crate) fn file(file: &Path, reason: String) -> TlsError {
        TlsError { file: file.to_path_buf(), reason }
    }
}

/// The crypto provider every TLS object here uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The TLS listeners' setup for one configuration.
pub(crate) struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The configured certificates, in order.
    pub certificates: Vec<CertInfo>,
    /// `Strict-Transport-Security`, when configured.
    pub hsts: Option<HeaderValue>,
    /// With `http3`: QUIC's TLS (1.3 only, ALPN `h3`), with the same
    /// certificates, and the `Alt-Svc` the TLS listeners send.
    pub quic: Option<Arc<quinn::crypto::rustls::QuicServerConfig>>,
    pub alt_svc: Option<HeaderValue>,
    /// Where the client certificate's subject goes, when configured.
    pub client_subject_header: Option<FieldName>,
    pub handshake_timeout: std::time::Duration,
    /// 0-RTT on the QUIC listeners (`early_data`).
    pub early_data: bool,
    /// Picks certificates; with `strict_host`, also tells a connection's names.
    resolver: Arc<resolve::Resolver>,
    strict_host: bool,
}

/// QUIC's resumable sessions, one store for the process: a reload keeps
/// them, so a client's ticket (and its 0-RTT) outlives it.
fn quic_sessions() -> Arc<dyn rustls::server::StoresServerSessions> {
    static SESSIONS: std::sync::OnceLock<Arc<rustls::server::ServerSessionMemoryCache>> = std::sync::OnceLock::new();
    SESSIONS.get_or_init(|| rustls::server::ServerSessionMemoryCache::new(16 * 1024)).clone()
}

impl Tls {
    /// Reads every certificate and key `config` names. `issued` holds what ACME
    /// obtained, kept across reloads. `quic_port` is the first QUIC listener's
    /// (bound at start), which `Alt-Svc` offers.
    pub(crate) fn new(config: &TlsConfig, issued: Arc<Issued>, quic_port: Option<u16>) -> Result<Tls, TlsError> {
        let provider = provider();
        let loaded: Vec<Loaded> =
            config.certificates.iter().map(|c| certs::load(&c.cert, &c.key, &provider)).collect::<Result<_, _>>()?;
        let now = std::time::SystemTime::now();
        // The key that names the file is added by the caller (`Config::file_error`).
        for l in &loaded {
            if let Some(why) = l.info.unusable(now) {
                return Err(TlsError::file(&l.info.source, why));
            }
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError { file: PathBuf::from("[server.tls]"), reason: e.to_string() })?;
        // QUIC is TLS 1.3 only (RFC 9001).
        let quic = match config.http3 {
            true => Some(
                ServerConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(|e| TlsError { file: PathBuf::from("[server.tls]"), reason: e.to_string() })?,
            ),
            false => None,
        };
        let verifier = match &config.client_ca {
            None => None,
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs::read_chain(ca)? {
                    roots.add(cert).map_err(|e| TlsError::file(ca, format!("not a CA certificate: {e}")))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = match config.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                Some(verifier.build().map_err(|e| TlsError::file(ca, e.to_string()))?)
            }
        };
        let reject = config.unknown_name == UnknownName::Reject;
        let resolver = Arc::new(resolve::Resolver::new(&loaded, reject, issued));
        let authenticate = |b: rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>| match &verifier {
            None => b.with_no_client_auth(),
            Some(v) => b.with_client_cert_verifier(v.clone()),
        };
        let quic = match quic {
            Some(b) => {
                let mut server = authenticate(b).with_cert_resolver(resolver.clone());
                server.alpn_protocols = vec![b"h3".to_vec()];
                // 0-RTT only when asked: early data is replayable. rustls takes it
                // only on a resumption from `session_storage` (each ticket used
                // once), never from stateless tickets; QUIC allows 0 or u32::MAX.
                if config.early_data {
                    server.max_early_data_size = u32::MAX;
                    server.session_storage = quic_sessions();
                } else {
                    server.max_early_data_size = 0;
                }
                let quic = quinn::crypto::rustls::QuicServerConfig::try_from(server)
                    .map_err(|e| TlsError { file: PathBuf::from("[server.tls]"), reason: e.to_string() })?;
                Some(Arc::new(quic))
            }
            None => None,
        };
        let alt_svc = match (config.http3, quic_port) {
            (true, Some(port)) => {
                HeaderValue::try_from(format!("h3=\":{port}\"; ma={}", config.alt_svc_max_age.get().as_secs())).ok()
            }
            _ => None,
        };
        let mut server = authenticate(builder).with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        server.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| TlsError { file: PathBuf::from("[server.tls]"), reason: e.to_string() })?;
        let hsts = config.hsts.as_ref().and_then(|h| HeaderValue::try_from(h.value()).ok());
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            certificates: loaded.into_iter().map(|l| l.info).collect(),
            hsts,
            quic,
            alt_svc,
            client_subject_header: config.client_subject_header.clone(),
            handshake_timeout: config.handshake_timeout.get(),
            early_data: config.early_data,
            resolver,
            strict_host: config.strict_host,
        })
    }

    /// With `strict_host`: the names of the certificate a handshake that named
    /// `sni` got, which every request on its connection must be for.
    pub(crate) fn served_names(&self, sni: Option<&str>) -> Option<Arc<[String]>> {
        if !self.strict_host {
            return None;
        }
        self.resolver.names(sni)
    }
}

/// Certificates obtained over ACME, by name, and the challenge certificates of
/// orders in progress (tls-alpn-01). Shared by every [`Tls`] and kept across reloads.
#[derive(Debug, Default)]
pub(crate) struct Issued {
    certificates: ArcSwap<HashMap<String, Loaded>>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// http-01 tokens and their key authorizations.
    tokens: Mutex<HashMap<String, String>>,
}

impl Issued {
    pub(crate) fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.certificates.load().get(name).map(|l| l.key.clone())
    }

    pub(crate) fn install(&self, name: &str, loaded: Loaded) {
        self.certificates.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(name.to_string(), loaded.clone());
            next
        });
    }

    /// What ACME certificates there are, for metrics and logs.
    pub(crate) fn infos(&self) -> Vec<CertInfo> {
        let mut all: Vec<CertInfo> = self.certificates.load().values().map(|l| l.info.clone()).collect();
        all.sort_by(|a, b| a.names.cmp(&b.names));
        all
    }

    pub(crate) fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges.lock().unwrap_or_else(PoisonError::into_inner).get(&name.to_ascii_lowercase()).cloned()
    }

    pub(crate) fn set_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        let mut challenges = self.challenges.lock().unwrap_or_else(PoisonError::into_inner);
        match key {
            Some(k) => challenges.insert(name.to_ascii_lowercase(), k),
            None => challenges.remove(&name.to_ascii_lowercase()),
        };
    }

    /// The key authorization for an http-01 token.
    pub(crate) fn token(&self, token: &str) -> Option<String> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner).get(token).cloned()
    }

    pub(crate) fn set_token(&self, token: &str, authorization: Option<String>) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match authorization {
            Some(a) => tokens.insert(token.to_string(), a),
            None => tokens.remove(token),
        };
    }
}

/// Logs every certificate `certificates` returns that ends within 14 days
/// (a warning) or has ended (an error): now, then once a day until `stop`.
pub(crate) async fn watch_expiry(
    certificates: impl Fn() -> Vec<CertInfo>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut day = tokio::time::interval(std::time::Duration::from_secs(86_400));
    loop {
        tokio::select! {
            _ = day.tick() => {}
            _ = stop.changed() => return,
        }
        let now = std::time::SystemTime::now();
        for cert in certificates() {
            cert.log_expiry(now);
        }
    }
}

/// What `relais check` verifies: every certificate and key the configuration
/// names can be used (the TLS listeners' and the upstreams' client files).
/// Returns the listeners' certificates, to print.
pub(crate) fn check(config: &crate::config::Config) -> Result<Vec<CertInfo>, TlsError> {
    for u in config.upstreams.values() {
        if u.servers.iter().any(|s| s.address().is_tls()) {
            client::config(&u.tls)?;
        }
    }
    match &config.server.tls {
        Some(t) => Ok(Tls::new(t, Arc::new(Issued::default()), None)?.certificates),
        None => Ok(Vec::new()),
    }
}

/// The subject of a verified client certificate, as `CN=…,O=…`.
pub(crate) fn subject_of(cert: &rustls_pki_types::CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}
