//! Partial content: stored parts, their completion, and slices, against
//! origins that answer ranges as real ones do and record what they are asked.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use support::*;

/// 0..len as digits: every byte says where it is (mod 10).
fn digits(len: usize) -> String {
    (0..len).map(|i| char::from(b'0' + (i % 10) as u8)).collect()
}

/// The `Range` header of every request the origin saw ("" when absent).
type Asked = Arc<Mutex<Vec<String>>>;

/// Answers `bytes=a-b` / `bytes=a-` ranges of `body` as a server does: 206
/// with Content-Range, or the whole 200 when `If-Range` does not match its ETag.
fn serve_ranges(req: &Request<Incoming>, body: &str, etag: &str, cc: &str, asked: &Asked) -> http::Response<Body> {
    let range = req.headers().get("range").map(|v| v.to_str().unwrap().to_string());
    asked.lock().unwrap().push(range.clone().unwrap_or_default());
    let if_range_ok = req.headers().get("if-range").is_none_or(|v| v == etag);
    let headers = [("cache-control", cc), ("etag", etag)];
    let Some(spec) = range.filter(|_| if_range_ok) else { return text(200, body, &headers) };
    let (a, b) = spec.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
    let start: usize = a.parse().unwrap();
    if start >= body.len() {
        return text(416, "", &[("content-range", &format!("bytes */{}", body.len()))]);
    }
    let end = if b.is_empty() { body.len() - 1 } else { b.parse::<usize>().unwrap().min(body.len() - 1) };
    let cr = format!("bytes {start}-{end}/{}", body.len());
    text(206, &body[start..=end], &[headers[0], headers[1], ("content-range", &cr)])
}

/// An origin that answers its first request with a part nobody asked for (as
/// some do), then ranges as asked.
fn part_first(body: &'static str, etag: &'static str, first: (usize, usize)) -> (OriginBuilder, Asked) {
    let asked: Asked = Default::default();
    let sent = Arc::new(AtomicBool::new(false));
    let seen = asked.clone();
    let o = origin().route("/", move |req: Request<Incoming>| {
        let (asked, sent) = (seen.clone(), sent.clone());
        async move {
            if !sent.swap(true, Ordering::SeqCst) {
                asked.lock().unwrap().push(req.headers().get("range").map_or("", |v| v.to_str().unwrap()).into());
                let cr = format!("bytes {}-{}/{}", first.0, first.1, body.len());
                let headers = [("cache-control", "max-age=60"), ("etag", etag), ("content-range", cr.as_str())];
                return text(206, &body[first.0..=first.1], &headers);
            }
            serve_ranges(&req, body, etag, "max-age=60", &asked)
        }
    });
    (o, asked)
}

/// Waits until what is stored for `path` is its whole body of `len` bytes.
async fn stored_whole(proxy: &Relais, path: &str, len: u64) {
    until("the whole body to be stored", || async { proxy.cached(path).await.iter().any(|e| e["bytes"] == len) }).await;
}

fn body_of(len: usize) -> &'static str {
    Box::leak(digits(len).into_boxed_str())
}

#[tokio::test]
async fn a_stored_part_serves_what_it_covers_and_is_completed_with_one_range() {
    let body = body_of(100);
    let (o, asked) = part_first(body, "\"v1\"", (0, 39));
    let o = o.start().await;
    let proxy = relais(&proxy_to(o.addr)).await;

    let r = get_with(&proxy.url("/v"), &[("range", "bytes=0-9")]).await;
    assert_eq!((r.status.as_u16(), r.header("content-range"), r.text()), (206, Some("bytes 0-9/100"), digits(10)));
    proxy.stored("/v").await;

    // Within the stored part: a hit.
    let r = get_with(&proxy.url("/v"), &[("range", "bytes=10-19")]).await;
    assert_eq!((r.status.as_u16(), r.header("content-range")), (206, Some("bytes 10-19/100")));
    assert_eq!(r.text(), &body[10..20]);
    assert!(r.header("cache-status").unwrap().starts_with("relais; hit"), "{:?}", r.header("cache-status"));
    assert_eq!(o.total_hits(), 1);

    // The whole: only the missing piece is asked for, If-Range its ETag.
    let r = get(&proxy.url("/v")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, body));
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(asked.lock().unwrap().as_slice(), ["", "bytes=40-99"]);
    // RFC 9211: the stored part was completed, which is no hit.
    let status = r.header("cache-status").unwrap();
    assert!(status.starts_with("relais; fwd=partial") && status.contains("detail=completed"), "{status}");
    stored_whole(&proxy, "/v", 100).await;

    // Now whole in the cache: anything is a hit.
    for (range, want) in [("bytes=90-", &body[90..]), ("bytes=30-49", &body[30..50])] {
        let r = get_with(&proxy.url("/v"), &[("range", range)]).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (206, want), "{range}");
    }
    let r = get(&proxy.url("/v")).await;
    assert_eq!(r.text(), body);
    assert!(r.header("cache-status").unwrap().starts_with("relais; hit"), "{:?}", r.header("cache-status"));
    assert_eq!(o.total_hits(), 2);
}

