//! What an attacker tries from outside: lying framing, forged hosts, requests
//! that never end, bodies that never come, hostile origins. Each test here
//! failed against relais before the fix it guards.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use support::process;
use support::raw::{RawOrigin, Reads, echo_cacheable};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `request` on a new connection and reads until relais closes it or
/// goes quiet for `quiet`.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], quiet: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_until_quiet(&mut tcp, quiet).await
}

async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    raw_exchange(addr, request.as_bytes(), Duration::from_millis(500)).await
}

/// Writes `request` on a new connection and reads the one response it gets.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut tcp).await
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

// 1. Request smuggling through a GET or HEAD with a body.

/// An origin that reads request bodies was told a body follows that never
/// came: the client got 504 and the server was marked down.
#[tokio::test]
async fn a_get_with_a_body_reaches_an_origin_that_reads_bodies_whole() {
    let o = origin()
        .route("/page", |req: Request<hyper::body::Incoming>| async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            text(200, &format!("got {:?}", String::from_utf8_lossy(&body)), &[("cache-control", "max-age=60")])
        })
        .start()
        .await;
    let proxy = relais(Conf::new().upstream("o", o.addr).with("response_timeout = \"1s\"").route_all("o")).await;
    for client in [client(), h2_client()] {
        let r = send_with(&client, Request::get(proxy.url("/page")).body(full("hello")).unwrap()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "got \"hello\"");
        let status = r.header("cache-status").unwrap();
        assert!(status.contains("fwd=bypass") && status.contains("detail=request-body"), "{status}");
        let r = send_with(&client, Request::head(proxy.url("/page")).body(full("hello")).unwrap()).await;
        assert_eq!(r.status, 200);
    }
    // The answer to a GET with a body is nobody else's: not stored.
    let r = get(&proxy.url("/page")).await;
    assert_eq!(r.text(), "got \"\"");
    assert_eq!(o.hits("/page"), 5);
}

/// An origin that answers first and then discards the body its headers
/// announced (as Go's net/http does) ate the start of the next request on the
/// connection: a request hidden in a body was executed, and its answer given to
/// the next client. Over HTTP/1.1 and HTTP/2.
#[tokio::test]
async fn a_request_hidden_in_a_body_never_reaches_the_origin_as_a_request() {
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: internal.admin\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    for (protocol, client) in [("HTTP/1.1", client()), ("HTTP/2", h2_client())] {
        let o = RawOrigin::start(Reads::AnswerFirst, echo_cacheable()).await;
        let proxy = relais(proxy_to(o.addr)).await;
        let carrier = || Request::post(proxy.url("/carrier")).body(full(smuggled)).unwrap();
        // How long is the head relais sends for the carrier? The attacker can measure it.
        assert_eq!(send_with(&client, carrier()).await.text(), "/carrier");
        let head = o.seen().last().unwrap().head_len;

        // A GET whose body is exactly that long, then the carrier on the same upstream connection.
        let r = send_with(&client, Request::get(proxy.url("/page")).body(full("x".repeat(head))).unwrap()).await;
        assert_eq!(r.status, 200, "{protocol}");
        let r = send_with(&client, carrier()).await;
        assert_eq!(r.text(), "/carrier", "{protocol}: the carrier got another request's answer");
        assert_eq!(get(&proxy.url("/next")).await.text(), "/next", "{protocol}");

        let targets: Vec<String> = o.seen().iter().map(|s| s.target.clone()).collect();
        assert!(!targets.iter().any(|t| t == "/smuggled"), "{protocol}: the origin ran a hidden request: {targets:?}");
        assert_eq!(targets, ["/carrier", "/page", "/carrier", "/next"], "{protocol}");
        assert!(o.desyncs().is_empty(), "{protocol}: {:?}", o.desyncs());
        let page = &o.seen()[1];
        assert_eq!(page.body.len(), head, "{protocol}: the GET's body is sent as announced");
    }
}

