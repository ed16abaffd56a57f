//! The proxy core against real origins: routing, streaming, header rewriting,
//! balancing, failover, errors, reload, websockets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn routes_by_host_path_and_header() {
    let a = origin().text("/", "a").start().await;
    let b = origin().text("/", "b").start().await;
    let c = origin().text("/", "c").start().await;
    let d = origin().text("/", "d").start().await;
    let proxy = relais(
        Conf::new()
            .upstream("a", a.addr)
            .upstream("b", b.addr)
            .upstream("c", c.addr)
            .upstream("d", d.addr)
            .route("/", "a")
            .route("/api/", "b")
            .route("/api/", "c")
            .with(r#"headers = { "x-canary" = "yes" }"#)
            .route_all("d")
            .with(r#"host = "*.example.test""#),
    )
    .await;

    assert_eq!(get(&proxy.url("/index.html")).await.text(), "a");
    assert_eq!(get(&proxy.url("/api/users")).await.text(), "b");
    assert_eq!(get_with(&proxy.url("/api/users"), &[("x-canary", "yes")]).await.text(), "c");
    assert_eq!(get_with(&proxy.url("/"), &[("host", "shop.example.test")]).await.text(), "d");
    assert_eq!(get_with(&proxy.url("/"), &[("host", "Shop.Example.Test:8080")]).await.text(), "d");
}

#[tokio::test]
async fn no_route_is_404() {
    let a = origin().text("/", "a").start().await;
    let proxy = relais(Conf::new().upstream("a", a.addr).route("/app/", "a")).await;
    let r = get(&proxy.url("/other")).await;
    assert_eq!(r.status, 404);
    assert_eq!(a.total_hits(), 0);
}

#[tokio::test]
async fn strip_prefix_and_header_rules() {
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let seen = format!(
                "{} env={} cookie={}",
                req.uri().path(),
                req.headers().get("x-env").map_or("-", |v| v.to_str().unwrap()),
                req.headers().get("cookie").map_or("-", |v| v.to_str().unwrap()),
            );
            text(200, &seen, &[("x-debug", "secret"), ("server", "gunicorn"), ("x-powered-by", "PHP")])
        })
        .start()
        .await;
    let proxy = relais(Conf::new().upstream("o", o.addr).route("/api", "o").with(
        r#"strip_prefix = true
request_headers = { set = { "x-env" = "prod" }, remove = ["cookie"] }
response_headers = { remove = ["x-debug"], add = { "strict-transport-security" = "max-age=60" } }"#,
    ))
    .await;
    let r = get_with(&proxy.url("/api/users?x=1"), &[("cookie", "a=b")]).await;
    assert_eq!(r.text(), "/users env=prod cookie=-");
    assert_eq!(r.header("x-debug"), None);
    assert_eq!(r.header("strict-transport-security"), Some("max-age=60"));
    assert_eq!(r.header("server"), None, "backend Server header hidden");
    assert_eq!(r.header("x-powered-by"), None);
    assert_eq!(r.header("via"), Some("1.1 relais"));
}

#[tokio::test]
async fn forwarding_headers_and_hop_by_hop() {
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let h = req.headers();
            let show = |n: &str| h.get(n).map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
            let body = format!(
                "xff={} proto={} xhost={} via={} host={} secret={} te={} ka={}",
                show("x-forwarded-for"),
                show("x-forwarded-proto"),
                show("x-forwarded-host"),
                show("via"),
                show("host"),
                show("x-secret"),
                show("te"),
                show("keep-alive"),
            );
            text(200, &body, &[("connection", "x-internal"), ("x-internal", "1"), ("keep-alive", "timeout=5")])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;
    let r = get_with(
        &proxy.url("/"),
        &[
            ("host", "shop.test"),
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "x-secret"),
            ("x-secret", "s"),
            ("te", "gzip, trailers"),
        ],
    )
    .await;
    // TE's codings are the hop's; `trailers` passes, as relais forwards trailers.
    assert_eq!(
        r.text(),
        "xff=203.0.113.9, 127.0.0.1 proto=http xhost=shop.test via=1.1 relais host=shop.test secret=- te=trailers ka=-"
    );
    assert_eq!(r.header("x-internal"), None, "header named by the origin's Connection removed");
    assert_eq!(r.header("keep-alive"), None);
}

