//! HTTP/3: a real QUIC + HTTP/3 client (quinn and h3) against relais's QUIC
//! listener beside its TLS listener, with certificates from a throwaway CA.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http::Request;
use http_body_util::BodyExt;
use support::tls::{TestCa, client_config, names_in, tls_get, tls_section};
use support::*;

/// An HTTP/3 answer: status, headers and the whole body.
struct H3Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl H3Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/3 connection to relais, trusting `ca_pem`, naming `sni`.
struct H3Client {
    endpoint: quinn::Endpoint,
    sender: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driving: tokio::task::JoinHandle<h3::error::ConnectionError>,
    sni: String,
    /// The DNS names of the certificate relais presented.
    names: Vec<String>,
}

impl H3Client {
    async fn open(addr: SocketAddr, sni: &str, ca_pem: &str) -> H3Client {
        H3Client::open_from("127.0.0.1:0".parse().unwrap(), addr, sni, ca_pem).await
    }

    async fn open_from(from: SocketAddr, addr: SocketAddr, sni: &str, ca_pem: &str) -> H3Client {
        H3Client::open_with(from, addr, sni, client_config(ca_pem, &[b"h3"], None)).await
    }

    async fn open_with(from: SocketAddr, addr: SocketAddr, sni: &str, tls: rustls::ClientConfig) -> H3Client {
        let endpoint = client_endpoint(from, tls);
        let quic = endpoint.connect(addr, sni).unwrap().await.unwrap();
        let chain =
            quic.peer_identity().unwrap().downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().unwrap();
        let names = names_in(&chain[0]);
        let (sender, driving) = h3_on(quic).await;
        H3Client { endpoint, sender, driving, sni: sni.to_string(), names }
    }

    async fn send(&mut self, method: &str, path: &str, body: Bytes) -> H3Reply {
        h3_request(&mut self.sender, &self.sni, method, path, body).await
    }

    fn close(self) {
        self.driving.abort();
        self.endpoint.close(0u8.into(), b"");
    }
}

/// A QUIC client endpoint on `from` with this TLS.
fn client_endpoint(from: SocketAddr, tls: rustls::ClientConfig) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client(from).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// HTTP/3 on a QUIC connection: the request sender, and the task that drives the connection.
async fn h3_on(
    quic: quinn::Connection,
) -> (h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>, tokio::task::JoinHandle<h3::error::ConnectionError>) {
    let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(quic)).await.unwrap();
    (sender, tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await }))
}

/// One request on `sender`, for `host`, read whole.
async fn h3_request(
    sender: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    host: &str,
    method: &str,
    path: &str,
    body: Bytes,
) -> H3Reply {
    let req = Request::builder().method(method).uri(format!("https://{host}{path}")).body(()).unwrap();
    let mut stream = sender.send_request(req).await.unwrap();
    if !body.is_empty() {
        stream.send_data(body).await.unwrap();
    }
    stream.finish().await.unwrap();
    let head = stream.recv_response().await.unwrap();
    let mut got = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    H3Reply { status: head.status().as_u16(), headers: head.headers().clone(), body: got.freeze() }
}

/// One request over a new HTTP/3 connection.
async fn h3_send(addr: SocketAddr, sni: &str, ca_pem: &str, method: &str, path: &str, body: Bytes) -> H3Reply {
    let mut client = H3Client::open(addr, sni, ca_pem).await;
    let reply = client.send(method, path, body).await;
    client.close();
    reply
}

async fn h3_get(addr: SocketAddr, sni: &str, ca_pem: &str, path: &str) -> H3Reply {
    h3_send(addr, sni, ca_pem, "GET", path, Bytes::new()).await
}

/// relais with HTTP/3 on beside `[server.tls]` on 127.0.0.1:0, with these certificates.
async fn h3_relais(o: &Origin, certs: &[(std::path::PathBuf, std::path::PathBuf)]) -> Relais {
    h3_relais_with(o, certs, "").await
}