/// Requests that relais answers from the cache path are sent with no framing
/// headers of the client's: a HEAD, a conditional GET, a revalidation.
#[tokio::test]
async fn requests_sent_on_the_cache_path_carry_no_client_framing() {
    let o = RawOrigin::start(
        Reads::AnswerFirst,
        std::sync::Arc::new(|_: &support::raw::Seen| {
            (
                200,
                vec![("cache-control".into(), "max-age=0".into()), ("etag".into(), "\"v1\"".into())],
                b"body".to_vec(),
            )
        }),
    )
    .await;
    let proxy = relais(proxy_to(o.addr)).await;
    let r = raw(proxy.addr, "GET /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 0\r\n\r\n").await;
    assert!(status_line(&r).contains("200"), "{r}");
    // Stale at once: the next GET revalidates.
    let r =
        raw(proxy.addr, "GET /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n").await;
    assert!(status_line(&r).contains("200"), "{r}");
    for s in o.seen() {
        assert_eq!(s.header("content-length"), None, "{s:?}");
        assert_eq!(s.header("transfer-encoding"), None, "{s:?}");
        assert_eq!(s.header("expect"), None, "{s:?}");
    }
    assert!(o.seen().len() >= 2);
}

// 2. Cache poisoning through the Host header.

fn echo_path_and_host() -> OriginBuilder {
    origin().route("/", |req: Request<hyper::body::Incoming>| async move {
        let host = req.headers().get_all("host").iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
        text(200, &format!("{} {}", req.uri().path(), host.join("|")), &[("cache-control", "max-age=60")])
    })
}

#[tokio::test]
async fn a_host_with_a_path_cannot_poison_another_url() {
    let o = echo_path_and_host().start().await;
    let proxy = relais(proxy_to(o.addr)).await;
    let r = raw(proxy.addr, "GET /y1 HTTP/1.1\r\nHost: a.test/x1\r\n\r\n").await;
    assert!(status_line(&r).contains("400"), "{r}");
    let r = get_with(&proxy.url("/x1/y1"), &[("host", "a.test")]).await;
    assert_eq!(r.text(), "/x1/y1 a.test", "the victim's URL holds its own answer");
    assert_eq!(o.hits("/y1"), 0);
}