#[tokio::test]
async fn pass_host_false_sends_server_address() {
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            text(200, req.headers()["host"].to_str().unwrap(), &[])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr).with("pass_host = false")).await;
    let r = get_with(&proxy.url("/"), &[("host", "public.test")]).await;
    assert_eq!(r.text(), o.addr.to_string());
}

#[tokio::test]
async fn streams_large_bodies_both_ways() {
    // The origin echoes the upload's length and sends back a chunked body of 8 MiB.
    let o = origin()
        .route("/upload", |req: Request<hyper::body::Incoming>| async move {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                n += frame.unwrap().data_ref().map_or(0, |d| d.len());
            }
            text(200, &n.to_string(), &[])
        })
        .route("/download", |_| async move {
            let chunks =
                futures_util::stream::iter((0..128).map(|i| {
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(Bytes::from(
                        vec![(i % 251) as u8; 64 * 1024],
                    )))
                }));
            http::Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;

    let upload = futures_util::stream::iter((0..64).map(|_| {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(Bytes::from(vec![7u8; 128 * 1024])))
    }));
    let req = Request::post(proxy.url("/upload")).body(BodyExt::boxed(StreamBody::new(upload))).unwrap();
    assert_eq!(send(req).await.text(), (64 * 128 * 1024).to_string());

    let r = get(&proxy.url("/download")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 128 * 64 * 1024);
    assert!(r.body.chunks(64 * 1024).enumerate().all(|(i, c)| c.iter().all(|&b| b == (i % 251) as u8)));
}

#[tokio::test]
async fn weighted_round_robin() {
    let a = origin().text("/", "a").start().await;
    let b = origin().text("/", "b").start().await;
    let weighted = format!("[upstreams.pool]\nservers = [{{ address = \"{}\", weight = 3 }}, \"{}\"]", a.addr, b.addr);
    let proxy = relais(Conf::new().section(weighted).route_all("pool")).await;
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(get(&proxy.url("/")).await.text());
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 30);
    assert_eq!(seen.iter().filter(|s| *s == "b").count(), 10);
    // Smooth: never more than three a's in a row.
    assert!(!seen.join("").contains("aaaa"));
}

/// `balance = "hash"`: one user's requests always reach one server, the users
/// spread over all four; `ip_hash` keeps one client on one server; `ewma`
/// sends new requests away from a slow server.
#[tokio::test]
async fn hash_ip_hash_and_ewma_balance_as_promised() {
    let mut pool = Vec::new();
    for name in ["a", "b", "c", "d"] {
        pool.push(origin().text("/", name).start().await);
    }
    let servers = pool.iter().map(|o| format!("\"{}\"", o.addr)).collect::<Vec<_>>().join(", ");
    let addrs: Vec<_> = pool.iter().map(|o| o.addr).collect();
    let config = |balance: &str| {
        Conf::new().servers("pool", &addrs).with(balance).route_all("pool").with("cache = { bypass = true }")
    };
    let proxy = relais(&config("balance = \"hash\"\nhash_key = \"header:x-user\"")).await;
    let mut used = std::collections::HashSet::new();
    for user in 0..40 {
        let u = user.to_string();
        let first = get_with(&proxy.url("/"), &[("x-user", &u)]).await.text();
        for _ in 0..3 {
            assert_eq!(get_with(&proxy.url("/"), &[("x-user", &u)]).await.text(), first, "user {user}");
        }
        used.insert(first);
    }
    assert_eq!(used.len(), 4, "forty users spread over every server");

    let proxy = relais(&config("balance = \"ip_hash\"")).await;
    let first = get(&proxy.url("/")).await.text();
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/")).await.text(), first);
    }

    let bad = format!("[upstreams.pool]\nservers = [{servers}]\nbalance = \"hash\"\nhash_key = \"body\"\n");
    let msg = relais::config::Config::from_toml(&bad, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("hash_key") && msg.contains("body"), "{msg}");
}

#[tokio::test]
async fn ewma_sends_requests_away_from_a_slow_server() {
    let slow = origin().late("/", Duration::from_millis(150), "slow").start().await;
    let fast = origin().text("/", "fast").start().await;
    let proxy = relais(
        Conf::new()
            .servers("pool", &[slow.addr, fast.addr])
            .with("balance = \"ewma\"")
            .route_all("pool")
            .with("cache = { bypass = true }"),
    )
    .await;
    for _ in 0..12 {
        get(&proxy.url("/")).await; // two random choices: the slow one is tried, its latency learnt
    }
    let url = proxy.url("/");
    let fast_ones = futures_util::future::join_all((0..20).map(|_| get(&url))).await;
    let to_slow = fast_ones.iter().filter(|r| r.text() == "slow").count();
    assert!(to_slow <= 2, "{to_slow} of 20 went to the slow server");
}

