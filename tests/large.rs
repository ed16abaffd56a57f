//! Objects larger than `cache.fill_memory`: streamed to the disk tier as they
//! arrive and served from their file, with the relais process's memory held
//! well under the object's size.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::*;

const MIB: usize = 1 << 20;
const SIZE: usize = 20 * MIB;

/// The object's bytes: a pattern that shows a shifted or missing piece.
fn byte_at(i: usize) -> u8 {
    (i % 251) as u8
}

/// `SIZE` bytes in pieces of 64 KiB, as a slow-ish origin sends them; with
/// `break_at`, the body errors there (the origin went away mid-body).
fn body(break_at: Option<usize>) -> Body {
    let pieces = (0..SIZE / (64 << 10)).map(move |n| {
        let start = n * (64 << 10);
        if break_at.is_some_and(|b| start >= b) {
            return Err::<Frame<Bytes>, _>("origin went away".into());
        }
        Ok(Frame::data((start..start + (64 << 10)).map(byte_at).collect::<Vec<u8>>().into()))
    });
    StreamBody::new(futures_util::stream::iter(pieces)).boxed()
}

fn response(declared: bool, break_at: Option<usize>) -> Response<Body> {
    let mut b = Response::builder().header("cache-control", "max-age=3600");
    if declared {
        b = b.header("content-length", SIZE.to_string());
    }
    b.body(body(break_at)).unwrap()
}

fn config(dir: &std::path::Path, port: u16, origin: std::net::SocketAddr) -> String {
    Conf::new()
        .section(format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\n[admin]\nlisten = \"127.0.0.1:0\""))
        .section(format!(
            "[cache]\ndisk_path = \"{}\"\nfill_memory = \"1MiB\"\nmemory_capacity = \"4MiB\"",
            dir.join("cache").display()
        ))
        .upstream("app", origin)
        .route("/", "app")
        .to_string()
}

fn content_files(cache: &std::path::Path) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum()
    }
    count(&cache.join("content-v2")) + count(&cache.join("tmp"))
}

async fn fetch(port: u16, path: &str, range: Option<&str>) -> Reply {
    let mut req = Request::get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let fut = async {
        let res = client().request(req.body(full("")).unwrap()).await.expect("response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    };
    tokio::time::timeout(Duration::from_secs(60), fut).await.expect("answer within 60 s")
}

fn expected() -> Vec<u8> {
    (0..SIZE).map(byte_at).collect()
}

/// A 20 MiB object behind `fill_memory = 1MiB` and a 4 MiB memory tier, with
/// and without a Content-Length: stored on disk, served from it whole and in
/// a range, the origin asked once. Held whole, the object alone would add
/// 20 MiB to the process (40 with the copy the tier's join makes); streamed,
/// the process grows by what is in flight (a 256 KiB window, four pieces queued
/// for the disk, two read ahead of the client) and the allocator's slack: the
/// bound is 10 MiB, half the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_fill_memory_is_streamed_to_disk_and_served_from_it() {
    let o = origin()
        .route("/declared", |_| async { response(true, None) })
        .route("/chunked", |_| async { response(false, None) })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let path = dir.path().join("relais.toml");
    process::write(&path, &config(dir.path(), port, o.addr));
    let child = process::start(&path, port).await;
    // One small request first, so the baseline counts connections and pools.
    let _ = fetch(port, "/nothing-here", None).await;
    let start = process::rss_kib(child.pid());
    let peak = process::PeakRss::watch(child.pid());
    let whole = expected();
    let cache = dir.path().join("cache");
    for (n, p) in ["/declared", "/chunked"].into_iter().enumerate() {
        let miss = fetch(port, p, None).await;
        assert_eq!(miss.status, 200);
        assert!(miss.body == whole, "{p}: the miss has the origin's bytes");
        until("the object on disk", || async { process::disk_entries(&cache) == n + 1 }).await;
        let hit = fetch(port, p, None).await;
        assert!(hit.header("cache-status").unwrap().contains("hit"), "{:?}", hit.headers);
        assert!(hit.body == whole, "{p}: the hit has the same bytes");
        let part = fetch(port, p, Some("bytes=10000000-10000099")).await;
        assert_eq!(part.status, 206);
        assert_eq!(part.header("content-range"), Some(format!("bytes 10000000-10000099/{SIZE}").as_str()));
        assert_eq!(&part.body[..], &whole[10_000_000..10_000_100]);
        assert_eq!(o.hits(p), 1, "{p}: served from disk");
    }
    let grown = peak.peak().saturating_sub(start);
    assert!(grown < 10 * 1024, "RSS grew by {grown} KiB for a {} MiB object", SIZE / MIB);
}

/// An origin that goes away mid-body: the client's answer breaks off, and
/// nothing of it is left on disk (no index entry, no content, no temp file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_breaks_off_leaves_nothing_on_disk() {
    let o = origin().route("/broken", |_| async { response(true, Some(5 * MIB)) }).start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let path = dir.path().join("relais.toml");
    process::write(&path, &config(dir.path(), port, o.addr));
    let _child = process::start(&path, port).await;
    let req = Request::get(format!("http://127.0.0.1:{port}/broken")).body(full("")).unwrap();
    let res = client().request(req).await.expect("a head");
    assert!(res.into_body().collect().await.is_err(), "a body cut off is an error, never a short clean end");
    let cache = dir.path().join("cache");
    until("the temp file gone", || async { content_files(&cache) == 0 }).await;
    settle().await;
    assert_eq!(process::disk_entries(&cache), 0);
    assert_eq!(content_files(&cache), 0);
    // Not a hit next time either.
    let req = Request::get(format!("http://127.0.0.1:{port}/broken")).body(full("")).unwrap();
    let _ = client().request(req).await.expect("a head").into_body().collect().await;
    assert_eq!(o.hits("/broken"), 2);
}