/// [`h3_relais`] with `server` lines in `[server]`.
async fn h3_relais_with(o: &Origin, certs: &[(std::path::PathBuf, std::path::PathBuf)], server: &str) -> Relais {
    h3_relais_tls(o, certs, server, "").await
}

/// [`h3_relais_with`] and `tls` lines in `[server.tls]`.
async fn h3_relais_tls(
    o: &Origin,
    certs: &[(std::path::PathBuf, std::path::PathBuf)],
    server: &str,
    tls: &str,
) -> Relais {
    let tls = format!("http3 = true\nalt_svc_max_age = \"1h\"\n{tls}");
    relais(proxy_to(o.addr).section(tls_section(certs, server, &tls))).await
}

/// An origin: `/page` cacheable, `/echo` answers with the body it got, `/big` 6 MiB.
async fn h3_origin() -> Origin {
    origin()
        .route("/page", |_req: Request<hyper::body::Incoming>| async move {
            text(200, "the page", &[("cache-control", "max-age=60")])
        })
        .route("/echo", |req: Request<hyper::body::Incoming>| async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            http::Response::builder().status(200).body(full(body)).unwrap()
        })
        .late("/slow", std::time::Duration::from_millis(600), "slow")
        .route("/big", |_req: Request<hyper::body::Incoming>| async move {
            http::Response::builder().status(200).body(full(big())).unwrap()
        })
        .start()
        .await
}

fn big() -> Bytes {
    (0..6 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>().into()
}

#[tokio::test]
async fn a_cached_object_over_http3_is_the_same_as_over_http2() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais(&o, &[cert]).await;
    let addr = proxy.handle.tls_addrs()[0];
    let over_h2 = tls_get(addr, "a.test", &ca.pem, true, "/page").await.unwrap();
    assert_eq!(over_h2.status, 200);
    let over_h3 = h3_get(addr, "a.test", &ca.pem, "/page").await;
    assert_eq!(over_h3.status, 200);
    assert_eq!(over_h3.body, over_h2.body);
    assert!(over_h3.header("cache-status").unwrap().contains("hit"), "{:?}", over_h3.headers);
    let again = tls_get(addr, "a.test", &ca.pem, true, "/page").await.unwrap();
    assert_eq!(again.header("cache-status"), over_h3.header("cache-status"));
    assert_eq!(o.hits("/page"), 1);
}

#[tokio::test]
async fn a_post_body_reaches_the_origin_whole() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais(&o, &[cert]).await;
    let addr = proxy.handle.tls_addrs()[0];
    let sent: Bytes = (0..300_000u32).map(|i| (i % 241) as u8).collect::<Vec<u8>>().into();
    let r = h3_send(addr, "a.test", &ca.pem, "POST", "/echo", sent.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), sent.len());
    assert!(r.body == sent);
}

#[tokio::test]
async fn a_large_download_arrives_whole() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais(&o, &[cert]).await;
    let addr = proxy.handle.tls_addrs()[0];
    let r = h3_get(addr, "a.test", &ca.pem, "/big").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big().len());
    assert!(r.body == big());
}

#[tokio::test]
async fn https_responses_offer_http3_by_alt_svc() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais(&o, &[cert]).await;
    let addr = proxy.handle.tls_addrs()[0];
    let want = format!("h3=\":{}\"; ma=3600", addr.port());
    for h2 in [false, true] {
        let r = tls_get(addr, "a.test", &ca.pem, h2, "/page").await.unwrap();
        assert_eq!(r.header("alt-svc"), Some(want.as_str()));
    }
    // Not on the cleartext listener.
    let r = get_with(&proxy.url("/page"), &[("host", "a.test")]).await;
    assert_eq!(r.header("alt-svc"), None);
}

#[tokio::test]
async fn sni_picks_the_certificate_over_quic() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let first = ca.issue(&["a.test"]).write(dir.path(), "a");
    let second = ca.issue(&["b.test"]).write(dir.path(), "b");
    let proxy = h3_relais(&o, &[first, second]).await;
    let addr = proxy.handle.tls_addrs()[0];
    // The client verifies the name: b.test's handshake succeeds only with b.test's certificate.
    for name in ["a.test", "b.test"] {
        assert_eq!(h3_get(addr, name, &ca.pem, "/page").await.status, 200);
    }
}