#[tokio::test]
async fn a_part_at_the_end_is_completed_from_the_start() {
    let body = body_of(50);
    let (o, asked) = part_first(body, "\"v1\"", (20, 49));
    let o = o.start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get_with(&proxy.url("/v"), &[("range", "bytes=-5")]).await;
    proxy.stored("/v").await;
    let r = get_with(&proxy.url("/v"), &[("range", "bytes=-5")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, &body[45..]));
    let r = get(&proxy.url("/v")).await;
    assert_eq!(r.text(), body);
    assert_eq!(asked.lock().unwrap().as_slice(), ["", "bytes=0-19"]);
}

#[tokio::test]
async fn a_changed_object_replaces_the_part_whole() {
    let asked: Asked = Default::default();
    let seen = asked.clone();
    let o = origin()
        .route("/", move |req: Request<Incoming>| {
            let asked = seen.clone();
            async move {
                if asked.lock().unwrap().is_empty() {
                    asked.lock().unwrap().push(String::new());
                    let headers =
                        [("cache-control", "max-age=60"), ("etag", "\"old\""), ("content-range", "bytes 0-3/8")];
                    return text(206, "AAAA", &headers);
                }
                // The object changed: If-Range "old" does not match.
                serve_ranges(&req, "BBBBBBBB", "\"new\"", "max-age=60", &asked)
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get(&proxy.url("/c")).await;
    proxy.stored("/c").await;
    let r = get(&proxy.url("/c")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str(), r.header("etag")), (200, "BBBBBBBB", Some("\"new\"")));
    assert_eq!(asked.lock().unwrap()[1], "bytes=4-7", "completion was tried with the stored ETag");
    stored_whole(&proxy, "/c", 8).await;
    let r = get(&proxy.url("/c")).await;
    assert_eq!(r.text(), "BBBBBBBB", "no stale part mixed in");
    assert_eq!(o.total_hits(), 2);
}

#[tokio::test]
async fn parts_that_cannot_be_combined_are_fetched_whole() {
    // A weak ETag may not combine (RFC 9111 §3.4): the whole is fetched, without a Range.
    let body = body_of(30);
    let (o, asked) = part_first(body, "W/\"w\"", (0, 9));
    let o = o.start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get(&proxy.url("/w")).await;
    proxy.stored("/w").await;
    let r = get(&proxy.url("/w")).await;
    assert_eq!(r.text(), body);
    assert_eq!(asked.lock().unwrap().as_slice(), ["", ""]);
}

#[tokio::test]
async fn a_part_whose_body_is_not_its_range_is_not_stored() {
    let o = origin()
        .route("/", |_| async {
            // Claims ten bytes, carries five.
            text(206, "01234", &[("cache-control", "max-age=60"), ("content-range", "bytes 0-9/10")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for _ in 0..2 {
        let r = get_with(&proxy.url("/bad"), &[("range", "bytes=0-4")]).await;
        assert_eq!(r.status, 206);
        settle().await;
    }
    assert_eq!(o.total_hits(), 2);
}

/// An origin serving ranges of `body` (ETag `"s1"`), recording what it is asked.
async fn ranged_origin(body: &'static str) -> (Origin, Asked) {
    let asked: Asked = Default::default();
    let seen = asked.clone();
    let o = origin()
        .route("/", move |req: Request<Incoming>| {
            let asked = seen.clone();
            async move { serve_ranges(&req, body, "\"s1\"", "max-age=60", &asked) }
        })
        .start()
        .await;
    (o, asked)
}

const SLICED: &str = "cache = { slice = \"1KiB\" }";

#[tokio::test]
async fn a_sliced_file_is_fetched_and_stored_slice_by_slice() {
    let body = body_of(5000);
    let (o, asked) = ranged_origin(body).await;
    let proxy = relais(&proxy_to(o.addr).with(SLICED)).await;
    let host = [("host", "files.test")];

    // A range costs the origin the one slice that holds it.
    let r = get_with(&proxy.url("/f"), &[host[0], ("range", "bytes=1500-1600")]).await;
    assert_eq!((r.status.as_u16(), r.header("content-range")), (206, Some("bytes 1500-1600/5000")));
    assert_eq!(r.text(), &body[1500..=1600]);
    assert_eq!(asked.lock().unwrap().as_slice(), ["bytes=1024-2047"]);
    proxy.stored("http://files.test/f").await;

    // The whole file: the other four slices, the cached one reused.
    let r = get_with(&proxy.url("/f"), &host).await;
    assert_eq!((r.status.as_u16(), r.header("content-length")), (200, Some("5000")));
    assert!(r.text() == body, "assembled body differs");
    assert_eq!(
        asked.lock().unwrap().as_slice(),
        ["bytes=1024-2047", "bytes=0-1023", "bytes=2048-3071", "bytes=3072-4095", "bytes=4096-5119"]
    );
    proxy.stored_n("http://files.test/f", 5).await;

    // Everything from the cache now, whole or in ranges.
    let r = get_with(&proxy.url("/f"), &host).await;
    assert!(r.text() == body);
    assert!(r.header("cache-status").unwrap().starts_with("relais; hit"), "{:?}", r.header("cache-status"));
    for (range, want) in [("bytes=-10", &body[4990..]), ("bytes=1000-3100", &body[1000..=3100])] {
        let r = get_with(&proxy.url("/f"), &[host[0], ("range", range)]).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (206, want), "{range}");
    }
    for past in ["bytes=6000-", "bytes=18446744073709551615-"] {
        let r = get_with(&proxy.url("/f"), &[host[0], ("range", past)]).await;
        assert_eq!((r.status.as_u16(), r.header("content-range")), (416, Some("bytes */5000")), "{past}");
    }
    let head = send(Request::head(proxy.url("/f")).header("host", "files.test").body(full("")).unwrap()).await;
    assert_eq!((head.header("content-length"), head.body.len()), (Some("5000"), 0));
    // Each 416 cost one request for the slice past the end; nothing else went upstream.
    assert_eq!(o.total_hits(), 7);

    // Purging the URL purges every slice.
    let r = proxy.admin("POST", "/purge", r#"{"url": "http://files.test/f"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"purged\":5"), "{}", r.text());
    get_with(&proxy.url("/f"), &[host[0], ("range", "bytes=0-9")]).await;
    assert_eq!(o.total_hits(), 8);
}

#[tokio::test]
async fn a_slice_of_another_version_is_never_spliced_in() {
    let asked: Asked = Default::default();
    let seen = asked.clone();
    let o = origin()
        .route("/", move |req: Request<Incoming>| {
            let asked = seen.clone();
            async move {
                // The file changes after its first slice was sent.
                let etag = if asked.lock().unwrap().is_empty() { "\"old\"" } else { "\"new\"" };
                serve_ranges(&req, body_of(3000), etag, "max-age=60", &asked)
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).with(SLICED)).await;
    let res = client().request(Request::get(proxy.url("/f")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    use http_body_util::BodyExt;
    let body = tokio::time::timeout(Duration::from_secs(10), res.into_body().collect()).await.unwrap();
    assert!(body.is_err(), "the response must end in an error, not splice two versions");
}

#[tokio::test]
async fn an_origin_that_ignores_ranges_is_shown_as_it_is_and_not_stored() {
    let o =
        origin().route("/", |_| async { text(200, &digits(3000), &[("cache-control", "max-age=60")]) }).start().await;
    let proxy = relais(&proxy_to(o.addr).with(SLICED)).await;
    for _ in 0..2 {
        let r = get_with(&proxy.url("/f"), &[("range", "bytes=10-19")]).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "0123456789"));
        settle().await;
    }
    assert_eq!(o.total_hits(), 2, "a 200 is not stored as a slice");
}

#[tokio::test]
async fn a_range_deep_in_a_huge_sliced_file_costs_one_slice() {
    const TOTAL: u64 = 4 << 30;
    let byte = |i: u64| (i % 251) as u8;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = sent.clone();
    let o = origin()
        .route("/", move |req: Request<Incoming>| {
            let sent = counted.clone();
            async move {
                let spec = req.headers()["range"].to_str().unwrap().strip_prefix("bytes=").unwrap().to_string();
                let (a, b) = spec.split_once('-').unwrap();
                let (start, end): (u64, u64) = (a.parse().unwrap(), b.parse::<u64>().unwrap().min(TOTAL - 1));
                let data: Vec<u8> = (start..=end).map(byte).collect();
                sent.fetch_add(data.len() as u64, Ordering::SeqCst);
                http::Response::builder()
                    .status(206)
                    .header("content-range", format!("bytes {start}-{end}/{TOTAL}"))
                    .header("cache-control", "max-age=60")
                    .header("etag", "\"big\"")
                    .body(full(data))
                    .unwrap()
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).with("cache = { slice = \"1MiB\" }")).await;
    let at = TOTAL - 3_000_000;
    let r = get_with(&proxy.url("/video"), &[("range", &format!("bytes={at}-{}", at + 9))]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range").unwrap(), format!("bytes {at}-{}/{TOTAL}", at + 9));
    assert_eq!(r.body.as_ref(), (at..at + 10).map(byte).collect::<Vec<u8>>());
    assert_eq!(sent.load(Ordering::SeqCst), 1 << 20, "one 1MiB slice of a 4GiB file");
}

/// An origin's 206 whose body is shorter than its Content-Range: a client's
/// range was cut from it as if it held the bytes it claims, and the client got
/// nothing but a closed connection. It is passed on as it came, and not stored.
#[tokio::test]
async fn a_part_whose_body_is_not_its_range_is_passed_on_as_it_came() {
    let o = origin()
        .route("/lying", |_| async {
            text(206, "56789", &[("cache-control", "max-age=60"), ("content-range", "bytes 4-9/10")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for _ in 0..2 {
        let r = get_with(&proxy.url("/lying"), &[("range", "bytes=-5")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.header("content-range"), Some("bytes 4-9/10"));
        assert_eq!(r.text(), "56789");
        settle().await;
    }
    assert_eq!(o.hits("/lying"), 2, "a part that is not its range is not stored");
}

/// The same lie without a Content-Length (a chunked 206, shorter or longer
/// than its Content-Range): no client range is cut from it as if it held the
/// bytes it claims, so no client gets a response that breaks off. It is
/// passed on as it came, and not stored.
#[tokio::test]
async fn a_chunked_part_whose_body_is_not_its_range_is_passed_on_as_it_came() {
    use http_body_util::{BodyExt, StreamBody};
    fn chunked(body: &'static str, range: &str) -> http::Response<Body> {
        let frames = futures_util::stream::iter([Ok(hyper::body::Frame::data(bytes::Bytes::from(body)))]);
        http::Response::builder()
            .status(206)
            .header("cache-control", "max-age=60")
            .header("content-range", range)
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap()
    }
    let o = origin()
        .route("/short", |_| async { chunked("01234", "bytes 0-9/10") })
        .route("/long", |_| async { chunked("0123456789", "bytes 0-4/10") })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for (path, want, range) in [("/short", "01234", "bytes 0-9/10"), ("/long", "0123456789", "bytes 0-4/10")] {
        for _ in 0..2 {
            let r = get_with(&proxy.url(path), &[("range", "bytes=6-8")]).await;
            assert_eq!((r.status.as_u16(), r.header("content-range")), (206, Some(range)), "{path}");
            assert_eq!(r.text(), want, "{path}");
            settle().await;
        }
        assert_eq!(o.hits(path), 2, "{path}: a part that is not its range is not stored");
    }
}
