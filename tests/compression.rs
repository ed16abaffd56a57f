//! Compression on the way out, checked with real decoders against real origins.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;

const COMPRESSION: &str = "[compression]\nenabled = true";

fn page() -> String {
    (0..2000).map(|i| format!("<p>line {i} of a page that compresses well</p>\n")).collect()
}

fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(data).read_to_end(&mut out).map(|_| ()).unwrap(),
        "br" => brotli::Decompressor::new(data, 4096).read_to_end(&mut out).map(|_| ()).unwrap(),
        "zstd" => out = zstd::decode_all(data).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

fn html(body: String, extra: &[(&str, &str)]) -> http::Response<Body> {
    let mut headers =
        vec![("content-type", "text/html; charset=utf-8"), ("cache-control", "max-age=60"), ("etag", "\"v1\"")];
    headers.extend_from_slice(extra);
    text(200, &body, &headers)
}

#[tokio::test]
async fn every_encoding_decodes_to_the_origin_body_from_one_fetch() {
    let o = origin().route("/", |_| async { html(page(), &[]) }).start().await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    for (accept, want) in [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("gzip, deflate, br, zstd", "zstd")] {
        let r = get_with(&proxy.url("/p"), &[("accept-encoding", accept)]).await;
        assert_eq!(r.header("content-encoding"), Some(want), "{accept}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert_eq!(r.header("etag"), Some("W/\"v1\""), "a transformed body has a weak ETag");
        assert!(r.body.len() < page().len() / 5, "{want}: {} bytes", r.body.len());
        assert!(decode(want, &r.body) == page().as_bytes(), "{want} decodes to the origin's body");
    }
    let r = get(&proxy.url("/p")).await;
    assert_eq!((r.header("content-encoding"), r.header("vary")), (None, Some("Accept-Encoding")));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(r.text() == page());
    assert_eq!(o.total_hits(), 1, "one origin fetch served every encoding");
}

#[tokio::test]
async fn what_is_not_compressed() {
    let o = origin()
        .route("/notransform", |_| async { html(page(), &[("cache-control", "no-transform")]) })
        .route("/small", |_| async { text(200, "short", &[("content-type", "text/plain")]) })
        .route("/png", |_| async { text(200, &page(), &[("content-type", "image/png")]) })
        .route("/gz", |_| async {
            let gz = {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(page().as_bytes()).unwrap();
                e.finish().unwrap()
            };
            http::Response::builder()
                .header("content-type", "text/html")
                .header("content-encoding", "gzip")
                .body(full(gz))
                .unwrap()
        })
        .route("/", |_| async { html(page(), &[]) })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    let ae = [("accept-encoding", "br, gzip")];
    for path in ["/notransform", "/small", "/png"] {
        let r = get_with(&proxy.url(path), &ae).await;
        assert_eq!(r.header("content-encoding"), None, "{path}");
    }
    // Already encoded: passed through as the origin sent it, not encoded twice.
    let r = get_with(&proxy.url("/gz"), &ae).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(decode("gzip", &r.body) == page().as_bytes());
    // A range is answered from the identity form, uncompressed.
    let r = get_with(&proxy.url("/page"), &[ae[0], ("range", "bytes=0-9")]).await;
    assert_eq!((r.status.as_u16(), r.header("content-encoding"), r.text().as_str()), (206, None, "<p>line 0 "));
    // HEAD: the headers the GET would have, no body.
    let head = send(Request::head(proxy.url("/page")).header("accept-encoding", "gzip").body(full("")).unwrap()).await;
    assert_eq!(
        (head.header("content-encoding"), head.header("content-length"), head.body.len()),
        (Some("gzip"), None, 0)
    );
}