#[tokio::test]
async fn a_retryable_status_goes_to_the_next_server_within_the_budget() {
    let failing = origin().route("/", |_| async { text(503, "down", &[]) }).start().await;
    let good = origin().text("/", "good").start().await;
    let pool = |a: &Origin, b: &Origin| {
        Conf::new()
            .servers("pool", &[a.addr, b.addr])
            .with("retry_on = [\"503\"]")
            .route_all("pool")
            .with("cache = { bypass = true }")
    };
    let proxy = relais(&pool(&failing, &good)).await;
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/")).await.text(), "good");
    }
    assert_eq!(good.total_hits(), 10);
    assert!(failing.total_hits() >= 3, "round-robin sent some GETs to the failing server first");
    // Each of those answers was retried on the next server, and counted so.
    let retried =
        format!("relais_upstream_retries_total{{upstream=\"pool\",reason=\"status\"}} {}", failing.total_hits());
    let m = proxy.metrics().await;
    assert!(m.contains(&retried), "{m}");
    assert!(m.contains("relais_upstream_errors_total{upstream=\"pool\",reason=\"connect\"} 0"), "{m}");
    // Not idempotent: answered by whichever server it reached, never sent twice.
    let before = failing.total_hits() + good.total_hits();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(Request::post(proxy.url("/")).body(full("x")).unwrap()).await.status.as_u16());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert_eq!(failing.total_hits() + good.total_hits() - before, 4, "each POST sent once");

    // Both failing: retries add at most 20% of 200 requests (plus the ten the bucket starts with).
    let other = origin().route("/", |_| async { text(503, "down too", &[]) }).start().await;
    let proxy = relais(&pool(&failing, &other)).await;
    let start = failing.total_hits() + other.total_hits();
    for _ in 0..200 {
        assert_eq!(get(&proxy.url("/")).await.status, 503);
    }
    let sent = failing.total_hits() + other.total_hits() - start;
    assert!((200..=252).contains(&sent), "{sent} origin requests for 200 client requests");
}

/// A server failing its health check gets no client request, even though it
/// would answer them; once it passes again it gets its share.
#[tokio::test]
async fn an_active_check_takes_a_server_out_before_clients_reach_it() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let sick = origin()
        .route("/healthz", move |_| {
            let ok = flag.load(std::sync::atomic::Ordering::SeqCst);
            async move { if ok { text(200, "ok", &[]) } else { text(503, "no", &[]) } }
        })
        .text("/", "sick")
        .start()
        .await;
    let good = origin().route("/healthz", |_| async { text(200, "all good", &[]) }).text("/", "good").start().await;
    let proxy = relais(
        Conf::new()
            .servers("pool", &[sick.addr, good.addr])
            .with("health = { path = \"/healthz\", interval = \"100ms\", fails = 1, passes = 2, expect_body = \"o\" }")
            .route_all("pool")
            .with("cache = { bypass = true }"),
    )
    .await;
    until("the sick server's first check", || async { proxy.stats().await.to_string().contains("\"up\":false") }).await;
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/page")).await.text(), "good");
    }
    assert_eq!(sick.hits("/page"), 0, "no client request reached the server that failed its check");
    let stats = proxy.admin("GET", "/stats", "").await.text();
    assert!(stats.contains("\"up\":false"), "{stats}");
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    until("two passing checks", || async { !proxy.stats().await.to_string().contains("\"up\":false") }).await;
    let answers: Vec<String> =
        futures_util::future::join_all((0..10).map(|_| async { get(&proxy.url("/page")).await.text() })).await;
    assert!(answers.iter().any(|a| a == "sick"), "back after two passes: {answers:?}");
}

