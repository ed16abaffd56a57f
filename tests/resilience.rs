//! The cache under load and failure: collapsing, stale-while-revalidate,
//! stale-if-error, ranges, broken origins and clients.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::*;

fn status_of(r: &Reply) -> &str {
    r.header("cache-status").unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_under_a_herd_is_fetched_once() {
    let o = origin()
        .route("/hot", |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            text(200, &"h".repeat(50_000), &[("cache-control", "max-age=60")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let url = proxy.url("/hot");
    let client = client();
    let herd: Vec<_> = (0..200)
        .map(|_| {
            let (url, client) = (url.clone(), client.clone());
            tokio::spawn(async move { send_with(&client, Request::get(url).body(full("")).unwrap()).await })
        })
        .collect();
    let mut collapsed = 0;
    for r in herd {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 50_000, "every client gets the whole body");
        collapsed += status_of(&r).contains("collapsed") as usize;
    }
    assert_eq!(o.hits("/hot"), 1, "one origin fetch for the whole herd");
    assert!(collapsed > 100, "most requests waited on the shared fetch ({collapsed})");
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert_eq!(waits(&m, "shared"), collapsed, "each wait counted with how it ended");
    proxy.stored("/hot").await;
    assert!(status_of(&get(&url).await).contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncacheable_key_does_not_make_clients_queue() {
    let o = origin()
        .route("/private", |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            text(200, "yours", &[("cache-control", "private")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let url = proxy.url("/private");
    let client = client();
    let burst = |n: usize| {
        (0..n)
            .map(|_| {
                let (url, client) = (url.clone(), client.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = send_with(&client, Request::get(url).body(full("")).unwrap()).await;
                    (r, t.elapsed())
                })
            })
            .collect::<Vec<_>>()
    };
    // The first burst waits at most for the one fetch that finds out, then goes itself.
    for h in burst(50) {
        let (r, took) = h.await.unwrap();
        assert_eq!(r.text(), "yours");
        assert!(took < Duration::from_millis(1500), "waited {took:?}");
    }
    // Then the key is known uncacheable: nobody waits for anybody.
    for h in burst(50) {
        let (r, took) = h.await.unwrap();
        assert_eq!(r.text(), "yours");
        assert!(took < Duration::from_millis(1000), "waited {took:?}");
        assert!(!status_of(&r).contains("collapsed"));
    }
    assert_eq!(o.hits("/private"), 100);
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert!(waits(&m, "released") > 0 && waits(&m, "shared") == 0, "{m}");
}

/// `relais_collapsed_waits_total{end="…"}` from a metrics page.
fn waits(metrics: &str, end: &str) -> usize {
    let series = format!("relais_collapsed_waits_total{{end=\"{end}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&series)?.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let o = origin()
        .numbered("/news", |n, _| {
            async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // The first edition is stale as soon as stored (its Age is all of its
                // max-age); the next ones stay fresh, to be told apart in the cache.
                let (max_age, age) = if n == 0 { ("1", "1") } else { ("60", "0") };
                let cc = format!("max-age={max_age}, stale-while-revalidate=30");
                text(200, &format!("edition {n}"), &[("cache-control", &cc), ("age", age)])
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    assert_eq!(get(&proxy.url("/news")).await.text(), "edition 0");
    proxy.stored("/news").await;

    let t = Instant::now();
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(get(&proxy.url("/news")).await);
    }
    assert!(t.elapsed() < Duration::from_millis(400), "stale answers do not wait for the origin");
    for r in &answers {
        assert_eq!(r.text(), "edition 0");
        assert!(status_of(r).contains("hit"), "{}", status_of(r));
    }
    until("the revalidated edition to be stored", || async { proxy.ttl("/news").await > Some(1) }).await;
    assert_eq!(o.hits("/news"), 2, "exactly one background revalidation");
    assert_eq!(get(&proxy.url("/news")).await.text(), "edition 1");
}

#[tokio::test]
async fn stale_if_error_serves_stale_then_502_after_the_window() {
    let o = origin()
        // Stale as soon as stored: its Age is all of its max-age.
        .route("/", |_| async {
            text(200, "last good copy", &[("cache-control", "max-age=1, stale-if-error=2"), ("age", "1")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get(&proxy.url("/")).await;
    proxy.stored("/").await;
    o.stop();
    let r = get(&proxy.url("/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "last good copy");
    assert!(status_of(&r).contains("fwd=stale"), "{}", status_of(&r));
    until("the stale-if-error window to close", || async {
        let r = get(&proxy.url("/")).await;
        assert!(r.status == 502 || r.text() == "last good copy", "{} {}", r.status, status_of(&r));
        r.status == 502
    })
    .await;
}

#[tokio::test]
async fn stale_if_error_covers_5xx_answers() {
    let o = origin()
        .numbered("/", |n, _| {
            async move {
                if n == 0 {
                    // Stale as soon as stored: its Age is all of its max-age.
                    text(200, "good", &[("cache-control", "max-age=1"), ("age", "1")])
                } else {
                    text(503, "down for maintenance", &[])
                }
            }
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr).with("cache = { stale_if_error = \"1m\" }")).await;
    get(&proxy.url("/")).await;
    proxy.stored("/").await;
    let r = get(&proxy.url("/")).await;
    assert_eq!(r.text(), "good");
    assert!(status_of(&r).contains("fwd-status=503"), "{}", status_of(&r));
}

#[tokio::test]
async fn ranges_from_cache() {
    let o = origin()
        .route("/file", |_| async { text(200, "0123456789", &[("cache-control", "max-age=60"), ("etag", "\"f1\"")]) })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    // A range on a miss fetches and stores the whole object, and answers the range.
    let r = get_with(&proxy.url("/file"), &[("range", "bytes=2-4")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "234"));
    proxy.stored("/file").await;
    let r = get_with(&proxy.url("/file"), &[("range", "bytes=-3")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "789"));
    assert_eq!(r.header("content-range"), Some("bytes 7-9/10"));
    assert!(status_of(&r).contains("hit"));
    let r = get_with(&proxy.url("/file"), &[("range", "bytes=20-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    let r = get_with(&proxy.url("/file"), &[("range", "bytes=0-1"), ("if-range", "\"f1\"")]).await;
    assert_eq!(r.status, 206);
    let r = get_with(&proxy.url("/file"), &[("range", "bytes=0-1"), ("if-range", "\"old\"")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "0123456789"));
    let r = get_with(&proxy.url("/file"), &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!(r.status, 200, "several ranges get the whole response");
    assert_eq!(o.hits("/file"), 1);
}

/// An origin body: `n` chunks of `size` bytes, `pause` apart, then an error if `break_off`.
fn slow_body(n: usize, size: usize, pause: Duration, break_off: bool) -> Body {
    let chunks = futures_util::stream::unfold(0usize, move |i| async move {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        if i < n {
            Some((Ok(Frame::data(Bytes::from(vec![b'a' + (i % 26) as u8; size]))), i + 1))
        } else if break_off && i == n {
            Some((Err::<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>("origin died".into()), i + 1))
        } else {
            None
        }
    });
    BodyExt::boxed(StreamBody::new(chunks))
}

#[tokio::test]
async fn origin_dying_mid_body_is_an_error_and_nothing_is_stored() {
    let o = origin()
        .route("/", |_| async {
            let mut r = http::Response::new(slow_body(4, 1000, Duration::from_millis(10), true));
            r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
            r.headers_mut().insert("content-length", "8000".parse().unwrap());
            r
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let res = client().request(Request::get(proxy.url("/")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.into_body().collect().await.is_err(), "the client sees a broken body, not a short clean one");
    settle().await;
    let res = client().request(Request::get(proxy.url("/")).body(full("")).unwrap()).await.unwrap();
    assert!(res.headers()["cache-status"].to_str().unwrap().contains("miss"));
    assert_eq!(o.hits("/"), 2);
}

/// An origin that stops sending in the middle of a body is cut off after
/// `response_timeout` of silence, as nginx's `proxy_read_timeout` does. The
/// timeout covered only the head: the fill waited for ever, and every later
/// request for the key joined it, got the first bytes and hung.
#[tokio::test(start_paused = true)]
async fn an_origin_silent_mid_body_is_cut_off_and_the_key_is_fetched_again() {
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = origin.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut held = Vec::new();
        while let Ok((mut tcp, _)) = origin.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncache-control: max-age=60\r\n\r\n";
            let _ = tcp.write_all(format!("{head}{}", "x".repeat(100)).as_bytes()).await;
            held.push(tcp);
        }
    });
    let proxy = relais(Conf::new().upstream("o", addr).with("response_timeout = \"1s\"").route_all("o")).await;
    for round in 1..=2 {
        let started = tokio::time::Instant::now();
        let res = client().request(Request::get(proxy.url("/stalls")).body(full("")).unwrap()).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect()).await;
        assert!(matches!(body, Ok(Err(_))), "round {round}: a broken body, cut off (got {body:?})");
        assert!(started.elapsed() >= Duration::from_millis(900), "not before the timeout");
        assert_eq!(accepted.load(Ordering::SeqCst), round, "round {round}: fetched again, not joined to a dead fill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_does_not_cancel_the_fill_for_others() {
    let o = origin()
        .route("/video", |_| async {
            let mut r = http::Response::new(slow_body(10, 10_000, Duration::from_millis(50), false));
            r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
            r.headers_mut().insert("content-length", "100000".parse().unwrap());
            r
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let url = proxy.url("/video");

    // The first client reads the head and one chunk, then goes away.
    let first = client().request(Request::get(&url).body(full("")).unwrap()).await.unwrap();
    let mut body = first.into_body();
    let _ = body.frame().await;
    let others: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    drop(body);
    for r in others {
        let r = r.await.unwrap();
        assert_eq!(r.body.len(), 100_000);
    }
    proxy.stored("/video").await;
    let r = get(&url).await;
    assert!(status_of(&r).contains("hit"), "stored although its first client left: {}", status_of(&r));
    assert_eq!(o.hits("/video"), 1);
}

#[tokio::test]
async fn an_unwritable_disk_leaves_a_working_memory_cache() {
    let o = origin().route("/", |_| async { text(200, "x", &[("cache-control", "max-age=60")]) }).start().await;
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"in the way").unwrap();
    let proxy = relais(proxy_to(o.addr).disk(&not_a_dir)).await;
    assert_eq!(get(&proxy.url("/")).await.text(), "x");
    proxy.stored("/").await;
    assert!(status_of(&get(&proxy.url("/")).await).contains("hit"));
    assert_eq!(o.hits("/"), 1);
}

/// A client hanging up on a request that is not collapsed (a POST) drops the
/// request where it stands: the server's in-flight count must come down too
/// (least-conn balancing reads it).
#[tokio::test]
async fn a_client_hanging_up_leaves_no_request_counted_in_flight() {
    let o = origin().late("/slow", Duration::from_secs(2), "late").start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let url = proxy.url("/slow");
    let gone = tokio::spawn(async move { send(Request::post(url).body(full("x")).unwrap()).await });
    let in_flight = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("relais_upstream_server_in_flight{"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    until("the request to be in flight", || async { in_flight(&proxy.metrics().await) == Some(1) }).await;
    gone.abort();
    until("the request to be counted out", || async { in_flight(&proxy.metrics().await) == Some(0) }).await;
}