#[tokio::test]
async fn hosts_that_are_not_authorities_get_400() {
    let o = echo_path_and_host().start().await;
    let proxy = relais(proxy_to(o.addr)).await;
    let bad = [
        "a.test/x",
        "a.test?x",
        "a.test#x",
        "user@a.test",
        "a test",
        "",
        "a.test:",
        "a.test:99999",
        "a.test:0",
        "a.test:8o",
        "[::1",
        "::1",
        "a..test",
        ".",
        "a.test:80:80",
        "a\\b",
    ];
    for host in bad {
        let r = exchange(proxy.addr, &format!("GET /p HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
        assert!(status_line(&r).contains(" 400 "), "Host {host:?}: {r}");
    }
    let r = exchange(proxy.addr, "GET /p HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n").await;
    assert!(status_line(&r).contains(" 400 "), "two Host headers: {r}");
    let r = exchange(proxy.addr, "GET /p HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n").await;
    assert!(status_line(&r).contains(" 400 "), "two equal Host headers: {r}");
    assert_eq!(o.total_hits(), 0, "none of them reached the origin");
    for good in ["a.test", "A.TEST:8080", "127.0.0.1", "[::1]:8080", "a-b_c.test.", "xn--bcher-kva.test"] {
        let r = exchange(proxy.addr, &format!("GET /p HTTP/1.1\r\nHost: {good}\r\n\r\n")).await;
        assert!(status_line(&r).contains(" 200 "), "Host {good:?}: {r}");
    }
}

/// Case, a trailing dot and the default port are folded for the cache key;
/// the origin must be asked with that same folded host.
#[tokio::test]
async fn the_origin_is_asked_with_the_host_the_cache_key_uses() {
    let o = echo_path_and_host().start().await;
    let proxy = relais(proxy_to(o.addr)).await;
    let r = raw(proxy.addr, "GET /n HTTP/1.1\r\nHost: A.Test.:80\r\n\r\n").await;
    assert!(r.ends_with("/n a.test"), "{r}");
    let r = get_with(&proxy.url("/n"), &[("host", "a.test")]).await;
    assert_eq!(r.text(), "/n a.test");
    assert!(r.header("cache-status").unwrap().contains("hit"));
    let r = raw(proxy.addr, "GET /n HTTP/1.1\r\nHost: a.test:8080\r\n\r\n").await;
    assert!(r.ends_with("/n a.test:8080"), "a port that is not the default stays: {r}");
}

/// RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host,
/// for routing, for the cache key and for what the origin is told.
#[tokio::test]
async fn an_absolute_target_wins_over_host() {
    let a = echo_path_and_host().start().await;
    let b = echo_path_and_host().start().await;
    let proxy = relais(
        Conf::new().upstream("a", a.addr).upstream("b", b.addr).route_all("a").route_all("b").with("host = \"b.test\""),
    )
    .await;
    let r = raw(proxy.addr, "GET http://B.test/p HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert!(r.ends_with("/p b.test"), "{r}");
    assert_eq!(a.total_hits(), 0);
    let r = get_with(&proxy.url("/p"), &[("host", "b.test")]).await;
    assert!(r.header("cache-status").unwrap().contains("hit"), "one key for both spellings");
    let r = raw(proxy.addr, "GET ftp://b.test/p HTTP/1.1\r\nHost: b.test\r\n\r\n").await;
    assert!(status_line(&r).contains(" 400 "), "{r}");
    let r = raw(proxy.addr, "CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n").await;
    assert!(status_line(&r).contains(" 405 "), "relais is no tunnel: {r}");
}

#[tokio::test]
async fn an_http2_authority_is_validated_like_a_host() {
    let o = echo_path_and_host().start().await;
    let proxy = relais(proxy_to(o.addr)).await;
    let send_h2 = |uri: &'static str, host: Option<&'static str>| {
        let addr = proxy.addr;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(conn);
            let mut req = Request::get(uri);
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let (res, _) = h2.send_request(req.body(()).unwrap(), true).unwrap();
            let res = res.await.unwrap();
            let status = res.status().as_u16();
            let mut body = res.into_body();
            let mut text = Vec::new();
            while let Some(chunk) = body.data().await {
                text.extend_from_slice(&chunk.unwrap());
            }
            (status, String::from_utf8_lossy(&text).into_owned())
        }
    };
    assert_eq!(send_h2("http://u@a.test/p", None).await.0, 400);
    assert_eq!(send_h2("http://a.test:99999/p", None).await.0, 400);
    assert_eq!(send_h2("http://a.test/p", Some("b.test")).await.0, 400, "Host differs from :authority");
    assert_eq!(send_h2("http://a.test/p", Some("a.test/x")).await.0, 400);
    assert_eq!(send_h2("http://A.test:80/p", Some("a.test")).await, (200, "/p a.test".into()));
    assert_eq!(o.total_hits(), 1);
}

// 5. Connections that send nothing.

async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    matches!(tokio::time::timeout(limit, tcp.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let o = origin().text("/", "ok").start().await;
    let proxy =
        relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nheader_read_timeout = \"500ms\"\n"))
            .await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut partial_preface = TcpStream::connect(proxy.addr).await.unwrap();
    partial_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await, "a silent socket stays open");
    assert!(closed_within(&mut partial_preface, Duration::from_secs(3)).await, "half a preface stays open");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_is_closed_though_it_answers_pings() {
    let o = origin().text("/", "ok").start().await;
    let proxy = relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nidle_timeout = \"1s\"\n")).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = conn.ping_pong().unwrap();
    let started = tokio::time::Instant::now();
    let conn = tokio::spawn(async move { conn.await.is_ok() });
    let (res, _) = h2.send_request(Request::get("http://a.test/").body(()).unwrap(), true).unwrap();
    assert_eq!(res.await.unwrap().status(), 200);
    // The client keeps the connection alive with PINGs; only requests count as activity.
    let pinger = tokio::spawn(async move {
        while ping_pong.ping(h2::Ping::opaque()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the idle connection is still open after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", started.elapsed());
    pinger.abort();
}

/// A request in flight keeps its HTTP/2 connection however long it takes.
#[tokio::test(start_paused = true)]
async fn a_slow_http2_request_outlives_the_idle_timeout() {
    let o = origin().late("/slow", Duration::from_millis(2500), "late").start().await;
    let proxy = relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nidle_timeout = \"1s\"\n")).await;
    let r = send_with(&h2_client(), Request::get(proxy.url("/slow")).body(full("")).unwrap()).await;
    assert_eq!(r.text(), "late");
}

