//! Response buffering: a slow client does not hold the origin.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

/// An origin sending 20 MiB (uncacheable) that records when it has sent the last byte.
async fn big_origin() -> (Origin, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let o = origin()
        .route("/", move |_| {
            let flag = flag.clone();
            async move {
                let chunks = futures_util::stream::iter((0..21).map(move |i| {
                    if i == 20 {
                        flag.store(true, Ordering::SeqCst);
                        return Ok(http_body::Frame::data(Bytes::new()));
                    }
                    Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'x'; MIB])))
                }));
                http::Response::builder()
                    .header("cache-control", "no-store")
                    .body(http_body_util::StreamBody::new(chunks).map_err(|e| Box::new(e) as _).boxed())
                    .unwrap()
            }
        })
        .start()
        .await;
    (o, done)
}

/// Reads the start of the answer, then as a client on a slow link would: 100 KB/s.
async fn slow_client(addr: std::net::SocketAddr, for_how_long: Duration) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 10 * 1024];
    while started.elapsed() < for_how_long {
        let _ = tcp.read(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn origin_done_within(extra: &str, wait: Duration) -> bool {
    let (o, done) = big_origin().await;
    let proxy = relais(proxy_to(o.addr).section(extra)).await;
    let addr = proxy.handle.addrs()[0];
    let client = tokio::spawn(slow_client(addr, wait + Duration::from_millis(500)));
    tokio::time::sleep(wait).await;
    let finished = done.load(Ordering::SeqCst);
    client.abort();
    finished
}

#[tokio::test]
async fn a_slow_client_does_not_hold_the_origin() {
    // Read ahead: 256 KiB in memory, the rest in an unlinked temp file.
    assert!(origin_done_within("", Duration::from_secs(1)).await, "with buffering the origin is done within a second");
}

#[tokio::test]
async fn without_buffering_the_slow_client_holds_the_origin() {
    assert!(!origin_done_within("[buffering]\nresponse = false", Duration::from_secs(2)).await);
    // Memory alone, no temp file: read-ahead stops at its budget, and waits for the client.
    assert!(!origin_done_within("[buffering]\nresponse_file = \"0\"", Duration::from_secs(2)).await);
}

/// Slow readers could fill the disk with read-ahead files (each up to
/// `response_file`, with no total): all of them now share `response_disk`.
#[tokio::test]
async fn read_ahead_files_share_one_disk_budget() {
    // 8 MiB for every temp file: 20 MiB for one slow client cannot all be read ahead.
    assert!(!origin_done_within("[buffering]\nresponse_disk = \"8MiB\"", Duration::from_secs(2)).await);
    // 24 MiB: one answer at a time fits, and its share comes back when its client goes.
    let (o, done) = big_origin().await;
    let proxy = relais(proxy_to(o.addr).section("[buffering]\nresponse_disk = \"24MiB\"")).await;
    let addr = proxy.handle.addrs()[0];
    for round in 0..2 {
        done.store(false, Ordering::SeqCst);
        let client = tokio::spawn(slow_client(addr, Duration::from_secs(3)));
        let started = Instant::now();
        while !done.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(done.load(Ordering::SeqCst), "round {round}: the answer was not read ahead");
        client.abort();
        // The client's connection closes; its file and share go with it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_buffered_body_arrives_whole_and_in_order() {
    let o = origin()
        .route("/", |_| async {
            let chunks = futures_util::stream::iter(
                (0..40u8).map(|i| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![i; 100_000])))),
            );
            http::Response::builder()
                .header("cache-control", "no-store")
                .body(http_body_util::StreamBody::new(chunks).map_err(|e| Box::new(e) as _).boxed())
                .unwrap()
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr).section("[buffering]\nresponse_memory = \"128KiB\"")).await;
    let r = get(&proxy.url("/x")).await;
    assert_eq!(r.body.len(), 4_000_000);
    for (i, chunk) in r.body.chunks(100_000).enumerate() {
        assert!(chunk.iter().all(|b| *b == i as u8), "chunk {i} in order, memory and file parts alike");
    }
}