/// Consecutive 5xx answers eject a server; but never more than half the pool.
#[tokio::test]
async fn outliers_are_ejected_within_the_share_of_the_pool() {
    let broken = origin().route("/", |_| async { text(500, "broken", &[]) }).start().await;
    let good = origin().text("/", "good").start().await;
    let config = |a: &Origin, b: &Origin| {
        Conf::new()
            .servers("pool", &[a.addr, b.addr])
            .with("outlier = { consecutive_5xx = 3, base_ejection = \"30s\" }")
            .route_all("pool")
            .with("cache = { bypass = true }")
    };
    let proxy = relais(&config(&broken, &good)).await;
    for _ in 0..6 {
        get(&proxy.url("/")).await; // the broken server answers three of these, and is ejected
    }
    let hits = broken.total_hits();
    assert_eq!(hits, 3);
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/")).await.text(), "good");
    }
    assert_eq!(broken.total_hits(), hits, "ejected: no more requests");
    let stats = proxy.admin("GET", "/stats", "").await.text();
    assert_eq!(stats.matches("\"state\":\"ejected\"").count(), 1, "{stats}");
    let m = proxy.admin("GET", "/metrics", "").await.text();
    let ejections = format!("relais_upstream_server_ejections_total{{upstream=\"pool\",server=\"{}\"}} 1", broken.addr);
    assert!(m.contains(&ejections), "{m}");

    // Both broken: one may go (half the pool), the other keeps answering.
    let also = origin().route("/", |_| async { text(500, "also broken", &[]) }).start().await;
    let proxy = relais(&config(&broken, &also)).await;
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/")).await.status, 500);
    }
    let stats = proxy.admin("GET", "/stats", "").await.text();
    assert_eq!(stats.matches("\"up\":false").count(), 1, "{stats}");
}

/// Clients that hang up while their request waits on the origin leave no
/// request counted in flight (least_conn and ewma would shun the server).
#[tokio::test]
async fn in_flight_returns_to_zero_after_clients_hang_up() {
    let o = origin().late("/", Duration::from_secs(2), "late").start().await;
    let proxy = relais(
        Conf::new()
            .upstream("pool", o.addr)
            .with("balance = \"least_conn\"")
            .route_all("pool")
            .with("cache = { bypass = true }"),
    )
    .await;
    let in_flight = || async {
        let m = proxy.admin("GET", "/metrics", "").await.text();
        m.lines()
            .find(|l| l.starts_with("relais_upstream_server_in_flight{"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut tcp = tokio::net::TcpStream::connect(proxy.handle.addrs()[0]).await.unwrap();
        tcp.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        clients.push(tcp);
    }
    until("five requests in flight", || async { in_flight().await == Some(5) }).await;
    drop(clients);
    until("nothing in flight", || async { in_flight().await == Some(0) }).await;
}

#[tokio::test]
async fn failover_to_next_server_and_skip_while_down() {
    let a = origin().text("/", "a").start().await;
    let dead = dead_addr();
    let proxy =
        relais(Conf::new().servers("pool", &[dead, a.addr]).with("fail_timeout = \"30s\"").route_all("pool")).await;
    for _ in 0..6 {
        let r = get(&proxy.url("/")).await;
        assert_eq!(r.status, 200, "a GET is retried on the live server");
        assert_eq!(r.text(), "a");
    }
    assert_eq!(a.hits("/"), 6);
}

#[tokio::test]
async fn all_servers_down_is_502() {
    let proxy = relais(Conf::new().servers("pool", &[dead_addr(), dead_addr()]).route_all("pool")).await;
    let r = get(&proxy.url("/")).await;
    assert_eq!(r.status, 502);
    assert!(!r.text().contains("127.0.0.1"), "no internal detail: {}", r.text());
}

#[tokio::test]
async fn slow_origin_is_504() {
    let o = origin().late("/", Duration::from_secs(3), "late").start().await;
    let proxy = relais(Conf::new().upstream("o", o.addr).with("response_timeout = \"300ms\"").route_all("o")).await;
    let r = get(&proxy.url("/")).await;
    assert_eq!(r.status, 504);
}

#[tokio::test]
async fn request_body_limit_is_413() {
    let o = origin().text("/", "ok").start().await;
    let proxy =
        relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nmax_request_body = \"1KiB\"\n")).await;
    let req = Request::post(proxy.url("/")).body(full(vec![0u8; 4096])).unwrap();
    assert_eq!(send(req).await.status, 413);
    let req = Request::post(proxy.url("/")).body(full(vec![0u8; 100])).unwrap();
    assert_eq!(send(req).await.status, 200);
}

#[tokio::test]
async fn malformed_request_gets_400_and_next_connection_works() {
    let o = origin().text("/", "ok").start().await;
    let proxy = relais(proxy_to(o.addr)).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header Line\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&buf));

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"), "missing Host is 400");

    assert_eq!(get(&proxy.url("/")).await.text(), "ok");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let o = origin().text("/", "ok").start().await;
    let proxy = relais(proxy_to(o.addr)).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let big = "x".repeat(100 * 1024);
    let _ = tcp.write_all(format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes()).await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&buf[..n]));
}

