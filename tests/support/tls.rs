//! TLS for the tests: a throwaway CA that issues short-lived certificates
//! (rcgen, nothing committed), a real rustls client that speaks HTTP/1.1 or
//! HTTP/2 by ALPN, and an HTTPS origin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// `[server]` and `[server.tls]` on 127.0.0.1:0 with these certificates (cert, key),
/// and `server` and `tls` lines in those tables.
pub fn tls_section(certs: &[(PathBuf, PathBuf)], server: &str, tls: &str) -> String {
    let certificates: String = certs
        .iter()
        .map(|(c, k)| format!("[[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n", c.display(), k.display()))
        .collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{server}\n[server.tls]\nlisten = [\"127.0.0.1:0\"]\n{tls}\n{certificates}"
    )
}

/// A certificate authority for one test.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

/// A certificate and its key, as PEM.
pub struct Issued {
    pub chain: String,
    pub key: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        TestCa { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A server certificate for `names`, valid for a day.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names, |_| {})
    }

    pub fn issue_with(&self, names: &[&str], adjust: impl FnOnce(&mut rcgen::CertificateParams)) -> Issued {
        self.issue_key(names, rcgen::KeyPair::generate().unwrap(), adjust)
    }

    /// A certificate for `names` with `key` (RSA, ECDSA, Ed25519…).
    pub fn issue_key(
        &self,
        names: &[&str],
        key: rcgen::KeyPair,
        adjust: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Issued {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names.first().copied().unwrap_or("client"));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued { chain: cert.pem(), key: key.serialize_pem() }
    }

    /// Writes the CA certificate into `dir`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

impl Issued {
    /// Writes `<stem>.pem` and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        std::fs::write(&cert, &self.chain).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        (cert, key)
    }
}

/// What a TLS request saw.
pub struct TlsReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub alpn: Option<Vec<u8>>,
    /// DNS names of the certificate the server presented.
    pub names: Vec<String>,
}

impl TlsReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client_config(ca_pem: &str, alpn: &[&[u8]], client: Option<&Issued>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.chain.as_bytes()).map(Result::unwrap).collect();
            let key = PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A client that accepts any certificate: to see what a server presents
/// (for a name it does not know, say) without judging it.
pub fn unverified_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to `addr` naming `sni`.
pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from(sni.to_string()).unwrap(), tcp).await
}

fn names_of(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<String> {
    let Some(leaf) = stream.get_ref().1.peer_certificates().and_then(|c| c.first()) else { return Vec::new() };
    names_in(leaf)
}

/// The DNS names of a certificate.
pub fn names_in(leaf: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One GET over a new TLS connection, HTTP/2 if `h2`, else HTTP/1.1.
pub async fn tls_get(addr: SocketAddr, sni: &str, ca_pem: &str, h2: bool, path: &str) -> std::io::Result<TlsReply> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let stream = connect(addr, sni, client_config(ca_pem, alpn, None)).await?;
    let mut conn = Connection::open(stream).await;
    Ok(conn.get(sni, path).await)
}

/// A kept-alive TLS connection, HTTP/1.1 or HTTP/2 by what ALPN chose.
pub struct Connection {
    sender: Sender,
    pub alpn: Option<Vec<u8>>,
    pub names: Vec<String>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Connection {
    pub async fn open(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Connection {
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let names = names_of(&stream);
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            Sender::H2(s)
        } else {
            let (s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Sender::H1(s)
        };
        Connection { sender, alpn, names }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> TlsReply {
        let res = match &mut self.sender {
            Sender::H1(s) => {
                let req = Request::get(path).header("host", host).body(Empty::new()).unwrap();
                s.send_request(req).await.unwrap()
            }
            Sender::H2(s) => {
                let req = Request::get(format!("https://{host}{path}")).body(Empty::new()).unwrap();
                s.send_request(req).await.unwrap()
            }
        };
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        TlsReply {
            status: parts.status,
            headers: parts.headers,
            body,
            alpn: self.alpn.clone(),
            names: self.names.clone(),
        }
    }
}

/// An HTTPS origin with `cert` that answers every request with `answer` (status 200).
pub async fn https_origin(cert: &Issued, answer: &'static str) -> SocketAddr {
    https_origin_with(cert, answer, None).await
}

/// The same, requiring client certificates signed by `client_ca` when given.
pub async fn https_origin_with(cert: &Issued, answer: &'static str, client_ca: Option<&str>) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain.as_bytes()).map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from(
                        answer,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    addr
}