#[tokio::test]
async fn http3_needs_a_positive_alt_svc_max_age() {
    let o = h3_origin().await;
    let conf = proxy_to(o.addr).section(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[server.tls]\nlisten = [\"127.0.0.1:0\"]\nhttp3 = true\nalt_svc_max_age = \"0s\"\ncertificates = [{ cert = \"c\", key = \"k\" }]\n",
    );
    let err = relais::Config::from_toml(&conf.to_string(), "t.toml").unwrap_err().to_string();
    assert!(err.contains("server.tls.alt_svc_max_age"), "{err}");
}

#[tokio::test]
async fn http3_connections_are_counted_while_open() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais(&o, &[cert]).await;
    let addr = proxy.handle.tls_addrs()[0];
    let open = |n: u64| format!("relais_connections_open{{listener=\"https\",protocol=\"h3\"}} {n}");
    let mut client = H3Client::open(addr, "a.test", &ca.pem).await;
    for _ in 0..2 {
        assert_eq!(client.send("GET", "/page", Bytes::new()).await.status, 200);
    }
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert!(m.contains(&open(1)), "{m}");
    client.close();
    until("the HTTP/3 connection closed", || async {
        proxy.admin("GET", "/metrics", "").await.text().contains(&open(0))
    })
    .await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_for_new_quic_connections() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais(&o, &[cert]).await;
    let addr = proxy.handle.tls_addrs()[0];
    let mut kept = H3Client::open(addr, "a.test", &ca.pem).await;
    assert_eq!(kept.names, ["a.test"]);
    // The same files, new contents.
    ca.issue(&["a.test", "v2.a.test"]).write(dir.path(), "a");
    proxy.handle.reload(proxy.handle.config().as_ref().clone()).unwrap();
    let fresh = H3Client::open(addr, "a.test", &ca.pem).await;
    assert_eq!(fresh.names, ["a.test", "v2.a.test"], "a new handshake gets the new certificate");
    assert_eq!(kept.send("GET", "/page", Bytes::new()).await.status, 200, "the open connection is still served");
    kept.close();
    fresh.close();
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais_with(&o, &[cert], "idle_timeout = \"1s\"").await;
    let addr = proxy.handle.tls_addrs()[0];
    let mut client = H3Client::open(addr, "a.test", &ca.pem).await;
    assert_eq!(client.send("GET", "/page", Bytes::new()).await.status, 200);
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), &mut client.driving).await;
    assert!(closed.is_ok(), "still open after 10 s");
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_millis(900), "closed after {waited:?}, before the idle timeout");
}

#[tokio::test]
async fn a_stop_finishes_requests_in_flight_and_takes_no_new_connection() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais_with(&o, &[cert], "grace_period = \"5s\"").await;
    let addr = proxy.handle.tls_addrs()[0];
    let mut client = H3Client::open(addr, "a.test", &ca.pem).await;
    let slow = tokio::spawn(async move {
        let reply = client.send("GET", "/slow", Bytes::new()).await;
        client.close();
        reply
    });
    until("the slow request reached the origin", || async { o.hits("/slow") == 1 }).await;
    let Relais { handle, cache_dir, .. } = proxy;
    let stopped = tokio::spawn(handle.shutdown());
    let reply = slow.await.unwrap();
    assert_eq!((reply.status, reply.body.as_ref()), (200, &b"slow"[..]));
    tokio::time::timeout(std::time::Duration::from_secs(5), stopped).await.unwrap().unwrap();
    // Nothing answers on the QUIC port any more.
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_config(&ca.pem, &[b"h3"], None)).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(std::time::Duration::from_millis(500).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    assert!(endpoint.connect(addr, "a.test").unwrap().await.is_err());
    drop(cache_dir);
}