#[tokio::test(start_paused = true)]
async fn slowloris_is_cut_off() {
    let o = origin().text("/", "ok").start().await;
    let proxy =
        relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nheader_read_timeout = \"500ms\"\n"))
            .await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tcp.write_all(b"X-Trickle: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await {
            let _ = n;
            closed = true;
            break;
        }
    }
    assert!(closed, "connection still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            text(200, &format!("{:?} host={}", req.version(), req.headers()["host"].to_str().unwrap()), &[])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;
    let r = send_with(&h2_client(), Request::get(proxy.url("/x")).body(full("")).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("HTTP/1.1 host={}", proxy.addr));
}

/// Many streams at once on one HTTP/2 connection, small and large bodies mixed,
/// as misses and then as hits: relais gathers each pass's frames into one write,
/// and none may be lost, reordered or held back (sizes past the gathering limit,
/// and a socket that fills up, take the other paths).
#[tokio::test]
async fn h2c_many_streams_on_one_connection_get_whole_bodies() {
    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }
    let o = origin()
        .route("/size/", |req: Request<hyper::body::Incoming>| async move {
            let n: usize = req.uri().path()["/size/".len()..].parse().unwrap();
            let mut r = http::Response::new(full(body(n)));
            r.headers_mut().insert("cache-control", http::HeaderValue::from_static("max-age=60"));
            r
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;
    let client = h2_client();
    let sizes = [0, 10, 255, 256, 1024, 16_385, 70_000, 300_000, 1_500_000];
    for round in ["miss", "hit"] {
        let requests = (0..45).map(|i| {
            let n = sizes[i % sizes.len()];
            let client = client.clone();
            let url = proxy.url(&format!("/size/{n}"));
            async move { (n, send_with(&client, Request::get(url).body(full("")).unwrap()).await) }
        });
        for (n, r) in futures_util::future::join_all(requests).await {
            assert_eq!(r.status, 200, "{round} {n}");
            assert_eq!(r.body.len(), n, "{round} {n}");
            assert!(r.body == body(n), "{round}: body of {n} bytes differs");
        }
    }
    assert_eq!(o.total_hits(), sizes.len(), "the second round is served from cache");
}

/// A frame with nothing queued after it, the answer to a PING, still goes out:
/// relais holds HTTP/2 writes until the connection is polled again, and must
/// schedule that poll itself.
#[tokio::test]
async fn h2c_ping_is_answered() {
    let o = origin().text("/", "ok").start().await;
    let proxy = relais(proxy_to(o.addr)).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (_send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = conn.ping_pong().unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let pong = tokio::time::timeout(Duration::from_secs(2), ping_pong.ping(h2::Ping::opaque())).await;
        pong.expect("PING answered within 2 s").unwrap();
    }
}

/// A graceful stop with an HTTP/2 request in flight: the request completes, the
/// GOAWAY and the last frames reach the client (relais holds HTTP/2 writes until the
/// connection's next poll), and the stop ends with the connection, long before its
/// 30 s grace period.
#[tokio::test]
async fn h2c_request_in_flight_completes_through_a_graceful_stop() {
    let o = origin()
        .route("/slow", |_| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            text(200, "slow done", &[("cache-control", "no-store")])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;
    let client = h2_client();
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { send_with(&client, Request::get(url).body(full("")).unwrap()).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    let stop = tokio::spawn(proxy.handle.shutdown());
    let r = in_flight.await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "slow done"));
    tokio::time::timeout(Duration::from_secs(5), stop).await.expect("stop ends with the connection").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn reload_adds_a_route_while_a_slow_request_completes() {
    let slow = origin().late("/slow", Duration::from_millis(800), "slow done").start().await;
    let fresh = origin().text("/", "new route").start().await;
    let base = Conf::new().upstream("slow", slow.addr).route("/slow", "slow");
    let proxy = relais(&base).await;
    assert_eq!(get(&proxy.url("/new")).await.status, 404);

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let next = base
        .section(format!("[server]\nlisten = [\"{}\"]", proxy.addr))
        .upstream("fresh", fresh.addr)
        .route("/new", "fresh");
    proxy.handle.reload(relais::Config::from_toml(&next.to_string(), "next.toml").unwrap()).unwrap();
    assert_eq!(get(&proxy.url("/new")).await.text(), "new route");
    let r = in_flight.await.unwrap();
    assert_eq!(r.text(), "slow done");
}

/// A WebSocket origin on its own port that echoes text and binary messages.
async fn ws_echo_origin() -> std::net::SocketAddr {
    use futures_util::SinkExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = ws_echo_origin().await;
    let proxy = relais(Conf::new().upstream("ws", ws_addr).route_all("ws")).await;
    let (mut ws, res) = tokio_tungstenite::connect_async(format!("ws://{}/chat", proxy.addr)).await.unwrap();
    assert_eq!(res.status(), 101);
    use futures_util::SinkExt;
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), format!("hello {i}"));
    }
}

