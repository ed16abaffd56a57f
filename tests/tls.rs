//! TLS termination and HTTPS upstreams, with real rustls clients and
//! certificates issued for each test by a throwaway CA.

mod support;

use std::time::Duration;

use http::Request;
use support::tls::{
    Connection, TestCa, client_config, connect, https_origin, https_origin_with, tls_get, tls_section,
    unverified_config,
};
use support::*;
use tokio::io::AsyncReadExt;

/// An origin that says which scheme relais says the client used, cacheable.
async fn scheme_origin() -> Origin {
    origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let proto = req.headers().get("x-forwarded-proto").map(|v| v.to_str().unwrap().to_string());
            let subject = req.headers().get("x-client-subject").map(|v| v.to_str().unwrap().to_string());
            let body = format!("proto={} subject={}", proto.unwrap_or_default(), subject.unwrap_or_default());
            text(200, &body, &[("cache-control", "max-age=60")])
        })
        .start()
        .await
}

/// relais with `[server.tls]` on 127.0.0.1:0 and `tls_extra` lines in that table.
async fn tls_relais(
    o: &Origin,
    certs: &[(std::path::PathBuf, std::path::PathBuf)],
    tls_extra: &str,
    rest: &str,
) -> Relais {
    relais(proxy_to(o.addr).section(tls_section(certs, rest, tls_extra))).await
}

#[tokio::test]
async fn https_over_http1_and_http2_by_alpn_and_the_scheme_is_known() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = tls_relais(&o, &[cert], "", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    for h2 in [false, true] {
        let r = tls_get(addr, "a.test", &ca.pem, h2, "/page").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.alpn.as_deref(), Some(if h2 { &b"h2"[..] } else { &b"http/1.1"[..] }));
        assert!(r.text().starts_with("proto=https"), "{}", r.text());
    }
    // Cached under its https URL: the second request above was a hit, and the
    // cleartext listener's http URL is another key.
    let r = tls_get(addr, "a.test", &ca.pem, true, "/page").await.unwrap();
    assert!(r.header("cache-status").unwrap().contains("hit"));
    let r = get_with(&proxy.url("/page"), &[("host", "a.test")]).await;
    assert_eq!(r.text(), "proto=http subject=");
    assert_eq!(o.hits("/page"), 2);
}

#[tokio::test]
async fn sni_picks_the_certificate_and_unknown_names_get_the_default_or_nothing() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let first = ca.issue(&["a.test"]).write(dir.path(), "a");
    let second = ca.issue(&["b.test"]).write(dir.path(), "b");
    let wild = ca.issue(&["*.w.test"]).write(dir.path(), "w");
    let certs = [first, second, wild];
    let proxy = tls_relais(&o, &certs, "", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    let names = |addr: std::net::SocketAddr, sni: &'static str| {
        let ca = ca.pem.clone();
        async move {
            let stream = connect(addr, sni, client_config(&ca, &[b"http/1.1"], None)).await;
            stream.map(|s| {
                let leaf = s.get_ref().1.peer_certificates().unwrap()[0].clone();
                let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
                cert.subject().to_string()
            })
        }
    };
    assert_eq!(names(addr, "a.test").await.unwrap(), "CN=a.test");
    assert_eq!(names(addr, "B.Test").await.unwrap(), "CN=b.test", "names are matched without case");
    assert_eq!(names(addr, "x.w.test").await.unwrap(), "CN=*.w.test");
    // One label only: a.b.w.test is not covered by *.w.test, and gets the default,
    // which the client then refuses as not its name.
    assert!(names(addr, "a.b.w.test").await.is_err());
    // Unknown, with the default certificate: the handshake goes on with a.test's.
    let raw = rustls_no_verify(addr, "unknown.test").await;
    assert_eq!(raw.as_deref(), Some("CN=a.test"));
    drop(proxy);

    let proxy = tls_relais(&o, &certs, "unknown_name = \"reject\"", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    assert_eq!(rustls_no_verify(addr, "unknown.test").await, None, "unknown names rejected");
    assert!(names(addr, "b.test").await.is_ok());
}