/// Forwards each client's first datagram (its Initial) to `server` from a
/// socket of its own, and nothing back: each is a handshake that never goes on.
async fn black_hole(server: SocketAddr) -> SocketAddr {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seen = std::collections::HashMap::new();
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = front.recv_from(&mut buf).await.unwrap();
            if seen.contains_key(&from) {
                continue;
            }
            let out = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            out.send_to(&buf[..n], server).await.unwrap();
            seen.insert(from, out);
        }
    });
    addr
}

#[tokio::test]
async fn a_flood_of_initials_gets_retries_and_does_not_keep_another_client_out() {
    // One source may hold every handshake place: only the Retry keeps the
    // flood (whose forged addresses never answer one) from taking them all.
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let limits = "max_handshakes = 4\nmax_handshakes_per_source = 4\nhandshake_timeout = \"10s\"";
    let proxy = h3_relais_tls(&o, &[cert], "", limits).await;
    let addr = proxy.handle.tls_addrs()[0];
    // 40 Initials from 127.0.0.1, each from a port of its own, none answered.
    let hole = black_hole(addr).await;
    let mut flood = Vec::new();
    for _ in 0..40 {
        let endpoint = client_endpoint("127.0.0.1:0".parse().unwrap(), client_config(&ca.pem, &[b"h3"], None));
        let connecting = endpoint.connect(hole, "a.test").unwrap();
        flood.push((endpoint, tokio::spawn(connecting)));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Another source connects and is served well before the flood's handshakes time out.
    let started = std::time::Instant::now();
    let mut client = H3Client::open_from("127.0.0.2:0".parse().unwrap(), addr, "a.test", &ca.pem).await;
    assert_eq!(client.send("GET", "/page", Bytes::new()).await.status, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    client.close();
}

/// The access log (of the real binary) names the protocol of a request over HTTP/3.
#[tokio::test]
async fn the_access_log_says_http3() {
    use support::process::{config, free_port, start, write};
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (cert, key) = ca.issue(&["a.test"]).write(dir.path(), "a");
    let (port, tls_port) = (free_port(), free_port());
    let toml = format!(
        "[log]\nfile = \"access.log\"\n{}\n[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\nhttp3 = true\n\
         certificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        config(dir.path(), port, o.addr, ""),
        cert.display(),
        key.display()
    );
    let path = dir.path().join("relais.toml");
    write(&path, &toml);
    let _child = start(&path, port).await;
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    assert_eq!(h3_get(addr, "a.test", &ca.pem, "/page").await.status, 200);
    let log = dir.path().join("access.log");
    until("the request is logged", || async {
        std::fs::read_to_string(&log).unwrap_or_default().lines().any(|l| l.contains("/page"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("/page")).unwrap();
    assert!(line.contains("HTTP/3.0") && line.contains("https"), "{line}");
}

/// The UDP sockets are bound at start: a reload turns HTTP/3 off (no more
/// `Alt-Svc`, new QUIC connections refused), never on.
#[tokio::test]
async fn a_reload_turns_http3_off_but_not_on() {
    let o = h3_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais(&o, &[cert]).await;
    let addr = proxy.handle.tls_addrs()[0];
    let switch = |on: bool| {
        let mut config = proxy.handle.config().as_ref().clone();
        config.server.tls.as_mut().unwrap().http3 = on;
        proxy.handle.reload(config).unwrap();
    };
    switch(false);
    let r = tls_get(addr, "a.test", &ca.pem, true, "/page").await.unwrap();
    assert_eq!(r.header("alt-svc"), None);
    let endpoint = client_endpoint("127.0.0.1:0".parse().unwrap(), client_config(&ca.pem, &[b"h3"], None));
    let refused = endpoint.connect(addr, "a.test").unwrap().await.err();
    assert!(matches!(refused, Some(quinn::ConnectionError::ConnectionClosed(_))), "{refused:?}");
    switch(true);
    let r = tls_get(addr, "a.test", &ca.pem, true, "/page").await.unwrap();
    assert!(r.header("alt-svc").is_some(), "offered again: the socket is still bound");
}

/// A client endpoint that keeps its sessions and may send 0-RTT on a resumption.
fn resuming_endpoint(ca_pem: &str) -> quinn::Endpoint {
    let mut tls = client_config(ca_pem, &[b"h3"], None);
    tls.enable_early_data = true;
    client_endpoint("127.0.0.1:0".parse().unwrap(), tls)
}

/// One request on a full handshake from `endpoint`, which keeps the session tickets it brings.
async fn first_visit(endpoint: &quinn::Endpoint, addr: SocketAddr, path: &str) -> H3Reply {
    let quic = endpoint.connect(addr, "a.test").unwrap().await.unwrap();
    let (mut sender, driving) = h3_on(quic.clone()).await;
    let reply = h3_request(&mut sender, "a.test", "GET", path, Bytes::new()).await;
    // The tickets come with the handshake's end; let them be read.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    quic.close(0u8.into(), b"");
    driving.abort();
    reply
}

/// A UDP relay in front of `to` that holds every datagram the client sends
/// after relais's first answer for `hold`: the client's 0-RTT (sent with its
/// first flight) arrives at once, the end of its handshake `hold` later.
async fn late_finish_relay(to: SocketAddr, hold: std::time::Duration) -> SocketAddr {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(to).await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
        let (mut client, mut answered) = (None, false);
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut up) => {
                    client = Some(from);
                    let data = up[..n].to_vec();
                    if answered {
                        let back = back.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(hold).await;
                            let _ = back.send(&data).await;
                        });
                    } else {
                        let _ = back.send(&data).await;
                    }
                }
                Ok(n) = back.recv(&mut down) => {
                    answered = true;
                    if let Some(c) = client {
                        let _ = front.send_to(&down[..n], c).await;
                    }
                }
            }
        }
    });
    addr
}