/// With `request_buffering`, the origin sees a slow upload only once it is
/// whole, framed with its length; without, at once, chunked.
#[tokio::test]
async fn a_buffered_upload_reaches_the_origin_whole() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let o = origin()
        .route("/", move |req: http::Request<hyper::body::Incoming>| {
            let log = log.clone();
            async move {
                let arrived = Instant::now();
                let framing = (
                    req.headers().get("content-length").map(|v| v.to_str().unwrap().to_string()),
                    req.headers().contains_key("transfer-encoding"),
                );
                let body = req.into_body().collect().await.unwrap().to_bytes();
                log.lock().unwrap().push((arrived, framing, body.len()));
                text(200, "ok", &[])
            }
        })
        .start()
        .await;
    for (buffered, memory) in [(true, "64KiB"), (false, "1MiB")] {
        seen.lock().unwrap().clear();
        let route = if buffered { "request_buffering = true" } else { "" };
        let proxy =
            relais(proxy_to(o.addr).with(route).section(format!("[buffering]\nrequest_memory = \"{memory}\""))).await;
        // 400 KB in 8 chunks over about 1.6 s, chunked.
        let mut tcp = tokio::net::TcpStream::connect(proxy.handle.addrs()[0]).await.unwrap();
        tcp.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap();
        let started = Instant::now();
        for _ in 0..8 {
            tcp.write_all(format!("{:x}\r\n", 50_000).as_bytes()).await.unwrap();
            tcp.write_all(&[b'u'; 50_000]).await.unwrap();
            tcp.write_all(b"\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let sent = started.elapsed();
        tcp.write_all(b"0\r\n\r\n").await.unwrap();
        let answer = read_until_quiet(&mut tcp, Duration::from_millis(500)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let (arrived, framing, len) = seen.lock().unwrap()[0].clone();
        assert_eq!(len, 400_000);
        if buffered {
            assert!(arrived.duration_since(started) >= sent, "the origin saw it only once it was whole");
            assert_eq!(framing, (Some("400000".into()), false), "framed by its length (memory and temp file)");
        } else {
            assert!(arrived.duration_since(started) < Duration::from_millis(500), "streamed at once");
            assert_eq!(framing, (None, true));
        }
    }
}

/// `buffering.request_disk` bounds every buffered upload's temp file together:
/// one that would pass it is refused (507 while others hold it, 413 if it
/// could never fit) before anything reaches the origin; the room comes back
/// once the upload holding it has been sent.
#[tokio::test]
async fn buffered_uploads_share_one_disk_budget() {
    let o = origin()
        .route("/", |req: http::Request<hyper::body::Incoming>| async move {
            let len = req.into_body().collect().await.unwrap().to_bytes().len();
            text(200, &len.to_string(), &[])
        })
        .start()
        .await;
    let proxy = relais(
        proxy_to(o.addr)
            .with("request_buffering = true")
            .section("[buffering]\nrequest_memory = \"64KiB\"\nrequest_disk = \"1MiB\""),
    )
    .await;
    let addr = proxy.handle.addrs()[0];
    // A slow upload holds about 836 KiB of its file, and is not done.
    let mut holder = slow_upload(addr, 9).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let declared = |len: usize| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_quiet(&mut tcp, Duration::from_millis(500)).await;
        (tcp, answer)
    };
    let (_, answer) = declared(600_000).await;
    assert!(answer.starts_with("HTTP/1.1 507"), "no room while the other upload holds it: {answer}");
    assert!(answer.contains("no room to hold this upload"), "{answer}");
    let (_, answer) = declared(2 * MIB).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "larger than the whole budget: {answer}");
    let mut streamed = tokio::net::TcpStream::connect(addr).await.unwrap();
    streamed.write_all(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap();
    for _ in 0..4 {
        let _ = streamed.write_all(format!("{:x}\r\n", 100_000).as_bytes()).await;
        let _ = streamed.write_all(&[b'c'; 100_000]).await;
        let _ = streamed.write_all(b"\r\n").await;
    }
    let answer = read_until_quiet(&mut streamed, Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 507"), "a chunked upload finds the budget spent: {answer}");
    assert_eq!(o.total_hits(), 0, "nothing refused reached the origin");

    holder.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_until_quiet(&mut holder, Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("900000"), "{answer}");
    // Its file is gone once sent: the room is back.
    let mut answer = String::new();
    for _ in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 600000\r\n\r\n";
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&vec![b'b'; 600_000]).await.unwrap();
        answer = read_until_quiet(&mut tcp, Duration::from_millis(500)).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("600000"), "{answer}");
    assert_eq!(o.total_hits(), 2);
}

/// A read-ahead whose client has gone stops reading the origin at once. It
/// noticed only when the origin's next piece came, so an origin that stalls
/// mid-body held its connection, the read-ahead task and its temp file's share
/// of `response_disk` for ever.
#[tokio::test]
async fn a_read_ahead_ends_with_its_client_even_when_the_origin_stalls() {
    /// Set when the origin's body is dropped: relais let go of it.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let released = Arc::new(AtomicBool::new(false));
    let flag = released.clone();
    let o = origin()
        .route("/", move |_| {
            let guard = Dropped(flag.clone());
            async move {
                let start = futures_util::stream::iter(
                    (0..3).map(|_| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'x'; MIB])))),
                );
                let stalled = futures_util::stream::unfold(guard, |guard| async move {
                    std::future::pending::<()>().await;
                    Some((Ok(http_body::Frame::data(Bytes::new())), guard))
                });
                http::Response::builder()
                    .header("cache-control", "no-store")
                    .body(
                        http_body_util::StreamBody::new(futures_util::StreamExt::chain(start, stalled))
                            .map_err(|e| Box::new(e) as _)
                            .boxed(),
                    )
                    .unwrap()
            }
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr)).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.handle.addrs()[0]).await.unwrap();
    tcp.write_all(b"GET /stall HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let _ = tcp.read(&mut buf).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!released.load(Ordering::SeqCst), "the origin is still read while the client is there");
    drop(tcp);
    let started = Instant::now();
    while !released.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(released.load(Ordering::SeqCst), "the stalled origin was held after its client left");
}