/// The subject of the certificate a server presents for `sni`, unverified
/// (to see what an unknown name gets); None if the handshake fails.
async fn rustls_no_verify(addr: std::net::SocketAddr, sni: &str) -> Option<String> {
    let stream = connect(addr, sni, unverified_config()).await.ok()?;
    let leaf = stream.get_ref().1.peer_certificates()?[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    Some(cert.subject().to_string())
}

/// A reload re-reads the certificate files: new handshakes get the new one, a
/// kept-alive connection carries on, and a bad file is refused with its name.
#[tokio::test]
async fn a_reload_swaps_certificates_and_refuses_bad_files() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (cert, key) = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = tls_relais(&o, &[(cert.clone(), key.clone())], "", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    let stream = connect(addr, "a.test", client_config(&ca.pem, &[b"http/1.1"], None)).await.unwrap();
    let mut kept = Connection::open(stream).await;
    assert_eq!(kept.get("a.test", "/").await.status, 200);
    assert_eq!(kept.names, ["a.test"]);

    // The same files, new contents.
    ca.issue(&["a.test", "v2.a.test"]).write(dir.path(), "a");
    proxy.handle.reload(proxy.handle.config().as_ref().clone()).unwrap();
    let fresh = tls_get(addr, "a.test", &ca.pem, false, "/").await.unwrap();
    assert_eq!(fresh.names, ["a.test", "v2.a.test"], "a new handshake gets the new certificate");
    assert_eq!(kept.get("a.test", "/").await.status, 200, "the kept-alive connection is still served");

    std::fs::write(&cert, "not a certificate").unwrap();
    let err = proxy.handle.reload(proxy.handle.config().as_ref().clone()).unwrap_err().to_string();
    assert!(err.contains(&cert.display().to_string()), "{err}");
    let still = tls_get(addr, "a.test", &ca.pem, false, "/").await.unwrap();
    assert_eq!(still.names, ["a.test", "v2.a.test"], "the running certificates stay");

    // An expired certificate, or one not valid yet, is refused as `check` and a start refuse it.
    let day = time::Duration::days(1);
    let now = time::OffsetDateTime::now_utc();
    for (not_before, not_after, why) in
        [(now - day * 30, now - day, "expired on"), (now + day, now + day * 30, "not valid before")]
    {
        ca.issue_with(&["a.test"], |p| (p.not_before, p.not_after) = (not_before, not_after)).write(dir.path(), "a");
        let err = proxy.handle.reload(proxy.handle.config().as_ref().clone()).unwrap_err().to_string();
        assert!(err.contains(&cert.display().to_string()), "{err}");
        assert!(err.contains("server.tls.certificates[0].cert") && err.contains(why), "{err}");
        let still = tls_get(addr, "a.test", &ca.pem, false, "/").await.unwrap();
        assert_eq!(still.names, ["a.test", "v2.a.test"], "the running certificates stay");
    }
}

#[tokio::test]
async fn cleartext_is_redirected_to_https_and_tls_answers_carry_hsts() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let hsts = "hsts = { max_age = \"365d\", include_subdomains = true }";
    let server = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nredirect_https = true\n[server.tls]\nlisten = [\"127.0.0.1:0\"]\n{hsts}\n\
         [[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"",
        cert.0.display(),
        cert.1.display(),
    );
    let proxy = relais(proxy_to(o.addr).route("/open/", "o").with("redirect_https = false").section(server)).await;
    let port = proxy.handle.tls_addrs()[0].port();
    let r = get_with(&proxy.url("/a/b?c=1"), &[("host", "A.test")]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location").unwrap(), format!("https://a.test:{port}/a/b?c=1"));
    assert_eq!(o.total_hits(), 0);
    assert!(r.header("strict-transport-security").is_none(), "HSTS is for TLS answers");
    let r = get_with(&proxy.url("/open/x"), &[("host", "a.test")]).await;
    assert_eq!(r.status, 200, "the route's redirect_https = false wins");
    let r = tls_get(proxy.handle.tls_addrs()[0], "a.test", &ca.pem, true, "/a").await.unwrap();
    assert_eq!(r.header("strict-transport-security").unwrap(), "max-age=31536000; includeSubDomains");
}

#[tokio::test]
async fn client_certificates_are_required_and_their_subject_reaches_the_origin() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let client_ca = clients.write(dir.path());
    let extra = format!("client_ca = \"{}\"\nclient_subject_header = \"x-client-subject\"", client_ca.display());
    let proxy = tls_relais(&o, &[cert], &extra, "").await;
    let addr = proxy.handle.tls_addrs()[0];

    // Without a certificate: no request gets through (TLS 1.3 reports the refusal at the first read).
    let refused = match connect(addr, "a.test", client_config(&ca.pem, &[b"http/1.1"], None)).await {
        Err(_) => true,
        Ok(mut s) => {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(s.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate was served");
    let mine = clients.issue_with(&[], |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, "client one");
    });
    let stream = connect(addr, "a.test", client_config(&ca.pem, &[b"h2"], Some(&mine))).await.unwrap();
    let r = Connection::open(stream).await.get("a.test", "/who").await;
    assert_eq!(r.text(), "proto=https subject=CN=client one");
    // A cleartext client cannot claim a subject.
    let r = get_with(&proxy.url("/forged"), &[("host", "a.test"), ("x-client-subject", "CN=admin")]).await;
    assert_eq!(r.text(), "proto=http subject=");
}

/// A socket that sends nothing is closed after the header timeout, as on the
/// cleartext listeners; one that starts a handshake and stalls, after the
/// handshake timeout.
#[tokio::test(start_paused = true)]
async fn a_handshake_that_never_comes_is_cut_off() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = tls_relais(&o, &[cert], "handshake_timeout = \"500ms\"", "header_read_timeout = \"500ms\"").await;
    for start in [&[][..], &[0x16, 0x03, 0x01, 0x02, 0x00][..]] {
        let mut socket = tokio::net::TcpStream::connect(proxy.handle.tls_addrs()[0]).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut socket, start).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(3), socket.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "still open after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// Sockets that send nothing hold no handshake place: with many of them
/// open, a real client's handshake starts at once rather than after theirs
/// time out.
#[tokio::test]
async fn silent_sockets_hold_no_handshake_place() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = tls_relais(&o, &[cert], "max_handshakes = 16", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = tokio::time::timeout(Duration::from_secs(3), tls_get(addr, "a.test", &ca.pem, false, "/")).await;
    assert_eq!(r.expect("handshake within 3 s").unwrap().status, 200);
}

/// One source that holds handshakes open gets `max_handshakes_per_source` of
/// the places, and a client from elsewhere still gets one at once.
#[tokio::test]
async fn one_source_cannot_take_every_handshake_place() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = tls_relais(&o, &[cert], "max_handshakes = 80", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    let mut stuck = Vec::new();
    for _ in 0..80 {
        // Half a ClientHello, then nothing.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        stuck.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let elsewhere = async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config(&ca.pem, &[b"h2"], None)));
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        Connection::open(stream).await.get("a.test", "/").await
    };
    let r = tokio::time::timeout(Duration::from_secs(3), elsewhere).await;
    assert_eq!(r.expect("handshake within 3 s").status, 200);
}

#[tokio::test]
async fn https_upstreams_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("origin CA");
    let other = TestCa::new("other CA");
    let origin = https_origin(&ca.issue(&["app.internal"]), "over tls").await;
    let ca_file = ca.write(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other_file = other.write(other_dir.path());
    let upstream = |tls: String| {
        Conf::new()
            .upstream("o", format!("https://127.0.0.1:{}", origin.port()))
            .with(format!("tls = {{ {tls} }}"))
            .route_all("o")
    };
    let good = format!("ca_file = \"{}\", server_name = \"app.internal\"", ca_file.display());
    let proxy = relais(&upstream(good)).await;
    let r = get(&proxy.url("/")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "over tls"));

    let wrong = format!("ca_file = \"{}\", server_name = \"app.internal\"", other_file.display());
    let proxy = relais(&upstream(wrong)).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502, "a certificate from another CA is refused");

    let wrong_name = format!("ca_file = \"{}\", server_name = \"evil.internal\"", ca_file.display());
    let proxy = relais(&upstream(wrong_name)).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502, "a certificate for another name is refused");

    let proxy = relais(&upstream("insecure_skip_verify = true".into())).await;
    assert_eq!(get(&proxy.url("/")).await.text(), "over tls", "explicitly unverified");
}