/// An origin whose `/early` tells the `Early-Data` it got, and whose `/picky` answers 425 to it
/// (both cacheable for a minute).
async fn early_origin() -> Origin {
    origin()
        .route("/early", |req: Request<hyper::body::Incoming>| async move {
            let early = req.headers().get("early-data").map(|v| v.to_str().unwrap().to_string());
            text(200, &format!("early-data={}", early.as_deref().unwrap_or("none")), &[])
        })
        .route("/picky", |req: Request<hyper::body::Incoming>| async move {
            // Frameworks stamp their caching headers on every answer: a 425 is never stored all the same.
            match req.headers().contains_key("early-data") {
                true => text(425, "too early", &[("cache-control", "max-age=60")]),
                false => text(200, "in time", &[("cache-control", "max-age=60")]),
            }
        })
        .start()
        .await
}

#[tokio::test]
async fn a_0rtt_get_is_forwarded_at_once_marked_early_and_a_post_waits_for_the_handshake() {
    let o = early_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais_tls(&o, &[cert], "", "early_data = true").await;
    let addr = proxy.handle.tls_addrs()[0];
    let endpoint = resuming_endpoint(&ca.pem);
    assert_eq!(first_visit(&endpoint, addr, "/early").await.body, "early-data=none");

    let relay = late_finish_relay(addr, std::time::Duration::from_millis(1000)).await;
    let (quic, accepted) = endpoint.connect(relay, "a.test").unwrap().into_0rtt().expect("a ticket allows 0-RTT");
    let (sender, driving) = h3_on(quic).await;
    let (get, post) = tokio::join!(
        async {
            let mut s = sender.clone();
            let started = std::time::Instant::now();
            (h3_request(&mut s, "a.test", "GET", "/early", Bytes::new()).await, started.elapsed())
        },
        async {
            let mut s = sender.clone();
            h3_request(&mut s, "a.test", "POST", "/early", Bytes::from_static(b"an order")).await
        },
    );
    assert_eq!(get.0.body, "early-data=1");
    assert!(get.0.header("cache-status").is_some());
    assert!(get.1 < std::time::Duration::from_millis(900), "the GET waited: {:?}", get.1);
    assert_eq!(post.body, "early-data=none", "a POST is not taken in 0-RTT");
    assert!(accepted.await, "relais accepted the 0-RTT data");
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert!(m.contains("relais_http3_early_requests_total{outcome=\"answered\"} 1"), "{m}");
    assert!(m.contains("relais_http3_early_requests_total{outcome=\"waited\"} 1"), "{m}");
    drop(sender);
    driving.abort();
}