// 6. A slow upload is the client's fault.

fn trickle(parts: usize, every: Duration) -> Body {
    let stream = futures_util::stream::unfold(0, move |i| async move {
        if i == parts {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(Bytes::from_static(b"x"))),
            i + 1,
        ))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

async fn server_up(proxy: &Relais) -> bool {
    let m = proxy.admin("GET", "/metrics", "").await.text();
    m.lines().any(|l| l.starts_with("relais_upstream_server_up{") && l.ends_with(" 1"))
}

#[tokio::test(start_paused = true)]
async fn a_slow_upload_is_not_blamed_on_the_origin() {
    let o = origin()
        .route("/upload", |req: Request<hyper::body::Incoming>| async move {
            let n = req.into_body().collect().await.unwrap().to_bytes().len();
            text(200, &format!("{n} bytes"), &[])
        })
        .start()
        .await;
    let proxy = relais(Conf::new().upstream("o", o.addr).with("response_timeout = \"1s\"").route_all("o")).await;
    let started = tokio::time::Instant::now();
    let r = send(Request::post(proxy.url("/upload")).body(trickle(10, Duration::from_millis(250))).unwrap()).await;
    assert_eq!(r.status, 200, "10 bytes over 2.5 s against a 1 s response timeout: {}", r.text());
    assert_eq!(r.text(), "10 bytes");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(server_up(&proxy).await);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_upload_gets_408_and_leaves_the_server_up() {
    let o = origin()
        .route("/upload", |req: Request<hyper::body::Incoming>| async move {
            let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            text(200, &format!("{n} bytes"), &[])
        })
        .start()
        .await;
    let proxy = relais(
        Conf::new()
            .upstream("o", o.addr)
            .with("response_timeout = \"5s\"")
            .route_all("o")
            .section("[guard]\nbody_timeout = \"500ms\""),
    )
    .await;
    let started = tokio::time::Instant::now();
    let r = send(Request::post(proxy.url("/upload")).body(trickle(2, Duration::from_secs(3))).unwrap()).await;
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
    assert!(server_up(&proxy).await, "a slow client never marks the origin down");
    let r = send(Request::post(proxy.url("/upload")).body(full("abc")).unwrap()).await;
    assert_eq!(r.text(), "3 bytes");
}

// 7. Low.

#[tokio::test]
async fn a_malformed_chunked_request_body_gets_400() {
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let _ = req.into_body().collect().await;
            text(200, "ok", &[])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;
    for chunk in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "fffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
    ] {
        let r =
            raw(proxy.addr, &format!("POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"))
                .await;
        assert!(status_line(&r).contains(" 400 "), "chunk {chunk:?}: {r}");
    }
}

// Also: requests carrying cookies.

#[tokio::test]
async fn cookie_requests_bypass_the_cache_where_the_route_says_so() {
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let cookie = req.headers().get("cookie").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            text(200, &format!("for {cookie}"), &[("cache-control", "max-age=60")])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr).route("/account/", "o").with("cache = { cookie_requests = \"bypass\" }")).await;
    // Default: the origin decides, as RFC 9111 allows.
    get_with(&proxy.url("/page"), &[("cookie", "id=alice")]).await;
    let r = get_with(&proxy.url("/page"), &[("cookie", "id=bob")]).await;
    assert_eq!(r.text(), "for id=alice");
    // Where the route bypasses them, each cookie request goes to the origin.
    get_with(&proxy.url("/account/me"), &[("cookie", "id=alice")]).await;
    let r = get_with(&proxy.url("/account/me"), &[("cookie", "id=bob")]).await;
    assert_eq!(r.text(), "for id=bob");
    assert!(r.header("cache-status").unwrap().contains("detail=cookie"), "{:?}", r.header("cache-status"));
    // And a request without a cookie is not given a cookie request's answer.
    assert_eq!(get(&proxy.url("/account/me")).await.text(), "for ");
}