#[tokio::test]
async fn certificate_expiry_is_a_metric() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test", "www.a.test"]).write(dir.path(), "a");
    let proxy = tls_relais(&o, &[cert], "", "").await;
    let m = proxy.admin("GET", "/metrics", "").await.text();
    let line = m.lines().find(|l| l.starts_with("relais_tls_certificate_expiry_seconds{name=\"www.a.test\"}")).unwrap();
    let expiry: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(expiry > now && expiry <= now + 86_400 + 60, "{line}");
    // And in /stats, as a date.
    let stats: serde_json::Value = serde_json::from_slice(&proxy.admin("GET", "/stats", "").await.body).unwrap();
    let certs = stats["tls_certificates"].as_array().unwrap();
    let www = certs.iter().find(|c| c["name"] == "www.a.test").unwrap();
    assert_eq!(www["expires"], httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(expiry)));
    assert!(www["days_left"].as_u64().is_some_and(|d| d <= 1), "valid for a day: {www}");
}

/// RSA, ECDSA and Ed25519 keys, in PKCS#8, PKCS#1 (RSA) and SEC1 (EC) files.
#[tokio::test]
async fn every_key_kind_and_file_format_serves() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let kinds: [(&str, &'static rcgen::SignatureAlgorithm, bool); 5] = [
        ("rsa-pkcs8", &rcgen::PKCS_RSA_SHA256, false),
        ("rsa-pkcs1", &rcgen::PKCS_RSA_SHA256, true),
        ("p256-pkcs8", &rcgen::PKCS_ECDSA_P256_SHA256, false),
        ("p384-sec1", &rcgen::PKCS_ECDSA_P384_SHA384, true),
        ("ed25519", &rcgen::PKCS_ED25519, false),
    ];
    for (stem, alg, traditional) in kinds {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let (cert, key_file) = ca.issue_key(&["a.test"], key, |_| {}).write(dir.path(), stem);
        if traditional {
            // PKCS#1 ("RSA PRIVATE KEY") or SEC1 ("EC PRIVATE KEY"), as older tools write them.
            let out = std::process::Command::new("openssl")
                .args(["pkey", "-traditional", "-in"])
                .arg(&key_file)
                .output()
                .expect("openssl (scripts/test installs it)");
            assert!(out.status.success());
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.contains("BEGIN RSA PRIVATE KEY") || text.contains("BEGIN EC PRIVATE KEY"), "{text}");
            std::fs::write(&key_file, text).unwrap();
        }
        let proxy = tls_relais(&o, &[(cert, key_file)], "", "").await;
        let r = tls_get(proxy.handle.tls_addrs()[0], "a.test", &ca.pem, false, "/").await;
        assert_eq!(r.map(|r| r.status.as_u16()).ok(), Some(200), "{stem}");
    }
}

