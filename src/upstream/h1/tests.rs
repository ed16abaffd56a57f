//! Origin connections against raw origins on real sockets: odd but valid
//! responses, broken ones, and what becomes of the connection after each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{Conn, Error, Failed, send};
use crate::config::Engine;
use crate::http::body::Body;
use crate::http::interim::Interim;
use crate::upstream::connect::{Connector, Endpoint, Stream};
use crate::upstream::pool::{Pool, Settings};

/// An origin that answers each request with `pieces`, written one by one,
/// then closes if `close`, else reads on until the peer closes. Yields
/// everything it read, per connection.
async fn origin(pieces: Vec<&'static [u8]>, close: bool) -> (SocketAddr, JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Ok((mut tcp, _))) = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let mut answered = 0;
            loop {
                let requests = count(&got, b" HTTP/1.1\r\n");
                if requests > answered && count(&got, b"\r\n\r\n") >= requests {
                    for piece in &pieces {
                        tcp.write_all(piece).await.unwrap();
                        if pieces.len() > 1 {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    answered += 1;
                    if close {
                        break;
                    }
                    continue;
                }
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            seen.push(got);
        }
        seen
    });
    (addr, task)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

fn pool() -> Arc<Pool> {
    Pool::new(Arc::new(Settings {
        h2: false,
        max_idle: 8,
        idle_timeout: Duration::from_secs(60),
        max_streams: 1,
        engine: Engine::Relais,
    }))
}

async fn conn(addr: SocketAddr) -> Conn {
    Conn::new(Stream::Tcp(TcpStream::connect(addr).await.unwrap()))
}

fn get(method: Method) -> Request<Body> {
    let mut req = Request::new(Body::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = "/x?y=1".parse().unwrap();
    req.headers_mut().insert("host", "example.com".parse().unwrap());
    req
}

async fn exchange(response: &'static [u8], method: Method) -> (Result<Response<Body>, Error>, Arc<Pool>) {
    let (addr, _origin) = origin(vec![response], false).await;
    let pool = pool();
    let res = send(conn(addr).await, get(method), Some(pool.clone())).await;
    (res.map_err(|(Failed::Unsent(_, e) | Failed::Sent(e))| e), pool)
}

async fn text(res: Response<Body>) -> Result<(String, Option<http::HeaderMap>), String> {
    let collected = res.into_body().collect().await.map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    Ok((String::from_utf8(collected.to_bytes().to_vec()).unwrap(), trailers))
}

#[tokio::test]
async fn chunked_with_trailers_then_the_connection_is_kept() {
    let (res, pool) = exchange(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
        Method::GET,
    )
    .await;
    let (body, trailers) = text(res.unwrap()).await.unwrap();
    assert_eq!(body, "hello");
    assert_eq!(trailers.unwrap()["x-sum"], "1");
    assert_eq!(pool.open_connections(), 1);
}

#[tokio::test]
async fn a_close_delimited_body_ends_with_the_connection() {
    let (addr, _origin) = origin(vec![b"HTTP/1.1 200 OK\r\n\r\nabc"], true).await;
    let pool = pool();
    let res = send(conn(addr).await, get(Method::GET), Some(pool.clone())).await.ok().unwrap();
    assert_eq!(text(res).await.unwrap().0, "abc");
    assert_eq!(pool.open_connections(), 0, "never reused");
}

#[tokio::test]
async fn informational_heads_go_to_the_interim_then_the_final_one_is_read() {
    let (addr, _origin) = origin(
        vec![
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ],
        false,
    )
    .await;
    let interim = Interim::default();
    let mut req = get(Method::GET);
    req.extensions_mut().insert(interim.clone());
    let res = send(conn(addr).await, req, None).await.ok().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(text(res).await.unwrap().0, "ok");
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let std::task::Poll::Ready((status, headers)) = interim.poll_next(&mut cx) else { panic!("no 103 passed on") };
    assert_eq!(status, StatusCode::EARLY_HINTS);
    assert_eq!(headers["link"], "</a.css>; rel=preload");
    assert!(interim.poll_next(&mut cx).is_pending(), "the 100 is not passed on");
}

#[tokio::test]
async fn conflicting_lengths_are_an_error_and_equal_ones_are_one() {
    let (res, _) = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", Method::GET).await;
    assert!(matches!(res, Err(Error::Head(_))));
    let (res, _) = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", Method::GET).await;
    assert!(matches!(res, Err(Error::Head(_))));
    let (res, pool) = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", Method::GET).await;
    assert_eq!(text(res.unwrap()).await.unwrap().0, "ok");
    assert_eq!(pool.open_connections(), 1);
}

#[tokio::test]
async fn chunked_wins_over_a_length_and_the_connection_is_not_reused() {
    let (res, pool) = exchange(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        Method::GET,
    )
    .await;
    assert_eq!(text(res.unwrap()).await.unwrap().0, "ok");
    assert_eq!(pool.open_connections(), 0);
}

#[tokio::test]
async fn a_head_split_across_many_writes() {
    let bytes: &'static [u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    let pieces: Vec<&'static [u8]> = bytes.chunks(3).collect();
    let (addr, _origin) = origin(pieces, false).await;
    let res = send(conn(addr).await, get(Method::GET), None).await.ok().unwrap();
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert_eq!(text(res).await.unwrap().0, "hello");
}

#[tokio::test]
async fn a_connection_closed_mid_body_fails_the_body() {
    let (addr, _origin) = origin(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], true).await;
    let pool = pool();
    let res = send(conn(addr).await, get(Method::GET), Some(pool.clone())).await.ok().unwrap();
    assert!(text(res).await.is_err());
    assert_eq!(pool.open_connections(), 0);
}

#[tokio::test]
async fn no_body_after_304_204_or_a_head_request() {
    for (response, method) in [
        (&b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"[..], Method::GET),
        (b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", Method::HEAD),
    ] {
        let (res, pool) = exchange(response, method).await;
        let res = res.unwrap();
        assert!(http_body::Body::is_end_stream(res.body()));
        assert_eq!(pool.open_connections(), 1, "kept at once: {:?}", res.status());
    }
}

#[tokio::test]
async fn heads_hyper_refuses_are_refused() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nFoo : bar\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nFoo: bar\r\n baz\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nFoo: b\0r\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
    ] {
        let (res, _) = exchange(response, Method::GET).await;
        assert!(matches!(res, Err(Error::Head(_))), "{:?}", String::from_utf8_lossy(response));
    }
    let huge: &'static [u8] = format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(300 * 1024)).leak().as_bytes();
    let (res, _) = exchange(huge, Method::GET).await;
    assert!(matches!(res, Err(Error::Head("response head too large"))));
}

#[tokio::test]
async fn a_closed_connection_before_any_answer_is_an_error() {
    let (addr, _origin) = origin(vec![], true).await;
    let res = send(conn(addr).await, get(Method::GET), None).await;
    assert!(matches!(res, Err(Failed::Sent(Error::Closed))));
}

#[tokio::test]
async fn request_bodies_are_framed_by_what_is_sent() {
    let (addr, seen) = origin(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
    let kept = pool();
    let mut req = get(Method::POST);
    *req.body_mut() = Body::full("hello");
    // The pipeline's own framing fields are replaced by the body's.
    req.headers_mut().insert("transfer-encoding", "chunked".parse().unwrap());
    let res = send(conn(addr).await, req, Some(kept.clone())).await.ok().unwrap();
    text(res).await.unwrap();
    assert_eq!(kept.open_connections(), 1);
    drop(kept);
    let seen = String::from_utf8(seen.await.unwrap().concat()).unwrap();
    assert_eq!(seen, "POST /x?y=1 HTTP/1.1\r\nhost: example.com\r\ncontent-length: 5\r\n\r\nhello");

    let (addr, seen) = origin(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
    let kept = pool();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = get(Method::PUT);
    *req.body_mut() = Body::channel(rx);
    let sending = tokio::spawn(async move {
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"abc")))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"0123456789abcdef")))).await.unwrap();
    });
    // The origin answers before the body is all sent: the rest still goes out.
    let res = send(conn(addr).await, req, Some(kept.clone())).await.ok().unwrap();
    text(res).await.unwrap();
    sending.await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(kept.open_connections(), 1, "back in the pool once the body was sent");
    drop(kept);
    let seen = String::from_utf8(seen.await.unwrap().concat()).unwrap();
    assert_eq!(
        seen,
        "PUT /x?y=1 HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_origin_closed_is_replaced_and_reuse_is_told() {
    let (addr, seen) = origin(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], true).await;
    let pool = pool();
    let connector = Connector::new(None, Duration::from_secs(5));
    let endpoint = Endpoint::Tcp { host: Arc::from("127.0.0.1"), port: addr.port(), name: None };
    for _ in 0..3 {
        let sent = pool.send(&connector, &endpoint, false, get(Method::GET)).await;
        let Ok((res, reused)) = sent else { panic!("failed") };
        assert!(!reused, "each connection was closed by the origin");
        assert_eq!(text(res).await.unwrap().0, "ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.await.unwrap().len(), 3);

    // A kept connection is reused, and told so.
    let (addr, _origin) = origin(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], false).await;
    let endpoint = Endpoint::Tcp { host: Arc::from("127.0.0.1"), port: addr.port(), name: None };
    let (res, reused) = pool.send(&connector, &endpoint, false, get(Method::GET)).await.ok().unwrap();
    assert!(!reused);
    text(res).await.unwrap();
    assert_eq!(pool.open_connections(), 1);
    let (res, reused) = pool.send(&connector, &endpoint, false, get(Method::GET)).await.ok().unwrap();
    assert!(reused);
    drop(res);
}

#[tokio::test]
async fn a_switch_of_protocols_hands_over_the_connection_and_what_was_read() {
    let (addr, _origin) = origin(vec![b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nfirst"], false).await;
    let mut res = send(conn(addr).await, get(Method::GET), None).await.ok().unwrap();
    assert_eq!(res.status(), 101);
    let up = res.extensions_mut().remove::<crate::http::upgrade::OnUpgrade>().unwrap();
    let mut io = up.upgraded().await.unwrap();
    let mut got = [0u8; 5];
    io.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"first");
    io.write_all(b"back").await.unwrap();
}