// Headers a client names in `Connection`, and protocol upgrades.

/// The variant key was computed from the client's headers, but headers named in
/// `Connection` were removed before forwarding: the origin's no-language answer
/// was stored under the `fr` variant, for every later `fr` client.
#[tokio::test]
async fn a_header_named_in_connection_cannot_poison_a_variant() {
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let lang = req.headers().get("accept-language").map_or("none", |v| v.to_str().unwrap()).to_string();
            text(200, &format!("lang={lang}"), &[("cache-control", "max-age=60"), ("vary", "Accept-Language")])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;
    let r = raw(
        proxy.addr,
        "GET /v HTTP/1.1\r\nHost: a.test\r\nAccept-Language: fr\r\nConnection: close, Accept-Language\r\n\r\n",
    )
    .await;
    assert!(r.ends_with("lang=none"), "the origin was not told the language: {r}");
    proxy.stored("http://a.test/v").await;
    let fr = get_with(&proxy.url("/v"), &[("host", "a.test"), ("accept-language", "fr")]).await;
    assert_eq!(fr.text(), "lang=fr", "{:?}", fr.header("cache-status"));
    let none = get_with(&proxy.url("/v"), &[("host", "a.test")]).await;
    assert_eq!(none.text(), "lang=none");
    assert!(none.header("cache-status").unwrap().contains("hit"), "stored as what the origin was asked");
}

/// An origin that switches to whatever the request names (as an h2c-capable
/// one does), and records what it was asked.
async fn switching_origin(to: &'static str) -> RawOrigin {
    RawOrigin::start(
        Reads::BodyFirst,
        std::sync::Arc::new(move |s: &support::raw::Seen| match s.header("upgrade") {
            Some(_) => (101, vec![("connection".into(), "upgrade".into()), ("upgrade".into(), to.into())], Vec::new()),
            None => (200, Vec::new(), b"plain".to_vec()),
        }),
    )
    .await
}

/// `Upgrade: h2c` was forwarded and the 101 tunnelled: the client got a raw
/// HTTP/2 connection to the origin, past every rule, route and limit. Only
/// `websocket` (and what a route names) is forwarded, never h2c; anything
/// else goes as an ordinary request, as nginx sends it.
#[tokio::test]
async fn only_allowed_upgrades_reach_the_origin_and_h2c_never() {
    let o = switching_origin("h2c").await;
    let proxy = relais(proxy_to(o.addr)).await;
    let r = raw(
        proxy.addr,
        "GET /private/x HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(status_line(&r).contains(" 200 "), "{r}");
    assert!(r.ends_with("plain"), "{r}");
    let seen = o.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("upgrade"), None, "{:?}", seen[0].headers);
    assert_eq!(seen[0].header("http2-settings"), None, "named in Connection");
    let r = raw(proxy.addr, "GET /y HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n").await;
    assert!(status_line(&r).contains(" 200 "), "not a protocol this route allows: {r}");

    let err = relais::Config::from_toml(&proxy_to(o.addr).with("upgrades = [\"h2c\"]").to_string(), "t.toml")
        .expect_err("h2c is never tunnelled");
    assert!(err.to_string().contains("routes[0].upgrades"), "{err}");
}