/// Uploads read whole kept up to `request_memory` each in memory, outside
/// every budget: uploads that sent their first MiB and paused held a MiB each
/// (and `body_min_rate` lets a client that sent 1 MB pause for half an hour).
/// That memory now comes from `buffering.memory`; past it, bodies go to their
/// temp files (within `request_disk`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_uploads_take_their_memory_from_the_shared_budget() {
    let o = origin()
        .route("/", |req: http::Request<hyper::body::Incoming>| async move {
            let len = req.into_body().collect().await.unwrap().to_bytes().len();
            text(200, &len.to_string(), &[])
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = support::process::free_port();
    let extra = "request_buffering = true\n[buffering]\nmemory = \"4MiB\"\n";
    let path = dir.path().join("relais.toml");
    support::process::write(&path, &support::process::config(dir.path(), port, o.addr, extra));
    let child = support::process::start(&path, port).await;
    let start = support::process::rss_kib(child.pid());
    let peak = support::process::PeakRss::watch(child.pid());
    let mut paused = Vec::new();
    for _ in 0..96 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(format!("POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", 2 * MIB).as_bytes())
            .await
            .unwrap();
        tcp.write_all(&vec![b'u'; MIB]).await.unwrap();
        paused.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = peak.peak().saturating_sub(start);
    assert!(grown < 40 * 1024, "96 paused uploads of 1 MiB each grew RSS by {grown} KiB");
    // They still go through whole.
    for tcp in paused.iter_mut().take(4) {
        tcp.write_all(&vec![b'v'; MIB]).await.unwrap();
        let answer = read_until_quiet(tcp, Duration::from_millis(500)).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with(&(2 * MIB).to_string()), "{answer}");
    }
}

/// `buffering.memory` is the process's, not one configuration's: an upload
/// held in memory under the configuration before a reload still counts
/// against the one after it (a reload used to start a fresh budget).
#[tokio::test]
async fn the_memory_budget_outlives_a_reload() {
    let o = origin()
        .route("/", |req: http::Request<hyper::body::Incoming>| async move {
            let len = req.into_body().collect().await.unwrap().to_bytes().len();
            text(200, &len.to_string(), &[])
        })
        .start()
        .await;
    let proxy = relais(&format!(
        "[buffering]\nmemory = \"1MiB\"\nrequest_memory = \"1MiB\"\nrequest_disk = \"64KiB\"\n[upstreams.o]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"o\"\nrequest_buffering = true\n",
        o.addr
    ))
    .await;
    let addr = proxy.handle.addrs()[0];
    // A slow upload holds 900,000 bytes of the 1 MiB, and is not done.
    let mut holder = slow_upload(addr, 9).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another of 600,000 bytes finds the memory left too small, and the rest
    // does not fit request_disk.
    let upload = || async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 600000\r\n\r\n").await.unwrap();
        let _ = tcp.write_all(&vec![b'b'; 600_000]).await;
        read_until_quiet(&mut tcp, Duration::from_millis(500)).await
    };
    let answer = upload().await;
    assert!(answer.starts_with("HTTP/1.1 413"), "no memory left beside the held upload: {answer}");

    proxy.handle.reload(proxy.handle.config().as_ref().clone()).unwrap();
    let answer = upload().await;
    assert!(answer.starts_with("HTTP/1.1 413"), "the held upload still counts after a reload: {answer}");
    assert_eq!(o.total_hits(), 0);

    holder.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_until_quiet(&mut holder, Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("900000"), "{answer}");
    let mut answer = String::new();
    for _ in 0..20 {
        answer = upload().await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("600000"), "its memory is back: {answer}");
}

/// A chunked upload to `addr` that sends `pieces` chunks of 100,000 bytes and
/// then pauses, unfinished, for as long as the stream is kept.
async fn slow_upload(addr: std::net::SocketAddr, pieces: usize) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap();
    for _ in 0..pieces {
        tcp.write_all(format!("{:x}\r\n", 100_000).as_bytes()).await.unwrap();
        tcp.write_all(&[b'a'; 100_000]).await.unwrap();
        tcp.write_all(b"\r\n").await.unwrap();
    }
    tcp
}