#[tokio::test]
async fn a_conditional_with_the_weak_etag_is_answered_304() {
    let o = origin().route("/", |_| async { html(page(), &[]) }).start().await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    let r = get_with(&proxy.url("/c"), &[("accept-encoding", "gzip")]).await;
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(etag, "W/\"v1\"");
    let r = get_with(&proxy.url("/c"), &[("accept-encoding", "gzip"), ("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn a_route_can_turn_it_off_and_levels_are_checked() {
    let o = origin().route("/", |_| async { html(page(), &[]) }).start().await;
    let proxy = relais(&proxy_to(o.addr).with("compression = false").section(COMPRESSION)).await;
    let r = get_with(&proxy.url("/"), &[("accept-encoding", "gzip")]).await;
    assert_eq!((r.header("content-encoding"), r.header("vary")), (None, None));

    let bad = "[compression]\nlevels = { br = 12 }\n[upstreams.o]\nservers = [\"127.0.0.1:1\"]\n";
    let msg = relais::config::Config::from_toml(bad, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("compression.levels.br") && msg.contains("0..11"), "{msg}");
    // zstd's ultra levels are for copies made once, not for every streamed response.
    let bad = "[compression]\nlevels = { zstd = 22 }\n[upstreams.o]\nservers = [\"127.0.0.1:1\"]\n";
    let msg = relais::config::Config::from_toml(bad, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("compression.levels.zstd") && msg.contains("ultra"), "{msg}");
    let ok = "[compression]\nstored_levels = { zstd = 22 }\n[upstreams.o]\nservers = [\"127.0.0.1:1\"]\n";
    relais::config::Config::from_toml(ok, "x.toml").unwrap();
    let bad = "[compression]\nencodings = [\"deflate\"]\n[upstreams.o]\nservers = [\"127.0.0.1:1\"]\n";
    let msg = relais::config::Config::from_toml(bad, "x.toml").unwrap_err().to_string();
    assert!(msg.contains("compression.encodings[0]"), "{msg}");
}

/// A route sets its own levels (nginx's `gzip_comp_level` in a `location`):
/// the same body at gzip 1 and 9 comes out at different sizes, and a level
/// out of range is refused, naming the route's key.
#[tokio::test]
async fn a_route_has_levels_of_its_own() {
    let o = origin().route("/", |_| async { html(page(), &[("cache-control", "no-store")]) }).start().await;
    let toml = format!(
        "[compression]\nenabled = true\n[upstreams.o]\nservers = [\"{}\"]\n\
         [[routes]]\npath = \"/fast/\"\nupstream = \"o\"\n[routes.compression]\nlevels = {{ gzip = 1 }}\n\
         [[routes]]\npath = \"/small/\"\nupstream = \"o\"\ncompression = {{ levels = {{ gzip = 9 }} }}\n\
         [[routes]]\npath = \"/\"\nupstream = \"o\"\ncompression = true\n",
        o.addr
    );
    let proxy = relais(&toml).await;
    let mut sizes = Vec::new();
    for path in ["/fast/p", "/small/p", "/p"] {
        let r = get_with(&proxy.url(path), &[("accept-encoding", "gzip")]).await;
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{path}");
        assert!(decode("gzip", &r.body) == page().as_bytes(), "{path}");
        sizes.push(r.body.len());
    }
    assert!(sizes[0] > sizes[1], "gzip 1 is larger than gzip 9: {sizes:?}");
    assert!(sizes[0] > sizes[2] && sizes[2] >= sizes[1], "the default (5) is between: {sizes:?}");

    let route = |levels: &str| {
        format!(
            "[upstreams.o]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"o\"\ncompression = {{ {levels} }}\n"
        )
    };
    for (levels, key, says) in [
        ("levels = { gzip = 10 }", "routes[0].compression.levels.gzip", "1..9"),
        ("levels = { zstd = 20 }", "routes[0].compression.levels.zstd", "ultra"),
        ("levels = { deflate = 1 }", "routes[0].compression.levels", "deflate"),
        ("level = 1", "routes[0].compression", "level"),
    ] {
        let msg = relais::config::Config::from_toml(&route(levels), "x.toml").unwrap_err().to_string();
        assert!(msg.contains(&format!("x.toml: {key}")) && msg.contains(says), "{levels}: {msg}");
    }
    relais::config::Config::from_toml(&route("stored_levels = { zstd = 22 }"), "x.toml").unwrap();
}

/// Server-sent events stay live through the encoder: the first event is
/// readable, decoded, while the origin is still holding the stream open.
#[tokio::test]
async fn an_event_stream_is_flushed_event_by_event() {
    let o = origin()
        .route("/", |_: Request<Incoming>| async {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"data: first\n\n")))).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"data: last\n\n")))).await;
            });
            let body = http_body_util::StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            }));
            http::Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-store")
                .body(body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed())
                .unwrap()
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    let req = Request::get(proxy.url("/events")).header("accept-encoding", "gzip").body(full("")).unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let mut body = res.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let first = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                decoder.write_all(&data).unwrap();
                decoder.flush().unwrap();
                if !decoder.get_ref().is_empty() {
                    return String::from_utf8(decoder.get_ref().clone()).unwrap();
                }
            }
        }
    })
    .await
    .expect("the first event within 2 s, while the origin holds the rest for 3");
    assert_eq!(first, "data: first\n\n");
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or_else(|| panic!("{name} in metrics"))
}