/// A WebSocket tunnel is a connection: it keeps its place under
/// `server.max_connections` until it closes. The place was given back with
/// the 101, so tunnels (two descriptors and an origin connection each) could
/// be opened without bound.
#[tokio::test]
async fn a_tunnel_keeps_its_place_under_max_connections() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = ws_echo_origin().await;
    let proxy = relais(
        Conf::new()
            .upstream("ws", ws_addr)
            .route_all("ws")
            .section("[server]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = 2\n"),
    )
    .await;
    let url = format!("ws://{}/chat", proxy.addr);
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (_second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let third = tokio::time::timeout(Duration::from_millis(500), tokio_tungstenite::connect_async(&url)).await;
    assert!(third.is_err(), "a third tunnel past max_connections = 2");
    first.send(Message::Close(None)).await.unwrap();
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(&url)).await;
    assert!(matches!(third, Ok(Ok(_))), "a place came back when a tunnel closed: {third:?}");

    // A `[[limit_conn]]` zone counts a tunnel as the request in progress it is (it let go at the 101).
    let proxy = relais(
        Conf::new()
            .upstream("ws", ws_addr)
            .route_all("ws")
            .section("[[limit_conn]]\nname = \"one\"\nmax = 1\n[guard]\nlimit_conn = [\"one\"]\n"),
    )
    .await;
    let url = format!("ws://{}/chat", proxy.addr);
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let refused = tokio_tungstenite::connect_async(&url).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
        "a second tunnel from the one client: {refused:?}"
    );
    first.send(Message::Close(None)).await.unwrap();
    drop(first);
    let mut again = Err(String::new());
    for _ in 0..50 {
        again = tokio_tungstenite::connect_async(&url).await.map(|_| ()).map_err(|e| e.to_string());
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_ok(), "the place came back when the tunnel closed: {again:?}");
}

/// A tunnel that carries nothing either way for `tunnel_idle_timeout` is
/// closed; one in use stays open past it.
#[tokio::test(start_paused = true)]
async fn an_idle_websocket_tunnel_is_closed() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = ws_echo_origin().await;
    let proxy = relais(
        Conf::new()
            .upstream("ws", ws_addr)
            .route_all("ws")
            .section("[server]\nlisten = [\"127.0.0.1:0\"]\ntunnel_idle_timeout = \"1s\"\n"),
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/chat", proxy.addr)).await.unwrap();
    // In use for twice the timeout: still open.
    for i in 0..8 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        assert!(ws.next().await.unwrap().unwrap().is_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Then idle: closed within the timeout and a quarter (and some slack).
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(4), ws.next()).await;
    assert!(matches!(ended, Ok(None | Some(Err(_)))), "still open after {:?}: {ended:?}", started.elapsed());
}

/// A server that refuses connections: each attempt is an upstream error, and
/// the request goes on to the next server, counted as a retry for that reason.
#[tokio::test]
async fn connect_failures_are_counted_as_errors_and_retries() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let good = origin().text("/", "good").start().await;
    let conf = Conf::new().servers("pool", &[dead, good.addr]).route_all("pool").with("cache = { bypass = true }");
    let proxy = relais(&conf).await;
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.text(), "good");
    }
    let m = proxy.metrics().await;
    let count = |series: &str| -> u64 {
        let line = m.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{series}: {m}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let errors = count("relais_upstream_errors_total{upstream=\"pool\",reason=\"connect\"}");
    assert!(errors >= 1, "{m}");
    assert_eq!(count("relais_upstream_retries_total{upstream=\"pool\",reason=\"connect\"}"), errors, "{m}");
    assert_eq!(count("relais_upstream_errors_total{upstream=\"pool\",reason=\"timeout\"}"), 0, "{m}");
}
