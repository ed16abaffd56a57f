//! The client side, for `https://` upstream servers: verified against the
//! system's roots or `ca_file`, SNI the server's host or `server_name`, an
//! optional client certificate, and an explicit, logged way to skip verification.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::{TlsError, certs, provider};
use crate::config::UpstreamTls;

/// The TLS client settings of one upstream.
pub(crate) fn config(tls: &UpstreamTls) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError { file: "upstream tls".into(), reason: e.to_string() })?;
    let builder = if tls.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_file {
            Some(ca) => {
                for cert in certs::read_chain(ca)? {
                    roots.add(cert).map_err(|e| TlsError::file(ca, format!("not a CA certificate: {e}")))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for e in &native.errors {
                    tracing::warn!(error = %e, "reading the system's root certificates");
                }
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    tracing::warn!("no system root certificates: https upstreams without ca_file will not verify");
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certs::read_chain(cert)?;
            let der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::file(key, format!("no private key: {e}")))?;
            builder.with_client_auth_cert(chain, der).map_err(|e| TlsError::file(key, e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    // ALPN is set by the connector (HTTP/1.1).
    config.enable_sni = true;
    Ok(config)
}

/// `insecure_skip_verify`: any certificate is accepted (its signatures still
/// checked, so the connection is encrypted to whoever holds the key).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