/// A cached page is encoded once per encoding and then served from that copy;
/// a purge leaves no old copy to be served.
#[tokio::test]
async fn cached_bodies_are_encoded_once_and_purged_with_their_entry() {
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let v = version.clone();
    let o = origin()
        .route("/", move |_| {
            let n = v.load(std::sync::atomic::Ordering::SeqCst);
            async move { html(format!("version {n}\n{}", page()), &[]) }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    let made =
        || async { metric(&proxy.admin("GET", "/metrics", "").await.text(), "relais_compression_copies_made_total") };
    let gzip = [("accept-encoding", "gzip")];
    get_with(&proxy.url("/p"), &gzip).await; // the miss: encoded as it streams
    proxy.stored("/p").await;
    // The first hit has the copy made (on the blocking pool) and streams meanwhile.
    let r = get_with(&proxy.url("/p"), &gzip).await;
    assert!(decode("gzip", &r.body).starts_with(b"version 1\n"));
    until("the gzip copy to be made", || async { made().await >= 1 }).await;
    for _ in 0..3 {
        let r = get_with(&proxy.url("/p"), &gzip).await;
        assert!(r.header("cache-status").unwrap().starts_with("relais; hit"));
        assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()), "a stored copy has its length");
        assert!(decode("gzip", &r.body).starts_with(b"version 1\n"));
    }
    assert_eq!(made().await, 1, "three gzip hits, one encoding");
    get_with(&proxy.url("/p"), &[("accept-encoding", "br")]).await;
    until("the br copy to be made", || async { made().await >= 2 }).await;
    assert_eq!(made().await, 2, "a second encoding is a copy of its own");

    version.store(2, std::sync::atomic::Ordering::SeqCst);
    let r = proxy
        .admin(
            "POST",
            "/purge",
            &format!("{{\"url\": \"http://{}/p\"}}", proxy.url("").trim_start_matches("http://").trim_end_matches('/')),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    get_with(&proxy.url("/p"), &gzip).await;
    proxy.stored("/p").await;
    for _ in 0..2 {
        let r = get_with(&proxy.url("/p"), &gzip).await;
        assert!(decode("gzip", &r.body).starts_with(b"version 2\n"), "no copy of the purged entry is served");
        until("the new gzip copy to be made", || async { made().await >= 3 }).await;
    }
    assert_eq!(made().await, 3);
}

/// A reload keeps the encoded copies: the first hit after it is sent from
/// the copy made before (with its length), and no copy is made again.
#[tokio::test]
async fn encoded_copies_survive_a_reload() {
    let o = origin().route("/", |_| async { html(page(), &[]) }).start().await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    let metrics = || async { proxy.admin("GET", "/metrics", "").await.text() };
    let gzip = [("accept-encoding", "gzip")];
    get_with(&proxy.url("/p"), &gzip).await; // the miss, encoded as it streams
    get_with(&proxy.url("/p"), &gzip).await; // the first hit has the copy made
    let mut copied = None;
    for _ in 0..100 {
        let r = get_with(&proxy.url("/p"), &gzip).await;
        if r.header("content-length").is_some() {
            copied = Some(r.body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copied = copied.expect("a hit sent from the stored copy");
    let before = metrics().await;

    proxy.handle.reload(proxy.handle.config().as_ref().clone()).unwrap();
    let r = get_with(&proxy.url("/p"), &gzip).await;
    assert!(r.header("cache-status").unwrap().starts_with("relais; hit"));
    assert_eq!(r.header("content-length"), Some(copied.len().to_string().as_str()), "sent from the copy");
    assert!(r.body == copied);
    let after = metrics().await;
    for name in ["relais_compression_copies_made_total", "relais_compression_copies_bytes"] {
        assert_eq!(metric(&after, name), metric(&before, name), "{name}");
    }
    assert_eq!(metric(&after, "relais_compression_copies_made_total"), 1);
}

fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// What the origin sent compressed reaches a client that does not accept its
/// coding decoded (nginx's `gunzip`), and one that does as it was sent.
#[tokio::test]
async fn an_encoded_body_is_decoded_for_clients_that_refuse_its_coding() {
    let o = origin()
        .route("/", |_| async {
            http::Response::builder()
                .header("content-type", "text/html")
                .header("content-encoding", "gzip")
                .header("cache-control", "max-age=60")
                .header("etag", "\"z\"")
                .body(full(gzipped(page().as_bytes())))
                .unwrap()
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    for accept in [None, Some("br"), Some("gzip;q=0, zstd")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let r = get_with(&proxy.url("/z"), &headers).await;
        assert_eq!(r.header("content-encoding"), None, "{accept:?}");
        assert_eq!((r.header("vary"), r.header("etag")), (Some("Accept-Encoding"), Some("W/\"z\"")));
        assert!(r.text() == page(), "{accept:?}: decoded to the page");
    }
    let r = get_with(&proxy.url("/z"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(decode("gzip", &r.body) == page().as_bytes());
    assert_eq!(o.total_hits(), 1, "one stored copy served both ways");
}

/// A small body that inflates a thousand times is decoded as it streams, in
/// bounded pieces, to its full length.
#[tokio::test]
async fn a_highly_compressed_body_streams_out_in_pieces() {
    const LEN: usize = 20 << 20;
    let bomb = Bytes::from(gzipped(&vec![0u8; LEN]));
    assert!(bomb.len() < LEN / 500);
    let o = origin()
        .route("/", move |_| {
            let bomb = bomb.clone();
            async move {
                http::Response::builder()
                    .header("content-type", "text/plain")
                    .header("content-encoding", "gzip")
                    .header("cache-control", "no-store")
                    .body(full(bomb))
                    .unwrap()
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    let res = client().request(Request::get(proxy.url("/b")).body(full("")).unwrap()).await.unwrap();
    let mut body = res.into_body();
    let (mut total, mut largest) = (0, 0);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data.iter().all(|b| *b == 0));
            total += data.len();
            largest = largest.max(data.len());
        }
    }
    assert_eq!(total, LEN);
    assert!(largest <= 2 << 20, "pieces of at most about 1 MiB, not {largest} bytes at once");
}

/// 405 bytes of brotli are 256 MiB of zeros: relais decoded each such body
/// for a client that does not take brotli in one call, 256 MiB at once per
/// client, whatever the client read. Now the decoder's output is taken in
/// small pieces as the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brotli_bomb_costs_its_window_not_its_length() {
    let mut zeros = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    for _ in 0..256 {
        zeros.write_all(&[0u8; 1 << 20]).unwrap();
    }
    let bomb = Bytes::from(zeros.into_inner());
    assert!(bomb.len() < 4096, "{} bytes", bomb.len());
    let o = origin()
        .route("/", move |_| {
            let bomb = bomb.clone();
            async move {
                http::Response::builder()
                    .header("content-type", "text/plain")
                    .header("content-encoding", "br")
                    .header("cache-control", "no-store")
                    .body(full(bomb))
                    .unwrap()
            }
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = support::process::free_port();
    let toml = support::process::config(dir.path(), port, o.addr, "[compression]\nenabled = true\n");
    let path = dir.path().join("relais.toml");
    support::process::write(&path, &toml);
    let child = support::process::start(&path, port).await;
    let start = support::process::rss_kib(child.pid());
    let peak = support::process::PeakRss::watch(child.pid());
    let readers = (0..2).map(|_| async move {
        let url = format!("http://127.0.0.1:{port}/bomb");
        let res = client().request(Request::get(url).body(full("")).unwrap()).await.unwrap();
        assert_eq!(res.headers().get("content-encoding"), None, "decoded for a client that does not take br");
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(first.iter().all(|b| *b == 0));
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    futures_util::future::join_all(readers).await;
    let grown = peak.peak().saturating_sub(start);
    assert!(grown < 48 * 1024, "two clients of a 256 MiB brotli bomb grew RSS by {grown} KiB");
}

/// An origin that compresses itself and says `Vary: Accept-Encoding`: relais asks
/// it for the identity form, stores one copy and encodes for each client.
#[tokio::test]
async fn the_cache_keeps_one_copy_whatever_the_clients_accept() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let o = origin()
        .route("/", move |req: Request<Incoming>| {
            let ae = req.headers().get("accept-encoding").map(|v| v.to_str().unwrap().to_string());
            log.lock().unwrap().push(ae.clone());
            async move {
                let mut r = html(page(), &[("vary", "Accept-Encoding")]);
                if ae.is_some_and(|a| a.contains("gzip")) {
                    r.headers_mut().insert("content-encoding", "gzip".parse().unwrap());
                    *r.body_mut() = full(gzipped(page().as_bytes()));
                }
                r
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).section(COMPRESSION)).await;
    for accept in ["gzip", "br", "gzip, br, zstd", "identity", "zstd;q=0.5, gzip;q=0.6"] {
        let r = get_with(&proxy.url("/v"), &[("accept-encoding", accept)]).await;
        let body = match r.header("content-encoding") {
            Some(e) => decode(e, &r.body),
            None => r.body.to_vec(),
        };
        assert!(body == page().as_bytes(), "{accept}");
        proxy.stored("/v").await;
    }
    assert_eq!(seen.lock().unwrap().as_slice(), [None], "one origin fetch, asked for identity");
}

/// `data` as one zstd frame with a window of `2^window_log` (its size unknown
/// to the header, as when an origin streams it).
fn zstd_window(data: &[u8], window_log: u32) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log)).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Decoding for a client that does not accept the origin's coding is bounded:
/// a zstd frame whose window passes 8 MiB (RFC 9659's cap) is refused with 502
/// before anything is sent (it cost 64 MiB per client), and every decoder's
/// memory is taken from `buffering.memory`: one that finds no room gets 503,
/// and the room comes back when a decoding response ends.
#[tokio::test]
async fn decoders_are_bounded_by_their_window_and_buffering_memory() {
    let answer = |body: Vec<u8>, coding: &'static str| {
        let body = Bytes::from(body);
        move |_| {
            let body = body.clone();
            async move {
                http::Response::builder()
                    .header("content-type", "text/plain")
                    .header("content-encoding", coding)
                    .header("cache-control", "max-age=60")
                    .body(full(body))
                    .unwrap()
            }
        }
    };
    const LONG: usize = 32 << 20;
    let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 18);
    br.write_all(page().as_bytes()).unwrap();
    let o = origin()
        .route("/wide", answer(zstd_window(page().as_bytes(), 26), "zstd"))
        .route("/long", answer(zstd_window(&vec![0u8; LONG], 21), "zstd"))
        .route("/br", answer(br.into_inner(), "br"))
        .start()
        .await;
    let proxy = relais(
        &proxy_to(o.addr).section(COMPRESSION).section("[buffering]\nmemory = \"4MiB\"\nresponse_memory = \"256KiB\""),
    )
    .await;

    let r = get(&proxy.url("/wide")).await;
    assert_eq!(r.status, 502, "a 64 MiB window is not decoded: {}", r.text());
    assert_eq!(r.header("content-encoding"), None);
    let r = get_with(&proxy.url("/wide"), &[("accept-encoding", "zstd")]).await;
    assert_eq!(
        (r.status.as_u16(), r.header("content-encoding")),
        (200, Some("zstd")),
        "passed on to a client that takes it"
    );

    // A client reading nothing holds its decoder (2 MiB window): 2.5 MiB of the 4.
    let holder = client().request(Request::get(proxy.url("/long")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(holder.status(), 200);
    let r = get(&proxy.url("/long")).await;
    assert_eq!(r.status, 503, "no room for a second decoder: {}", r.text());
    let r = get(&proxy.url("/br")).await;
    assert!(r.status == 200 && r.text() == page(), "a small brotli window fits beside it");
    drop(holder);
    let mut r = get(&proxy.url("/long")).await;
    for _ in 0..20 {
        if r.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = get(&proxy.url("/long")).await;
    }
    assert_eq!(r.status, 200, "the room came back");
    assert!(r.body.len() == LONG && r.body.iter().all(|b| *b == 0));
}
