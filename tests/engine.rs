//! relais's own HTTP/1.1 engine, where it does what hyper's did not: an
//! origin's 103 Early Hints reach the client before the answer, `100
//! Continue` goes out when the body is first read (and not when it never is),
//! and pipelined requests with bodies are answered in order. The switch back
//! to hyper's engine serves the same requests.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin that answers every request with a 103 carrying a preload link,
/// then a cacheable 200.
async fn hinting_origin() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = tcp.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let hint = "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n";
                        if tcp.write_all(hint.as_bytes()).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let answer = "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn early_hints_reach_the_client_before_the_answer_and_are_never_stored() {
    let proxy = relais(proxy_to(hinting_origin().await)).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let got = read_response_after_hints(&mut tcp).await;
    let hint = got.find("HTTP/1.1 103 Early Hints\r\n").expect(&got);
    let answer = got.find("HTTP/1.1 200 OK\r\n").expect(&got);
    assert!(hint < answer, "{got}");
    assert!(got[hint..answer].contains("link: </style.css>; rel=preload; as=style\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nok"), "{got}");

    // The next request is a hit: the hint was not stored with the answer.
    tcp.write_all(b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let got = read_response(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("cache-status: relais; hit"), "{got}");
    assert!(!got.contains("103"), "{got}");
}

/// Reads a 103 and then the whole 200 that follows it.
async fn read_response_after_hints(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn continue_goes_out_when_the_body_is_first_read() {
    let o = origin()
        .route("/up", |req: http::Request<hyper::body::Incoming>| async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            text(200, &format!("got {}", body.len()), &[])
        })
        .start()
        .await;
    let proxy =
        relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nmax_request_body = \"1KiB\"")).await;

    // The body is wanted: 100 first, then the answer once it is sent.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(b"hello").await.unwrap();
    let got = read_response(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("got 5"), "{got}");

    // Refused on its declared length: no 100, just the 413.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let got = read_response(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 413 "), "{got}");
}

#[tokio::test]
async fn pipelined_requests_with_bodies_are_answered_in_order() {
    let o = origin()
        .route("/", |req: http::Request<hyper::body::Incoming>| async move {
            use http_body_util::BodyExt;
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            text(200, &format!("{path}:{}", String::from_utf8_lossy(&body)), &[("cache-control", "no-store")])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none\
          POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let got = read_until_quiet(&mut tcp, Duration::from_secs(2)).await;
    let (a, b, c) = (got.find("/a:one").expect(&got), got.find("/b:two").expect(&got), got.find("/c:").expect(&got));
    assert!(a < b && b < c, "{got}");
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 3, "{got}");
}

#[tokio::test]
async fn the_hyper_engine_still_serves() {
    let o = origin().text("/", "hello").start().await;
    let proxy = relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nengine = \"hyper\"")).await;
    let r = get(&proxy.url("/x")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello"));
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_quiet(&mut tcp, Duration::from_secs(2)).await;
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
}