#[tokio::test]
async fn a_425_from_the_origin_is_sent_again_after_the_handshake() {
    let o = early_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais_tls(&o, &[cert], "", "early_data = true").await;
    let addr = proxy.handle.tls_addrs()[0];
    let endpoint = resuming_endpoint(&ca.pem);
    assert_eq!(first_visit(&endpoint, addr, "/early").await.status, 200);

    let relay = late_finish_relay(addr, std::time::Duration::from_millis(300)).await;
    let (quic, _) = endpoint.connect(relay, "a.test").unwrap().into_0rtt().expect("a ticket allows 0-RTT");
    let (mut sender, driving) = h3_on(quic).await;
    let r = h3_request(&mut sender, "a.test", "GET", "/picky", Bytes::new()).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"in time"[..]));
    assert_eq!(o.hits("/picky"), 2, "once early (425), once after the handshake");
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert!(m.contains("relais_http3_early_requests_total{outcome=\"retried\"} 1"), "{m}");
    driving.abort();
}

#[tokio::test]
async fn without_early_data_a_resumption_offers_no_0rtt() {
    let o = early_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let proxy = h3_relais(&o, &[cert]).await;
    let addr = proxy.handle.tls_addrs()[0];
    let endpoint = resuming_endpoint(&ca.pem);
    assert_eq!(first_visit(&endpoint, addr, "/early").await.status, 200);
    assert!(endpoint.connect(addr, "a.test").unwrap().into_0rtt().is_err());
}

#[tokio::test]
async fn early_data_needs_http3_and_no_client_certificates() {
    let o = h3_origin().await;
    for tls in ["early_data = true\n", "http3 = true\nearly_data = true\nclient_ca = \"ca.pem\"\n"] {
        let conf = proxy_to(o.addr).section(format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[server.tls]\nlisten = [\"127.0.0.1:0\"]\n{tls}certificates = [{{ cert = \"c\", key = \"k\" }}]\n"
        ));
        let err = relais::Config::from_toml(&conf.to_string(), "t.toml").unwrap_err().to_string();
        assert!(err.contains("server.tls.early_data"), "{err}");
    }
}

#[tokio::test]
async fn a_client_certificate_over_quic_is_required_and_its_subject_reaches_the_origin() {
    let o = origin()
        .route("/who", |req: Request<hyper::body::Incoming>| async move {
            let subject = req.headers().get("x-client-subject").map(|v| v.to_str().unwrap().to_string());
            text(200, &format!("subject={}", subject.unwrap_or_default()), &[])
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let cert = ca.issue(&["a.test"]).write(dir.path(), "a");
    let client_ca = clients.write(dir.path());
    let tls = format!("client_ca = \"{}\"\nclient_subject_header = \"x-client-subject\"", client_ca.display());
    let proxy = h3_relais_tls(&o, &[cert], "", &tls).await;
    let addr = proxy.handle.tls_addrs()[0];
    let who = |me: Option<support::tls::Issued>| {
        let tls = client_config(&ca.pem, &[b"h3"], me.as_ref());
        // Spawned: a refused client fails somewhere on its way (an unwrap panics).
        tokio::spawn(async move {
            let mut client = H3Client::open_with("127.0.0.1:0".parse().unwrap(), addr, "a.test", tls).await;
            client.send("GET", "/who", Bytes::new()).await.body
        })
    };
    let without = tokio::time::timeout(std::time::Duration::from_secs(5), who(None)).await;
    assert!(!matches!(without, Ok(Ok(_))), "a client without a certificate was served: {without:?}");
    let mine = clients.issue_with(&[], |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, "client one");
    });
    let body = who(Some(mine)).await.unwrap();
    assert_eq!(body, "subject=CN=client one");
}