#[tokio::test]
async fn min_version_1_3_refuses_tls_1_2_clients() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let tls12 = |ca: &str| {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    };
    let proxy = tls_relais(&o, std::slice::from_ref(&cert), "", "").await;
    assert!(connect(proxy.handle.tls_addrs()[0], "a.test", tls12(&ca.pem)).await.is_ok(), "1.2 by default");
    let proxy = tls_relais(&o, &[cert], "min_version = \"1.3\"", "").await;
    assert!(connect(proxy.handle.tls_addrs()[0], "a.test", tls12(&ca.pem)).await.is_err());
    assert!(tls_get(proxy.handle.tls_addrs()[0], "a.test", &ca.pem, true, "/").await.is_ok());
}

/// Handshakes in progress are capped: with room for one, a second client
/// waits until the first's handshake times out.
#[tokio::test(start_paused = true)]
async fn handshakes_in_progress_are_capped() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = tls_relais(&o, &[cert], "max_handshakes = 1\nhandshake_timeout = \"1s\"", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    // Half a ClientHello, then nothing: it holds the only permit.
    let mut stuck = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stuck, &[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let r = tls_get(addr, "a.test", &ca.pem, false, "/").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "did not wait for the stuck handshake: {:?}",
        started.elapsed()
    );
}

/// `client_auth = "optional"`: a client without a certificate is served, with no subject.
#[tokio::test]
async fn optional_client_certificates() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let extra = format!(
        "client_ca = \"{}\"\nclient_auth = \"optional\"\nclient_subject_header = \"x-client-subject\"",
        clients.write(dir.path()).display()
    );
    let proxy = tls_relais(&o, &[cert], &extra, "").await;
    let r = tls_get(proxy.handle.tls_addrs()[0], "a.test", &ca.pem, false, "/").await.unwrap();
    assert_eq!(r.text(), "proto=https subject=");
}

