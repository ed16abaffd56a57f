//! A load generator for one URL over HTTP/3 (quinn, h3) or TLS + HTTP/2 (h2),
//! the same way for both: `conns` connections, each with `streams` requests
//! in flight, for `duration`; prints what completed. h2load speaks HTTP/3 only
//! when built with ngtcp2, which Debian's is not. `benches/http3.sh` runs it.
//!
//!   h3load h3|h2 ADDR HOST PATH [CONNS STREAMS SECONDS]
//!
//! The server's certificate is not checked: this measures, on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Run {
    addr: SocketAddr,
    host: String,
    path: String,
    done: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

fn main() -> Result<(), Error> {
    // `cargo bench` adds --bench.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [proto, addr, host, path, rest @ ..] = &args[..] else {
        eprintln!("usage: h3load h3|h2 ADDR HOST PATH [CONNS STREAMS SECONDS]");
        std::process::exit(2);
    };
    let num = |i: usize, default: u64| rest.get(i).map_or(Ok(default), |v| v.parse::<u64>());
    let (conns, streams, seconds) = (num(0, 10)?, num(1, 10)?, num(2, 8)?);
    let run = Arc::new(Run {
        addr: addr.parse()?,
        host: host.clone(),
        path: path.clone(),
        done: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let h3 = match proto.as_str() {
        "h3" => true,
        "h2" => false,
        other => return Err(format!("unknown protocol {other}: h3 or h2").into()),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let endpoint = h3.then(quic_endpoint).transpose()?;
        for _ in 0..conns {
            match &endpoint {
                Some(e) => tasks.spawn(over_h3(e.clone(), run.clone(), streams)),
                None => tasks.spawn(over_h2(run.clone(), streams)),
            };
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        run.stop.store(true, Relaxed);
        while let Some(ended) = tasks.join_next().await {
            if let Ok(Err(e)) = ended {
                eprintln!("connection failed: {e}");
            }
        }
        Ok::<_, Error>(())
    })?;
    let took = started.elapsed().as_secs_f64();
    let done = run.done.load(Relaxed);
    println!(
        "requests {done} failed {} bytes {} seconds {took:.3} req_per_s {:.0}",
        run.failed.load(Relaxed),
        run.bytes.load(Relaxed),
        done as f64 / took
    );
    Ok(())
}

fn tls(alpn: &[u8]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

fn quic_endpoint() -> Result<quinn::Endpoint, Error> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls(b"h3"))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    Ok(endpoint)
}

async fn over_h3(endpoint: quinn::Endpoint, run: Arc<Run>, streams: u64) -> Result<(), Error> {
    let quic = endpoint.connect(run.addr, &run.host)?.await?;
    let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(quic.clone())).await?;
    let driving = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (mut sender, run) = (sender.clone(), run.clone());
        workers.spawn(async move {
            while !run.stop.load(Relaxed) {
                let req = http::Request::get(format!("https://{}{}", run.host, run.path)).body(())?;
                let mut stream = sender.send_request(req).await?;
                stream.finish().await?;
                let head = stream.recv_response().await?;
                let mut n = 0;
                while let Some(chunk) = stream.recv_data().await? {
                    n += chunk.remaining() as u64;
                }
                count(&run, head.status(), n);
            }
            Ok::<_, Error>(())
        });
    }
    let ended = drain(workers).await;
    quic.close(0u8.into(), b"");
    driving.abort();
    ended
}

async fn over_h2(run: Arc<Run>, streams: u64) -> Result<(), Error> {
    let tcp = tokio::net::TcpStream::connect(run.addr).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls(b"h2")));
    let stream = connector.connect(ServerName::try_from(run.host.clone())?, tcp).await?;
    let (sender, connection) = h2::client::handshake(stream).await?;
    let driving = tokio::spawn(connection);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (sender, run) = (sender.clone(), run.clone());
        workers.spawn(async move {
            while !run.stop.load(Relaxed) {
                let req = http::Request::get(format!("https://{}{}", run.host, run.path)).body(())?;
                let mut sender = sender.clone().ready().await?;
                let (response, _) = sender.send_request(req, true)?;
                let (head, mut body) = response.await?.into_parts();
                let mut n = 0;
                while let Some(chunk) = body.data().await {
                    let chunk: Bytes = chunk?;
                    n += chunk.len() as u64;
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                count(&run, head.status, n);
            }
            Ok::<_, Error>(())
        });
    }
    let ended = drain(workers).await;
    driving.abort();
    ended
}

fn count(run: &Run, status: http::StatusCode, bytes: u64) {
    if run.stop.load(Relaxed) {
        return;
    }
    match status.is_success() {
        true => run.done.fetch_add(1, Relaxed),
        false => run.failed.fetch_add(1, Relaxed),
    };
    run.bytes.fetch_add(bytes, Relaxed);
}

async fn drain(mut workers: tokio::task::JoinSet<Result<(), Error>>) -> Result<(), Error> {
    let mut first = Ok(());
    while let Some(ended) = workers.join_next().await {
        if let Ok(Err(e)) = ended
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

/// Takes any certificate (loopback measurements only), still checking signatures.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
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