/// What a route allows by name is forwarded (and only that, of a list); an
/// origin's 101 is tunnelled only when it names a protocol the client asked for.
#[tokio::test]
async fn a_route_can_allow_a_protocol_and_the_origin_must_switch_to_it() {
    let upgrades = "upgrades = [\"websocket\", \"foo\"]";
    let foo = switching_origin("foo").await;
    let proxy = relais(proxy_to(foo.addr).with(upgrades)).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /t HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: h2c, Foo/2\r\n\r\n")
        .await
        .unwrap();
    let r = read_until_quiet(&mut tcp, Duration::from_millis(300)).await;
    assert!(status_line(&r).contains(" 101 "), "{r}");
    assert_eq!(foo.seen()[0].header("upgrade"), Some("Foo/2"), "only the allowed protocol");

    let bar = switching_origin("bar").await;
    let proxy = relais(proxy_to(bar.addr).with(upgrades)).await;
    let r = raw(proxy.addr, "GET /t HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n").await;
    assert!(status_line(&r).contains(" 502 "), "switched to a protocol nobody asked for: {r}");
}

// 3 and 4: memory stays bounded whatever the body's size. relais runs as a
// process here, so that its resident memory can be read.

const BIG: u64 = 128 << 20;

/// `BIG` bytes in 64 KiB chunks, made as they are read; `made` counts them.
fn big_body(made: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Body {
    let chunk = Bytes::from(vec![b'b'; 64 << 10]);
    let stream = futures_util::stream::iter(0..BIG / (64 << 10)).map(move |_| {
        made.fetch_add(64 << 10, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(chunk.clone()))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// An origin of `BIG`-byte answers: `/no-store`, `/too-large` (cacheable, with a
/// length over max_object_size) and `/chunked` (cacheable, no length).
async fn big_origin(made: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Origin {
    let route = |cc: &'static str, length: bool| {
        let made = made.clone();
        move |_req: Request<hyper::body::Incoming>| {
            let made = made.clone();
            async move {
                let mut r = http::Response::new(big_body(made));
                r.headers_mut().insert("cache-control", http::HeaderValue::from_static(cc));
                if length {
                    r.headers_mut().insert("content-length", BIG.into());
                }
                r
            }
        }
    };
    origin()
        .route("/no-store", route("no-store", true))
        .route("/too-large", route("max-age=60", true))
        .route("/chunked", route("max-age=60", false))
        .start()
        .await
}

async fn big_relais(o: &Origin) -> (tempfile::TempDir, process::Running, u16) {
    big_relais_with(o, "memory_capacity = \"16MiB\"\nmax_object_size = \"4MiB\"\n").await
}

async fn big_relais_with(o: &Origin, cache: &str) -> (tempfile::TempDir, process::Running, u16) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = process::free_port();
    let toml = process::config(dir.path(), port, o.addr, "").replace("[cache]\n", &format!("[cache]\n{cache}"));
    process::write(&path, &toml);
    let child = process::start(&path, port).await;
    (dir, child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_of_a_huge_resource_holds_no_body() {
    let made = std::sync::Arc::default();
    let o = big_origin(made).await;
    let (_dir, child, port) = big_relais(&o).await;
    let peak = process::PeakRss::watch(child.pid());
    let start = process::rss_kib(child.pid());
    for path in ["/no-store", "/too-large", "/chunked"] {
        let heads = (0..4).map(|_| async move {
            let req = Request::head(format!("http://127.0.0.1:{port}{path}")).body(full("")).unwrap();
            send(req).await
        });
        for r in futures_util::future::join_all(heads).await {
            assert_eq!(r.status, 200, "{path}");
            assert!(r.body.is_empty());
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = peak.peak().saturating_sub(start);
    assert!(grown < 32 * 1024, "twelve HEADs of 128 MiB resources grew RSS by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_cacheable_answer_is_not_buffered_past_max_object_size() {
    let made = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let o = big_origin(made.clone()).await;
    let (_dir, child, port) = big_relais(&o).await;
    let peak = process::PeakRss::watch(child.pid());
    let start = process::rss_kib(child.pid());

    // Four slow readers on one fill: about 100 KB/s each for two seconds.
    let readers = (0..4).map(|_| async move {
        let res = client()
            .request(Request::get(format!("http://127.0.0.1:{port}/chunked")).body(full("")).unwrap())
            .await
            .unwrap();
        let status = res.headers().get("cache-status").unwrap().to_str().unwrap().to_string();
        let mut body = res.into_body();
        let until = Instant::now() + Duration::from_secs(2);
        let mut n = 0;
        while Instant::now() < until {
            if let Some(Ok(f)) = body.frame().await {
                n += f.data_ref().map_or(0, |d| d.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (status, n)
    });
    for (status, n) in futures_util::future::join_all(readers).await {
        assert!(!status.contains("stored"), "a body of unknown length is not known to be stored: {status}");
        assert!(n > 0);
    }
    let read_from_origin = made.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read_from_origin < 48 << 20, "{} MiB read from the origin for slow readers", read_from_origin >> 20);
    let grown = peak.peak().saturating_sub(start);
    assert!(grown < 48 * 1024, "four slow readers of a chunked 128 MiB answer grew RSS by {grown} KiB");

    // One fast reader of the whole body: nothing is kept behind it once storing is given up.
    let res = client()
        .request(Request::get(format!("http://127.0.0.1:{port}/chunked")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(n, BIG);
    let grown = peak.peak().saturating_sub(start);
    assert!(grown < 48 * 1024, "a fast reader of a chunked 128 MiB answer grew RSS by {grown} KiB");
    let r = send(Request::head(format!("http://127.0.0.1:{port}/chunked")).body(full("")).unwrap()).await;
    assert!(!r.header("cache-status").unwrap().contains("hit"), "too large to store");
}

/// Each fill is bounded by max_object_size, but many at once must be bounded
/// too: slow readers of eight different large chunked answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_fills_at_once_share_one_memory_budget() {
    let made = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let o = big_origin(made.clone()).await;
    let (_dir, child, port) =
        big_relais_with(&o, "memory_capacity = \"16MiB\"\nmax_object_size = \"64MiB\"\nfill_memory = \"8MiB\"\n").await;
    let peak = process::PeakRss::watch(child.pid());
    let start = process::rss_kib(child.pid());
    let readers = (0..8).map(|i| async move {
        let url = format!("http://127.0.0.1:{port}/chunked/{i}");
        let res = client().request(Request::get(url).body(full("")).unwrap()).await.unwrap();
        let mut body = res.into_body();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let _ = body.frame().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    futures_util::future::join_all(readers).await;
    let read = made.load(std::sync::atomic::Ordering::Relaxed);
    // Without the shared budget each fill would read up to max_object_size (8 × 64 MiB).
    // What is read beyond the budget sits in the kernel's socket buffers, which
    // loopback autotuning grows to several MiB per connection.
    assert!(read < 160 << 20, "{} MiB read from the origin for eight slow readers", read >> 20);
    let grown = peak.peak().saturating_sub(start);
    assert!(grown < 48 * 1024, "eight large fills at once grew RSS by {grown} KiB");
}

// 5, at the process level: descriptors.

fn limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    let mut f = line.split_whitespace().skip(3);
    (f.next().unwrap().to_string(), f.next().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let o = origin().text("/", "ok").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = process::free_port();
    process::write(&path, &process::config(dir.path(), port, o.addr, ""));
    let script = format!("ulimit -Sn 256 && exec {} run --config {}", process::bin(), path.display());
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &script]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = process::start_command(&mut command, port).await;
    let (soft, hard) = limits(child.pid());
    assert_eq!(soft, hard, "soft limit {soft}, hard {hard}");
}

/// 300 silent sockets against a 256-descriptor limit blocked every other
/// client, and the accept loop logged its failure twenty times a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_starve_other_clients_of_descriptors() {
    let o = origin().text("/", "ok").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = process::free_port();
    let toml = process::config(dir.path(), port, o.addr, "")
        .replace("grace_period", "header_read_timeout = \"1s\"\ngrace_period");
    process::write(&path, &toml);
    let log = dir.path().join("stderr.log");
    let script = format!("ulimit -n 64 && exec {} run --config {}", process::bin(), path.display());
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &script]).stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let _child = process::start_command(&mut command, port).await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(8), get(&format!("http://127.0.0.1:{port}/"))).await;
    assert!(r.is_ok(), "no answer within 8 s while silent sockets hold the descriptors");
    assert_eq!(r.unwrap().text(), "ok");
    let waited = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    let failures = text.lines().filter(|l| l.contains("accept failed")).count();
    assert!(failures <= 2 + waited.as_secs() as usize, "{failures} accept failures logged in {waited:?}");
}

// Miss floods: every structure a new key adds to is bounded.

/// An origin whose every answer is cacheable, for `vary` a variant of one URL
/// per `X-Random`.
async fn flood_origin() -> Origin {
    origin()
        .route("/", |_| async move {
            let body = "x".repeat(1024);
            text(200, &body, &[("cache-control", "max-age=3600"), ("vary", "x-random")])
        })
        .start()
        .await
}

/// `n` requests on 16 keep-alive connections, each naming a new variant (or a new URL).
async fn flood(port: u16, n: usize, new_urls: bool) {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..16).map(|_| {
        let next = next.clone();
        async move {
            let client = client();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let path = if new_urls { format!("/u/{i}") } else { "/v".to_string() };
                let req = Request::get(format!("http://127.0.0.1:{port}{path}"))
                    .header("x-random", i.to_string())
                    .body(full(""))
                    .unwrap();
                let r = send_with(&client, req).await;
                assert_eq!(r.status, 200);
            }
        }
    });
    futures_util::future::join_all(workers).await;
}

/// A flood of new variants of one URL (any client-controlled header in Vary
/// does it) kept each response's entry queued behind a disk removal at the
/// URL's Vary record, which every variant rewrote: the process grew by about
/// 12 KiB a request whatever the budgets said. Now what a miss leaves behind
/// is bounded by the budgets plus the index of what the disk holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_variants_or_urls_stays_within_the_budgets() {
    const N: usize = 6_000;
    let o = flood_origin().await;
    for new_urls in [false, true] {
        let budgets = "memory_capacity = \"4MiB\"\nfill_memory = \"4MiB\"\ndisk_write_backlog = \"1MiB\"\n";
        let (_dir, child, port) = big_relais_with(&o, budgets).await;
        flood(port, 200, new_urls).await;
        let start = process::rss_kib(child.pid());
        let peak = process::PeakRss::watch(child.pid());
        flood(port, N, new_urls).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The budgets (9 MiB), the disk tier's and purge index's maps (under 1 KiB
        // a key), and room for the allocator and the tasks of 16 connections.
        let grown = peak.peak().saturating_sub(start);
        let bound = 9 * 1024 + N as u64 + 24 * 1024;
        let what = if new_urls { "URLs" } else { "variants" };
        eprintln!("{N} new {what}: RSS grew {grown} KiB (bound {bound} KiB)");
        assert!(grown < bound, "{N} new {what} grew RSS by {grown} KiB (bound {bound} KiB)");
    }
}