/// mTLS to the origin: relais presents `client_cert`, and without it the origin refuses.
#[tokio::test]
async fn a_client_certificate_for_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("origin CA");
    let clients = TestCa::new("client CA");
    let origin = https_origin_with(&ca.issue(&["app.internal"]), "hello relais", Some(&clients.pem)).await;
    let ca_file = ca.write(dir.path());
    let (cert, key) = clients.issue(&["relais"]).write(dir.path(), "relais-client");
    let upstream = |tls: String| {
        Conf::new()
            .upstream("o", format!("https://127.0.0.1:{}", origin.port()))
            .with(format!("tls = {{ server_name = \"app.internal\", ca_file = \"{}\"{tls} }}", ca_file.display()))
            .route_all("o")
    };
    let proxy =
        relais(&upstream(format!(", client_cert = \"{}\", client_key = \"{}\"", cert.display(), key.display()))).await;
    assert_eq!(get(&proxy.url("/")).await.text(), "hello relais");
    let proxy = relais(&upstream(String::new())).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
}

/// With `strict_host`, a connection made for one certificate cannot carry
/// requests for a host that only another certificate serves: 421, on
/// HTTP/1.1 and HTTP/2. Without it, as nginx, any host goes.
#[tokio::test]
async fn a_host_outside_the_connections_certificate_is_misdirected() {
    let o = scheme_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let a = ca.issue(&["a.test", "*.w.test"]).write(dir.path(), "a");
    let b = ca.issue(&["b.test"]).write(dir.path(), "b");
    let certs = [a, b];
    let status = |addr: std::net::SocketAddr, h2: bool, sni: &'static str, host: &'static str| {
        let ca = ca.pem.clone();
        async move {
            let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
            let stream = connect(addr, sni, client_config(&ca, alpn, None)).await.unwrap();
            Connection::open(stream).await.get(host, "/").await.status.as_u16()
        }
    };
    let proxy = tls_relais(&o, &certs, "unknown_name = \"reject\"", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    assert_eq!(status(addr, false, "a.test", "b.test").await, 200, "by default, as nginx");
    drop(proxy);

    let proxy = tls_relais(&o, &certs, "unknown_name = \"reject\"\nstrict_host = true", "").await;
    let addr = proxy.handle.tls_addrs()[0];
    for h2 in [false, true] {
        assert_eq!(status(addr, h2, "a.test", "a.test").await, 200);
        assert_eq!(status(addr, h2, "a.test", "b.test").await, 421, "h2: {h2}");
        assert_eq!(status(addr, h2, "x.w.test", "y.w.test").await, 200, "the wildcard covers both");
        assert_eq!(status(addr, h2, "x.w.test", "b.test").await, 421);
        assert_eq!(status(addr, h2, "b.test", "a.test").await, 421);
    }
}
