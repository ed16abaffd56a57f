//! A few thousand hostile requests from a seeded generator: random framing
//! headers (honest and lying), bodies on every method, odd hosts, requests
//! hidden in bodies, pipelining. They go through relais to two raw origins
//! that parse every byte they get, one reading bodies before answering and
//! one answering first and discarding bodies after (Go's net/http).
//!
//! Whatever relais does with a hostile request (a 4xx is fine), the origins
//! must never see a request no client sent as a request, never lose their
//! place in a connection, see each request at most once, and receive exactly
//! the body the client framed; and no client may get an answer made for a
//! request sent on another connection.
//!
//! Then clients that never read what they asked for: `server.send_timeout`
//! closes their connections (HTTP/1.1, an HTTP/2 connection that reads
//! nothing) or resets their stream (one HTTP/2 stream whose window stays shut).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use support::raw::{RawOrigin, Reads, Seen};
use support::rng::Rng;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One generated request: its bytes, and the body it frames if its framing is honest.
struct Case {
    id: u64,
    bytes: Vec<u8>,
    honest_body: Option<Vec<u8>>,
}

const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "FOO"];

/// A request inside a body. Behind honest framing it is `hidden` and must never
/// reach an origin as a request; behind lying framing it is `exposed`: part of
/// it may then be the next request of the client's stream, legitimately.
fn inner_request(id: u64, label: &str) -> String {
    format!("GET /a/hidden HTTP/1.1\r\nHost: a.test\r\nx-id: {label}-{id}\r\nContent-Length: 0\r\n\r\n")
}

fn body(rng: &mut Rng, id: u64, label: &str) -> Vec<u8> {
    match rng.below(4) {
        0 => inner_request(id, label).into_bytes(),
        1 => format!("{}{}", inner_request(id, label), inner_request(id + 1_000_000, label)).into_bytes(),
        2 => (0..rng.below(3000)).map(|i| b"abcdefgh\r\n"[(i % 10) as usize]).collect(),
        _ => b"0\r\n\r\n".to_vec(),
    }
}

fn chunked(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = (1 + rng.below(700) as usize).min(rest.len());
        let ext = if rng.chance(10) { ";name=value" } else { "" };
        out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if rng.chance(10) {
        out.extend_from_slice(b"x-trailer: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn case(rng: &mut Rng, id: u64) -> Case {
    let method = *rng.pick(&METHODS);
    let origin = if rng.chance(50) { "a" } else { "b" };
    let path = if rng.chance(30) { format!("/{origin}/c/{}", rng.below(8)) } else { format!("/{origin}/u/{id}") };
    let (target, host_lines) = match rng.below(12) {
        0 => (format!("http://a.test{path}"), "Host: other.test\r\n".to_string()),
        1 => (path.clone(), "Host: A.Test.:80\r\n".into()),
        2 => (path.clone(), "Host: a.test/x\r\n".into()),
        3 => (path.clone(), "Host: a.test\r\nHost: b.test\r\n".into()),
        4 => (path.clone(), String::new()),
        5 => (path.clone(), "Host: u@a.test\r\n".into()),
        _ => (path.clone(), "Host: a.test\r\n".into()),
    };
    let mut head = format!("{method} {target} HTTP/1.1\r\n{host_lines}x-id: {id}\r\n");
    if rng.chance(10) {
        head.push_str("Expect: 100-continue\r\n");
    }
    let kind = rng.below(14);
    let data = body(rng, id, if kind < 7 { "hidden" } else { "exposed" });
    let (framing, payload, honest): (String, Vec<u8>, Option<Vec<u8>>) = match kind {
        0 | 1 => (String::new(), Vec::new(), Some(Vec::new())),
        2..=4 => (format!("Content-Length: {}\r\n", data.len()), data.clone(), Some(data)),
        5 | 6 => ("Transfer-Encoding: chunked\r\n".into(), chunked(rng, &data), Some(data)),
        // Lies and conflicts: any answer will do, as long as nothing desyncs.
        7 => (format!("Content-Length: {}\r\n", data.len() / 2), data, None),
        8 => (format!("Content-Length: {}\r\n", data.len() + 50), data, None),
        9 => (format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", data.len()), chunked(rng, &data), None),
        10 => (format!("Content-Length: {0}\r\nContent-Length: {1}\r\n", data.len(), data.len() + 1), data, None),
        11 => ("Transfer-Encoding: chunked, identity\r\n".into(), chunked(rng, &data), None),
        12 => {
            let v = *rng.pick(&["+5", "5, 5", "0x5", "5 5", "-1", "99999999999999999999"]);
            (format!("Content-Length: {v}\r\n"), b"hello".to_vec(), None)
        }
        _ => {
            let bad = *rng.pick(&[
                "zz\r\nhello\r\n0\r\n\r\n",
                "5\nhello\r\n0\r\n\r\n",
                "ffffffffffffffffff\r\nx\r\n0\r\n\r\n",
            ]);
            ("Transfer-Encoding: chunked\r\n".into(), bad.as_bytes().to_vec(), None)
        }
    };
    head.push_str(&framing);
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&payload);
    Case { id, bytes, honest_body: honest }
}

/// The ids a connection sent, and everything it got back.
type Answered = (Vec<u64>, String);

/// Answers uncacheable requests with the id they carry, cacheable ones with
/// their path only (a hit may go to anyone).
fn answer() -> support::raw::Answer {
    Arc::new(|s: &Seen| {
        if s.target.contains("/c/") {
            (200, vec![("cache-control".into(), "max-age=60".into())], format!("cached {}", s.target).into_bytes())
        } else {
            let id = s.header("x-id").unwrap_or("none");
            (200, vec![("cache-control".into(), "no-store".into())], format!("<<id={id}>>").into_bytes())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_never_desync_relais_from_its_origins() {
    const CONNECTIONS: u64 = 1000;
    let reads_first = RawOrigin::start(Reads::BodyFirst, answer()).await;
    let answers_first = RawOrigin::start(Reads::AnswerFirst, answer()).await;
    let proxy = relais(
        Conf::new()
            .section("[server]\nlisten = [\"127.0.0.1:0\"]\nheader_read_timeout = \"1s\"\nmax_request_body = \"64KiB\"")
            .section("[guard]\nbody_timeout = \"1s\"")
            .upstream("a", answers_first.addr)
            .with("response_timeout = \"5s\"")
            .upstream("b", reads_first.addr)
            .with("response_timeout = \"5s\"")
            .route("/a/", "a")
            .route("/b/", "b"),
    )
    .await;

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut next_id = 1;
    let mut connections = Vec::new();
    let mut honest: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
    for c in 0..CONNECTIONS {
        let n = 1 + rng.below(4);
        let mut bytes = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..n {
            let case = case(&mut rng, next_id);
            next_id += 1;
            bytes.extend_from_slice(&case.bytes);
            ids.push(case.id);
            honest.insert(case.id, case.honest_body);
        }
        // The last request closes the connection, so a reader knows when it has everything.
        let close =
            format!("GET /b/u/end-{c} HTTP/1.1\r\nHost: a.test\r\nx-id: {next_id}\r\nConnection: close\r\n\r\n");
        bytes.extend_from_slice(close.as_bytes());
        ids.push(next_id);
        honest.insert(next_id, Some(Vec::new()));
        next_id += 1;
        connections.push((ids, bytes));
    }
    let requests = next_id - 1;

    // Each connection's answers, by connection.
    let answered: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let addr = proxy.addr;
    futures_util::stream::iter(connections)
        .for_each_concurrent(48, |(ids, bytes)| {
            let answered = answered.clone();
            async move {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let _ = tcp.write_all(&bytes).await;
                let mut out = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
                answered.lock().unwrap().push((ids, String::from_utf8_lossy(&out).into_owned()));
            }
        })
        .await;

    for (name, o) in [("reads-first", &reads_first), ("answers-first", &answers_first)] {
        assert!(o.desyncs().is_empty(), "{name} origin lost its place: {:?}", o.desyncs());
    }
    let seen: Vec<Seen> = reads_first.seen().into_iter().chain(answers_first.seen()).collect();
    let mut once = HashSet::new();
    let mut with_body = 0;
    for s in &seen {
        assert_eq!(s.headers_named("x-id"), 1, "{s:?}");
        let raw_id = s.header("x-id").unwrap();
        if raw_id.starts_with("exposed-") {
            continue;
        }
        let id: u64 = raw_id.parse().unwrap_or_else(|_| panic!("the origin ran a request no client sent: {s:?}"));
        assert!((1..=requests).contains(&id), "{s:?}");
        assert!(once.insert(id), "request {id} reached an origin twice");
        if let Some(Some(body)) = honest.get(&id) {
            assert!(
                s.body == *body,
                "request {id}: the origin got {} bytes, the client framed {}",
                s.body.len(),
                body.len()
            );
            with_body += !body.is_empty() as usize;
        }
    }
    for (ids, text) in answered.lock().unwrap().iter() {
        for marker in text.split("<<id=").skip(1) {
            let id = marker.split(">>").next().unwrap();
            if id.starts_with("exposed-") {
                continue;
            }
            let id: u64 = id.parse().unwrap_or_else(|_| panic!("an answer for {id:?} reached a client"));
            assert!(ids.contains(&id), "a connection that sent {ids:?} got the answer to request {id}");
        }
    }
    // The generator must have exercised what it claims.
    assert!(requests > 2000, "{requests}");
    assert!(seen.len() > requests as usize / 4, "only {} of {requests} reached an origin", seen.len());
    assert!(with_body > 100, "only {with_body} bodies reached an origin");
}

/// An origin with a large uncacheable answer and a small one, and relais in
/// front with a one-second send timeout.
async fn big_and_small(extra: &str) -> (Origin, Relais) {
    let big: &'static str = Box::leak("x".repeat(BIG).into_boxed_str());
    let o = origin()
        .route("/big", move |_| async move { text(200, big, &[("cache-control", "no-store")]) })
        .route("/cached", move |_| async move { text(200, big, &[("cache-control", "max-age=60")]) })
        .text("/small", "small")
        .route("/page", move |_| async move { text(200, &big[..10_000], &[("cache-control", "max-age=60")]) })
        .start()
        .await;
    let proxy = relais(
        proxy_to(o.addr).section(format!("[server]\nlisten = [\"127.0.0.1:0\"]\nsend_timeout = \"1s\"\n{extra}")),
    )
    .await;
    (o, proxy)
}

const BIG: usize = 16 << 20;

/// A connection to `addr` with a small receive buffer, so that a client that
/// does not read fills it quickly.
async fn narrow(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// An HTTP/2 GET of `path` with windows opened wide, as raw frames: the
/// client lets relais send as fast as the socket takes it.
fn h2_get_wide_open(path: &str) -> Vec<u8> {
    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 2^31 - 1; the connection's window likewise.
    frame(&mut out, 0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]);
    frame(&mut out, 0x8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes());
    // HPACK: :method GET, :scheme http, :path and :authority as literals.
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 6]);
    block.extend_from_slice(b"a.test");
    frame(&mut out, 0x1, 0x5, 1, &block);
    out
}

/// Clients that ask for a large answer and read none of it are cut off after
/// `send_timeout`, on HTTP/1.1 and on an HTTP/2 connection that reads
/// nothing: with `max_connections = 2` they would otherwise keep relais from
/// accepting anyone else for ever.
#[tokio::test]
async fn clients_that_never_read_are_closed_after_the_send_timeout() {
    let (_o, proxy) = big_and_small("max_connections = 2").await;
    let mut h1 = narrow(proxy.addr).await;
    h1.write_all(b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n").await.unwrap();
    let mut h2 = narrow(proxy.addr).await;
    h2.write_all(&h2_get_wide_open("/big")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Both places are taken until the send timeout frees them.
    let r = get(&proxy.url("/small")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "small"));

    // What they did get was cut short.
    for (name, mut tcp) in [("HTTP/1.1", h1), ("HTTP/2", h2)] {
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                got += n;
            }
        })
        .await;
        assert!(read.is_ok(), "{name}: still open");
        assert!(got < BIG, "{name}: got all {got} bytes");
    }
}

/// On HTTP/2 one stream whose client never opens its window is reset after
/// `send_timeout`, while the connection goes on serving other streams: a
/// pass-through answer and a cached one (one buffer, handed over in pieces).
#[tokio::test]
async fn an_http2_stream_never_read_is_reset_and_the_connection_kept() {
    let (_o, proxy) = big_and_small("").await;
    let host = [("host", "a.test")];
    assert_eq!(get_with(&proxy.url("/cached"), &host).await.body.len(), BIG);
    // Over 8 MiB, it is stored on disk once its file is written.
    proxy.stored("http://a.test/cached").await;
    let hit = get_with(&proxy.url("/cached"), &host).await;
    assert!(hit.header("cache-status").is_some_and(|s| s.contains("hit")), "{:?}", hit.headers);
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(65_535)
        .initial_connection_window_size(256 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = |path: &str| Request::get(format!("http://a.test{path}")).body(()).unwrap();
    let mut client = client.ready().await.unwrap();
    let mut unread = Vec::new();
    for path in ["/big", "/cached"] {
        let (response, _) = client.send_request(request(path), true).unwrap();
        unread.push((path, response.await.unwrap().into_body()));
        client = client.ready().await.unwrap();
    }
    // Another stream, read as it comes, completes meanwhile.
    let (response, _) = client.send_request(request("/small"), true).unwrap();
    let mut body = response.await.unwrap().into_body();
    let mut small = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        small.extend_from_slice(&chunk);
    }
    assert_eq!(small, b"small");

    for (path, mut body) in unread {
        // What the window let through, then a reset.
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            let mut got = 0;
            loop {
                match body.data().await {
                    Some(Ok(chunk)) => got += chunk.len(),
                    Some(Err(e)) => return (got, e.reason()),
                    None => return (got, None),
                }
            }
        })
        .await;
        let (got, reason) = ended.unwrap_or_else(|_| panic!("{path}: never reset"));
        assert!(got <= 65_535, "{path}: {got} bytes past a shut window");
        assert_eq!(reason, Some(h2::Reason::CANCEL), "{path}");
    }
    // The connection still serves.
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(request("/small"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
}

/// An HTTP/2 answer short enough to be queued whole (a cached page), to a
/// client whose window is narrower: hyper counts it done, and its last frames
/// wait on the client. The connection then has nothing in flight: closed at
/// `idle_timeout`, it is dropped `send_timeout` later rather than waiting for
/// ever.
#[tokio::test]
async fn an_http2_connection_left_with_unread_last_frames_is_dropped() {
    let (_o, proxy) = big_and_small("idle_timeout = \"1s\"").await;
    let host = [("host", "a.test")];
    get_with(&proxy.url("/page"), &host).await;
    assert!(get_with(&proxy.url("/page"), &host).await.header("cache-status").is_some_and(|s| s.contains("hit")));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new().initial_window_size(100).handshake::<_, Bytes>(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(Request::get("http://a.test/page").body(()).unwrap(), true).unwrap();
    let _unread = response.await.unwrap().into_body();
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(ended.is_ok(), "the connection is still open");
}
