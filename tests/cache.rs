//! The two-tier cache against real origins that count their hits.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use support::*;

/// Restarted proxies listen on new ports: name the site so the key is the same.
const HOST: &[(&str, &str)] = &[("host", "site.test")];

#[tokio::test]
async fn second_request_is_a_hit_and_age_grows() {
    let o = origin()
        .route("/page", |_| async { text(200, "cached body", &[("cache-control", "max-age=60")]) })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;

    let first = get(&proxy.url("/page")).await;
    assert_eq!(first.text(), "cached body");
    assert!(first.header("cache-status").unwrap().contains("fwd=uri-miss"), "{:?}", first.header("cache-status"));
    assert!(first.header("cache-status").unwrap().contains("stored"));
    proxy.stored("/page").await;

    let second = get(&proxy.url("/page")).await;
    assert_eq!(second.text(), "cached body");
    assert!(second.header("cache-status").unwrap().starts_with("relais; hit"), "{:?}", second.header("cache-status"));
    assert_eq!(o.hits("/page"), 1);
    assert!(second.header("date").is_some_and(|d| d.ends_with("GMT")));

    until("Age to grow", || async {
        let third = get(&proxy.url("/page")).await;
        third.header("age").unwrap().parse::<u64>().unwrap() >= 1
    })
    .await;
    assert_eq!(o.hits("/page"), 1);
}

#[tokio::test]
async fn uncacheable_responses_are_not_stored() {
    let o = origin()
        .route("/nostore", |_| async { text(200, "x", &[("cache-control", "no-store")]) })
        .route("/private", |_| async { text(200, "x", &[("cache-control", "private, max-age=60")]) })
        .route("/cookie", |_| async { text(200, "x", &[("cache-control", "max-age=60"), ("set-cookie", "s=1")]) })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for path in ["/nostore", "/private", "/cookie"] {
        let r = get(&proxy.url(path)).await;
        assert!(r.header("cache-status").unwrap().contains("detail="), "{path}: {:?}", r.header("cache-status"));
        settle().await;
        get(&proxy.url(path)).await;
        assert_eq!(o.hits(path), 2, "{path} went to the origin twice");
    }
}

#[tokio::test]
async fn set_cookie_is_never_served_to_another_client() {
    let o = origin()
        .route("/", |_| async {
            text(200, "x", &[("cache-control", "public, max-age=60"), ("set-cookie", "session=alice")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).with("cache = { store_set_cookie = true }")).await;
    let first = get(&proxy.url("/")).await;
    assert_eq!(first.header("set-cookie"), Some("session=alice"), "the client that caused the fetch gets its cookie");
    proxy.stored("/").await;
    let second = get(&proxy.url("/")).await;
    assert!(second.header("cache-status").unwrap().contains("hit"));
    assert_eq!(second.header("set-cookie"), None);
    assert_eq!(o.hits("/"), 1);
}

#[tokio::test]
async fn vary_keeps_variants_apart_and_normalises_values() {
    let o = origin()
        .route("/", |req: Request<Incoming>| async move {
            let lang = req.headers().get("accept-language").map_or("none", |v| v.to_str().unwrap()).to_string();
            text(200, &lang, &[("cache-control", "max-age=60"), ("vary", "Accept-Language")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    assert_eq!(get_with(&proxy.url("/"), &[("accept-language", "en-US, fr")]).await.text(), "en-US, fr");
    proxy.stored("/").await;
    let de = get_with(&proxy.url("/"), &[("accept-language", "de")]).await;
    assert_eq!(de.text(), "de");
    assert!(de.header("cache-status").unwrap().contains("fwd=vary-miss"), "{:?}", de.header("cache-status"));
    proxy.stored_n("/", 2).await;
    assert_eq!(get_with(&proxy.url("/"), &[("accept-language", "en-us,fr")]).await.text(), "en-US, fr");
    assert_eq!(get_with(&proxy.url("/"), &[("accept-language", "de")]).await.text(), "de");
    assert_eq!(o.hits("/"), 2);
}

#[tokio::test]
async fn stale_entry_is_revalidated_and_304_merges_new_headers() {
    let o = origin()
        .numbered("/doc", |i, req: Request<Incoming>| {
            async move {
                if i == 0 {
                    // Stale as soon as stored: its Age is all of its max-age.
                    return text(
                        200,
                        "the document",
                        &[("cache-control", "max-age=1"), ("age", "1"), ("etag", "\"v1\"")],
                    );
                }
                assert_eq!(req.headers()["if-none-match"], "\"v1\"");
                let mut r = text(304, "", &[("cache-control", "max-age=60"), ("etag", "\"v1\""), ("x-new", "fresh")]);
                *r.body_mut() = full("");
                r
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    assert_eq!(get(&proxy.url("/doc")).await.text(), "the document");
    proxy.stored("/doc").await;
    let r = get(&proxy.url("/doc")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "the document");
    assert_eq!(r.header("x-new"), Some("fresh"), "header new in the 304 is merged");
    assert!(r.header("cache-status").unwrap().contains("fwd-status=304"), "{:?}", r.header("cache-status"));
    until("the 304 to refresh the entry", || async { proxy.ttl("/doc").await > Some(1) }).await;
    let again = get(&proxy.url("/doc")).await;
    assert!(again.header("cache-status").unwrap().contains("hit"));
    assert_eq!(again.header("x-new"), Some("fresh"));
    assert_eq!(o.hits("/doc"), 2);
}

/// A HEAD the cache cannot answer goes upstream as HEAD (the body is not
/// fetched for a client that will not read it) and stores nothing; a HEAD is
/// answered from a stored GET, never a GET from a HEAD.
#[tokio::test]
async fn a_head_miss_is_forwarded_as_head_and_head_is_served_from_get() {
    let methods: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = methods.clone();
    let o = origin()
        .route("/", move |req: Request<Incoming>| {
            seen.lock().unwrap().push(req.method().to_string());
            async { text(200, "body", &[("cache-control", "max-age=60")]) }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let head = send(Request::head(proxy.url("/")).body(full("")).unwrap()).await;
    assert_eq!((head.status.as_u16(), head.header("content-length")), (200, Some("4")));
    assert!(head.body.is_empty());
    assert!(head.header("cache-status").unwrap().contains("fwd=uri-miss"), "{:?}", head.header("cache-status"));
    settle().await;
    assert!(proxy.cached("/").await.is_empty(), "a HEAD's answer is not stored");
    let r = get(&proxy.url("/")).await;
    assert_eq!(r.text(), "body");
    proxy.stored("/").await;
    let head = send(Request::head(proxy.url("/")).body(full("")).unwrap()).await;
    assert!(head.body.is_empty() && head.header("cache-status").unwrap().contains("hit"));
    assert_eq!(methods.lock().unwrap().as_slice(), ["HEAD", "GET"]);
}

#[tokio::test]
async fn client_conditionals_get_304_from_the_cache() {
    let o = origin()
        .route("/", |_| async {
            text(
                200,
                "body",
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"abc\""),
                    ("last-modified", "Mon, 02 Nov 2026 10:00:00 GMT"),
                ],
            )
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let first = get_with(&proxy.url("/"), &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(first.status, 304, "answered on the miss too, while the body is stored");
    proxy.stored("/").await;
    let r = get_with(&proxy.url("/"), &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = get_with(&proxy.url("/"), &[("if-modified-since", "Mon, 02 Nov 2026 10:00:00 GMT")]).await;
    assert_eq!(r.status, 304);
    let r = get_with(&proxy.url("/"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body");
    assert_eq!(o.hits("/"), 1);
}

#[tokio::test]
async fn unsafe_methods_invalidate_url_and_location() {
    let o = origin()
        .route("/items", |req: Request<Incoming>| async move {
            if req.method() == "POST" {
                return text(201, "created", &[("location", "/items/7")]);
            }
            text(200, "list", &[("cache-control", "max-age=60")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for path in ["/items", "/items/7"] {
        get(&proxy.url(path)).await;
        proxy.stored(path).await;
    }
    for path in ["/items", "/items/7"] {
        assert!(get(&proxy.url(path)).await.header("cache-status").unwrap().contains("hit"));
    }
    let post = send(Request::post(proxy.url("/items")).body(full("new")).unwrap()).await;
    assert_eq!(post.status, 201);
    for path in ["/items", "/items/7"] {
        let r = get(&proxy.url(path)).await;
        assert!(
            r.header("cache-status").unwrap().contains("miss"),
            "{path} invalidated: {:?}",
            r.header("cache-status")
        );
    }
    assert_eq!(o.hits("/items/7"), 2);
}

#[tokio::test]
async fn an_invalidation_during_a_fetch_keeps_the_fetched_response_out() {
    let o = origin()
        .route("/doc", |req: Request<Incoming>| async move {
            if req.method() == "POST" {
                return text(200, "saved", &[]);
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            text(200, "before the post", &[("cache-control", "max-age=60")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let url = proxy.url("/doc");
    let fetching = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    until("the fetch to reach the origin", || async { o.hits("/doc") == 1 }).await;
    assert_eq!(send(Request::post(url.clone()).body(full("new")).unwrap()).await.status, 200);
    // The client that asked first still gets its answer; the cache does not keep it.
    assert_eq!(fetching.await.unwrap().text(), "before the post");
    settle().await;
    let r = get(&url).await;
    assert!(r.header("cache-status").unwrap().contains("miss"), "{:?}", r.header("cache-status"));
}

#[tokio::test]
async fn request_directives() {
    let o = origin().route("/", |_| async { text(200, "x", &[("cache-control", "max-age=60")]) }).start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let only = get_with(&proxy.url("/"), &[("cache-control", "only-if-cached")]).await;
    assert_eq!(only.status, 504, "only-if-cached with nothing stored");
    get(&proxy.url("/")).await;
    proxy.stored("/").await;
    assert_eq!(get_with(&proxy.url("/"), &[("cache-control", "only-if-cached")]).await.status, 200);
    let r = get_with(&proxy.url("/"), &[("cache-control", "no-cache")]).await;
    assert_eq!(o.hits("/"), 2, "no-cache goes to the origin");
    // RFC 9211: a fresh response the request would not take is fwd=request, not fwd=stale.
    let status = r.header("cache-status").unwrap();
    assert!(status.contains("fwd=request") && !status.contains("fwd=stale"), "{status}");
    let r = get_with(&proxy.url("/"), &[("cache-control", "max-age=0")]).await;
    assert!(r.header("cache-status").unwrap().contains("fwd=request"), "{:?}", r.header("cache-status"));
    let r = get_with(&proxy.url("/"), &[("cache-control", "no-store")]).await;
    assert!(r.header("cache-status").unwrap().contains("bypass"));
    assert_eq!(o.hits("/"), 4);
}

/// `If-Match` and `If-Unmodified-Since` are the origin's to judge, with or
/// without a Range: a cached copy must not answer them.
#[tokio::test]
async fn a_range_with_a_precondition_goes_to_the_origin() {
    let o = origin()
        .route("/", |req: Request<Incoming>| async move {
            if req.headers().get("if-match").is_some_and(|v| v != "\"v1\"") {
                return text(412, "", &[]);
            }
            text(200, "0123456789", &[("cache-control", "max-age=60"), ("etag", "\"v1\"")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get(&proxy.url("/")).await;
    proxy.stored("/").await;
    let r = get_with(&proxy.url("/"), &[("range", "bytes=0-3")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "0123"), "a plain range is cut from the cache");
    assert_eq!(o.hits("/"), 1);
    let r = get_with(&proxy.url("/"), &[("range", "bytes=0-3"), ("if-match", "\"v0\"")]).await;
    assert_eq!(r.status, 412, "{:?}", r.header("cache-status"));
    assert_eq!(o.hits("/"), 2);
}

/// The admin API's `/cache` view only looks: an entry on disk stays on disk.
#[tokio::test]
async fn looking_at_the_cache_does_not_change_it() {
    let o = origin().route("/", |_| async { text(200, "kept", &[("cache-control", "max-age=600")]) }).start().await;
    let dir = tempfile::tempdir().unwrap();
    let with_cache = proxy_to(o.addr).disk(dir.path());
    let proxy = relais(&with_cache).await;
    get_with(&proxy.url("/"), HOST).await;
    proxy.on_disk(1).await;
    proxy.handle.shutdown().await;

    let proxy = relais(&with_cache).await;
    proxy.stored("http://site.test/").await; // the purge index is rebuilt from disk
    let look = || proxy.admin("GET", "/cache?url=http%3A%2F%2Fsite.test%2F", "");
    for _ in 0..2 {
        let view = look().await.text();
        assert!(view.contains("\"tier\":\"disk\"") && view.contains("\"bytes\":4"), "{view}");
    }
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert!(m.contains("relais_cache_memory_entries 0"), "looking promoted the entry into memory");
}

#[tokio::test]
async fn route_rules_default_and_bypass() {
    let o = origin()
        .text("/plain", "no freshness info")
        .route("/never", |_| async { text(200, "x", &[("cache-control", "max-age=60")]) })
        .start()
        .await;
    let toml = proxy_to(o.addr)
        .with("cache = { default_ttl = \"1m\" }")
        .route("/never", "o")
        .with("cache = { bypass = true }");
    let proxy = relais(&toml).await;
    get(&proxy.url("/plain")).await;
    get(&proxy.url("/never")).await;
    proxy.stored("/plain").await;
    assert!(get(&proxy.url("/plain")).await.header("cache-status").unwrap().contains("hit"));
    let r = get(&proxy.url("/never")).await;
    assert!(r.header("cache-status").unwrap().contains("detail=route"), "{:?}", r.header("cache-status"));
    assert_eq!(o.hits("/plain"), 1);
    assert_eq!(o.hits("/never"), 2);
}

#[tokio::test]
async fn restart_is_a_disk_hit() {
    let o =
        origin().route("/", |_| async { text(200, "persisted", &[("cache-control", "max-age=600")]) }).start().await;
    let dir = tempfile::tempdir().unwrap();
    let with_cache = proxy_to(o.addr).disk(dir.path());
    let proxy = relais(&with_cache).await;
    get_with(&proxy.url("/"), HOST).await;
    proxy.on_disk(1).await;
    proxy.handle.shutdown().await;

    let proxy = relais(&with_cache).await;
    let r = get_with(&proxy.url("/"), HOST).await;
    assert_eq!(r.text(), "persisted");
    assert!(r.header("cache-status").unwrap().contains("hit"), "{:?}", r.header("cache-status"));
    assert_eq!(o.hits("/"), 1);
    drop(dir);
}

#[tokio::test]
async fn corrupt_disk_entry_is_a_miss_and_removed() {
    // Large enough for a content file of its own (small bodies live in the index line).
    let good = "good body ".repeat(300);
    let body = good.clone();
    let o = origin()
        .route("/", move |_| {
            let body = body.clone();
            async move { text(200, &body, &[("cache-control", "max-age=600")]) }
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let with_cache = proxy_to(o.addr).disk(dir.path());
    let proxy = relais(&with_cache).await;
    get_with(&proxy.url("/"), HOST).await;
    proxy.on_disk(1).await;
    proxy.handle.shutdown().await;

    // Overwrite every content file with bytes of the same length.
    let mut corrupted = 0;
    for entry in walk(&dir.path().join("content-v2")) {
        let len = std::fs::metadata(&entry).unwrap().len() as usize;
        std::fs::write(&entry, vec![b'X'; len]).unwrap();
        corrupted += 1;
    }
    assert!(corrupted > 0);

    let proxy = relais(&with_cache).await;
    let r = get_with(&proxy.url("/"), HOST).await;
    assert!(r.text() == good);
    assert!(r.header("cache-status").unwrap().contains("miss"), "{:?}", r.header("cache-status"));
    assert_eq!(o.hits("/"), 2);
    proxy.stored("http://site.test/").await;
    assert!(get_with(&proxy.url("/"), HOST).await.header("cache-status").unwrap().contains("hit"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}

#[tokio::test]
async fn memory_and_disk_stay_under_their_caps() {
    let o = origin()
        .route("/obj/", |req: Request<Incoming>| async move {
            // Distinct bodies: the disk tier stores identical content once.
            let fill = req.uri().path().bytes().fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
            let body = String::from_utf8(vec![b'a' + fill % 26; 100 * 1024]).unwrap() + req.uri().path();
            text(200, &body, &[("cache-control", "max-age=600")])
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = proxy_to(o.addr).disk(dir.path()).with("memory_capacity = \"1MiB\"\ndisk_capacity = \"2MiB\"");
    let proxy = relais(&toml).await;
    for i in 0..40 {
        assert!(get(&proxy.url(&format!("/obj/{i}"))).await.body.len() > 100 * 1024);
    }
    proxy.stored("/obj/39").await;
    until("both tiers to evict", || async {
        let evictions = &proxy.stats().await["evictions"];
        evictions["memory"].as_u64() >= Some(20) && evictions["disk"].as_u64() >= Some(10)
    })
    .await;
    settle().await; // the last writes, and the deletions of what they evicted
    let memory = proxy.handle.cache().memory_bytes().await;
    assert!(memory <= 1 << 20, "memory tier holds {memory} bytes, over its 1MiB cap");
    assert!(memory >= 512 << 10, "memory tier holds something ({memory})");
    // A file evicted between the listing and its size takes no room.
    let used: u64 =
        walk(&dir.path().join("content-v2")).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    assert!(used <= 2 << 20, "disk content {used} bytes over the 2MiB cap");
    assert!(used >= 1 << 20, "disk holds something ({used})");
    // The newest objects are still served from the cache.
    assert!(get(&proxy.url("/obj/39")).await.header("cache-status").unwrap().contains("hit"));
    // Evictions are counted, and the purge index holds the memory tier's keys (and tagged ones).
    let stats: serde_json::Value = serde_json::from_slice(&proxy.admin("GET", "/stats", "").await.body).unwrap();
    let count = |v: &serde_json::Value| v.as_u64().unwrap();
    let (memory, disk) = (count(&stats["cache"]["memory"]["entries"]), count(&stats["cache"]["disk"]["entries"]));
    let indexed = count(&stats["cache"]["indexed_keys"]);
    assert!(indexed >= memory && indexed <= memory + disk, "{indexed} keys indexed, {memory} + {disk} held");
    assert!(count(&stats["evictions"]["memory"]) >= 20 && count(&stats["evictions"]["disk"]) >= 10, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_behind_keeps_entries_in_memory_and_never_serves_an_older_copy() {
    const N: usize = 12;
    const LEN: usize = 512 << 10;
    // Each answer is a new version; a round of N requests is answered all at once,
    // so that N bodies reach the disk together.
    let versions = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let gate = Arc::new(std::sync::Mutex::new(Arc::new(tokio::sync::Barrier::new(1))));
    let (v, g) = (versions.clone(), gate.clone());
    let o = origin()
        .route("/v/", move |req: Request<Incoming>| {
            let path = req.uri().path().to_string();
            let n = {
                let mut v = v.lock().unwrap();
                *v.entry(path.clone()).and_modify(|n| *n += 1).or_insert(1)
            };
            let barrier = g.lock().unwrap().clone();
            async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), barrier.wait()).await;
                let unit = format!("{path} version {n};");
                text(200, &unit.repeat(LEN / unit.len() + 1)[..LEN], &[("cache-control", "max-age=600")])
            }
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = proxy_to(o.addr).disk(dir.path()).with("disk_write_backlog = \"1MiB\"");
    // Round 1 one at a time (all reach the disk); round 2 replaces every entry at once.
    let proxy = relais(&toml).await;
    for i in 0..N {
        assert!(get_with(&proxy.url(&format!("/v/{i}")), HOST).await.text().contains("version 1;"));
        proxy.on_disk(i as u64 + 1).await;
    }
    *gate.lock().unwrap() = Arc::new(tokio::sync::Barrier::new(N));
    let round: Vec<_> = (0..N)
        .map(|i| {
            let url = proxy.url(&format!("/v/{i}"));
            tokio::spawn(async move { get_with(&url, &[HOST[0], ("cache-control", "no-cache")]).await })
        })
        .collect();
    for r in round {
        assert!(r.await.unwrap().text().contains("version 2;"));
    }
    // What the backlog had no room for is written from memory as it frees up.
    until("the disk to catch up", || async { proxy.stats().await["cache"]["disk_writes_waiting"].as_u64() == Some(0) })
        .await;
    let stats: serde_json::Value = serde_json::from_slice(&proxy.admin("GET", "/stats", "").await.body).unwrap();
    let skipped = stats["disk_writes_skipped"].as_u64().unwrap();
    assert_eq!(skipped, 0, "every entry was still in memory when its turn came");
    // Memory has every new version.
    for i in 0..N {
        let r = get_with(&proxy.url(&format!("/v/{i}")), HOST).await;
        assert!(r.text().contains("version 2;") && r.header("cache-status").unwrap().contains("hit"));
    }
    proxy.handle.shutdown().await;

    // After a restart the disk has version 2 or nothing; never the replaced version 1.
    *gate.lock().unwrap() = Arc::new(tokio::sync::Barrier::new(1));
    let proxy = relais(&toml).await;
    let mut from_disk = 0;
    for i in 0..N {
        let r = get_with(&proxy.url(&format!("/v/{i}")), HOST).await;
        assert!(!r.text().contains("version 1;"), "/v/{i}: a replaced copy came back from disk");
        from_disk += r.text().contains("version 2;") as usize;
    }
    assert_eq!(from_disk, N - skipped as usize, "entries written to disk are served from it");
}

#[tokio::test]
async fn large_objects_stream_through_unstored() {
    let o = origin()
        .route("/big", |_| async { text(200, &"b".repeat(200 * 1024), &[("cache-control", "max-age=600")]) })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = proxy_to(o.addr).disk(dir.path()).with("max_object_size = \"64KiB\"");
    let proxy = relais(&toml).await;
    let r = get(&proxy.url("/big")).await;
    assert_eq!(r.body.len(), 200 * 1024);
    assert!(r.header("cache-status").unwrap().contains("too-large"), "{:?}", r.header("cache-status"));
    settle().await;
    get(&proxy.url("/big")).await;
    assert_eq!(o.hits("/big"), 2);
}

#[tokio::test]
async fn response_directives() {
    let o = origin()
        .route("/smax", |_| async { text(200, "x", &[("cache-control", "max-age=0, s-maxage=60")]) })
        .route("/expires", |_| async {
            let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
            text(200, "x", &[("expires", &later)])
        })
        .route("/bad-expires", |_| async {
            text(200, "x", &[("expires", "0"), ("last-modified", "Mon, 02 Nov 2026 10:00:00 GMT")])
        })
        .route("/heuristic", |_| async { text(200, "x", &[("last-modified", "Mon, 02 Nov 2026 10:00:00 GMT")]) })
        .route("/no-cache", |_| async { text(200, "x", &[("cache-control", "no-cache"), ("etag", "\"n\"")]) })
        .route("/pragma", |_| async {
            text(200, "x", &[("pragma", "no-cache"), ("expires", "Thu, 01 Jan 2099 00:00:00 GMT")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for path in ["/smax", "/expires", "/bad-expires", "/heuristic", "/no-cache", "/pragma"] {
        get(&proxy.url(path)).await;
    }
    for path in ["/smax", "/expires", "/heuristic"] {
        proxy.stored(path).await;
    }
    for path in ["/smax", "/expires", "/bad-expires", "/heuristic", "/no-cache", "/pragma"] {
        get(&proxy.url(path)).await;
    }
    assert_eq!(o.hits("/smax"), 1, "s-maxage wins over max-age in a shared cache");
    assert_eq!(o.hits("/expires"), 1);
    assert_eq!(o.hits("/bad-expires"), 2, "an invalid Expires means already stale");
    assert_eq!(o.hits("/heuristic"), 1, "10% of the Last-Modified age");
    assert_eq!(o.hits("/no-cache"), 2, "no-cache: stored, but revalidated on every use");
    assert_eq!(o.hits("/pragma"), 2, "Pragma: no-cache without Cache-Control");
}

#[tokio::test]
async fn authorization_is_shared_only_when_the_response_allows() {
    let o = origin()
        .route("/private-by-default", |_| async { text(200, "secret", &[("cache-control", "max-age=60")]) })
        .route("/public", |_| async { text(200, "shared", &[("cache-control", "public, max-age=60")]) })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for path in ["/private-by-default", "/public"] {
        get_with(&proxy.url(path), &[("authorization", "Bearer alice")]).await;
    }
    proxy.stored("/public").await;
    settle().await;
    let bob = get(&proxy.url("/private-by-default")).await;
    assert!(bob.header("cache-status").unwrap().contains("miss"), "alice's response is not served to bob");
    assert!(get(&proxy.url("/public")).await.header("cache-status").unwrap().contains("hit"));
    assert_eq!(o.hits("/private-by-default"), 2);
    assert_eq!(o.hits("/public"), 1);
}

#[tokio::test]
async fn put_and_delete_invalidate_too() {
    let o = origin()
        .route("/thing", |req: Request<Incoming>| async move {
            match req.method().as_str() {
                "GET" => text(200, "thing", &[("cache-control", "max-age=60")]),
                "PUT" => text(204, "", &[]),
                "DELETE" => text(200, "gone", &[]),
                _ => text(500, "failed", &[]),
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for method in ["PUT", "DELETE", "PATCH"] {
        get(&proxy.url("/thing")).await;
        proxy.stored("/thing").await;
        assert!(get(&proxy.url("/thing")).await.header("cache-status").unwrap().contains("hit"));
        let status =
            send(Request::builder().method(method).uri(proxy.url("/thing")).body(full("")).unwrap()).await.status;
        let after = get(&proxy.url("/thing")).await;
        let missed = after.header("cache-status").unwrap().contains("miss");
        // A failed PATCH (500) invalidates nothing.
        assert_eq!(missed, status.is_success(), "{method} ({status}): {:?}", after.header("cache-status"));
        proxy.stored("/thing").await;
    }
}

/// An origin that answers relais's conditional with a 304 carrying neither
/// ETag nor Last-Modified: that 304 is about the one response relais asked
/// about, so one origin request per revalidation, never a second unconditional one.
#[tokio::test]
async fn a_304_without_validators_refreshes_the_entry_it_was_asked_about() {
    for (stored, request_cc) in [
        (("etag", "\"v1\""), None),
        (("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"), None),
        (("etag", "\"v1\""), Some("no-cache")),
    ] {
        let o = origin()
            .route("/doc", move |req: Request<Incoming>| async move {
                let conditional =
                    req.headers().contains_key("if-none-match") || req.headers().contains_key("if-modified-since");
                if conditional {
                    let mut r = text(304, "", &[]);
                    *r.body_mut() = full("");
                    return r;
                }
                // `no-cache` stored responses are revalidated on every use.
                let cc = if request_cc.is_some() { "max-age=600" } else { "no-cache" };
                text(200, "the document", &[("cache-control", cc), stored])
            })
            .start()
            .await;
        let proxy = relais(&proxy_to(o.addr)).await;
        assert_eq!(get(&proxy.url("/doc")).await.text(), "the document");
        proxy.stored("/doc").await;
        let headers: Vec<(&str, &str)> = request_cc.map(|cc| ("cache-control", cc)).into_iter().collect();
        let r = get_with(&proxy.url("/doc"), &headers).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "the document"), "{stored:?}");
        assert!(
            r.header("cache-status").unwrap().contains("fwd-status=304"),
            "{stored:?}: {:?}",
            r.header("cache-status")
        );
        assert_eq!(o.hits("/doc"), 2, "{stored:?} {request_cc:?}: one request per revalidation");
    }
}

/// What origins send that is odd but means something: `Age` as a list (the
/// first member counts), `Expires` in the obsolete forms or the wrong case (a
/// date all the same), and the obsolete `Set-Cookie2` (a cookie like any other).
#[tokio::test]
async fn odd_but_meaningful_response_headers() {
    let o = origin()
        .route("/age-list", |_| async { text(200, "a", &[("cache-control", "max-age=3600"), ("age", "0, 7200")]) })
        .route("/age-lines", |_| async {
            text(200, "a", &[("cache-control", "max-age=3600"), ("age", "0"), ("age", "7200")])
        })
        .route("/asctime", |_| async { text(200, "e", &[("expires", "Thu Aug  8 02:01:18 2050")]) })
        .route("/rfc850", |_| async { text(200, "e", &[("expires", "Thursday, 08-Aug-50 02:01:18 GMT")]) })
        .route("/lower", |_| async { text(200, "e", &[("expires", "mon, 08 aug 2050 02:01:18 gmt")]) })
        .route("/cookie2", |_| async {
            text(200, "c", &[("cache-control", "max-age=60"), ("set-cookie2", "id=1; Version=1")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for path in ["/age-list", "/age-lines", "/asctime", "/rfc850", "/lower"] {
        get(&proxy.url(path)).await;
        proxy.stored(path).await;
        let r = get(&proxy.url(path)).await;
        assert!(r.header("cache-status").unwrap().contains("hit"), "{path}: {:?}", r.header("cache-status"));
        assert_eq!(o.hits(path), 1, "{path}");
    }
    for _ in 0..2 {
        let r = get(&proxy.url("/cookie2")).await;
        assert_eq!(r.header("set-cookie2"), Some("id=1; Version=1"), "each client gets its own cookie");
        settle().await;
    }
    assert_eq!(o.hits("/cookie2"), 2, "a response setting a cookie is not shared");
}

/// A client's If-Modified-Since against a stored response without
/// Last-Modified: the stored Date is the validator (RFC 9110 §13.1.3).
#[tokio::test]
async fn if_modified_since_is_judged_by_the_stored_date() {
    let o = origin().route("/", |_| async { text(200, "body", &[("cache-control", "max-age=600")]) }).start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let first = get(&proxy.url("/")).await;
    let date = first.header("date").expect("the origin's Date").to_string();
    proxy.stored("/").await;
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    let r = get_with(&proxy.url("/"), &[("if-modified-since", &later)]).await;
    assert_eq!(r.status, 304, "{:?}", r.header("cache-status"));
    let r = get_with(&proxy.url("/"), &[("if-modified-since", &date)]).await;
    assert_eq!(r.status, 304, "the Date itself");
    let earlier = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    let r = get_with(&proxy.url("/"), &[("if-modified-since", &earlier)]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "body"));
    assert_eq!(o.hits("/"), 1);
}

/// Any final status with explicit freshness is stored (RFC 9111 §3), but a
/// stored error is never a stale copy to fall back on: when it expires and
/// the origin fails again, the client gets the new answer.
#[tokio::test]
async fn errors_with_explicit_freshness_are_stored_but_never_served_stale() {
    let o = origin()
        .numbered("/", |i, _| {
            async move {
                match i {
                    // Fresh for about one second: its Age is half its max-age (Date has
                    // a resolution of one second, so the Age decides, not the Date).
                    0 => text(503, "busy, try later", &[("cache-control", "max-age=2"), ("age", "1")]),
                    _ => text(500, "broken now", &[]),
                }
            }
        })
        .route("/teapot", |_| async { text(499, "odd", &[("cache-control", "max-age=60")]) })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).with("cache = { stale_if_error = \"1m\" }")).await;
    assert_eq!(get(&proxy.url("/")).await.status, 503);
    proxy.stored("/").await;
    let hit = get(&proxy.url("/")).await;
    assert_eq!((hit.status.as_u16(), hit.text().as_str()), (503, "busy, try later"));
    assert!(hit.header("cache-status").unwrap().contains("hit"), "{:?}", hit.header("cache-status"));
    until("the stored 503 to go stale", || async { proxy.ttl("/").await < Some(0) }).await;
    let after = get(&proxy.url("/")).await;
    assert_eq!(
        (after.status.as_u16(), after.text().as_str()),
        (500, "broken now"),
        "{:?}",
        after.header("cache-status")
    );
    assert_eq!(o.hits("/"), 2);
    get(&proxy.url("/teapot")).await;
    proxy.stored("/teapot").await;
    assert!(get(&proxy.url("/teapot")).await.header("cache-status").unwrap().contains("hit"));
    assert_eq!(o.hits("/teapot"), 1);
}

/// Accept-Language and Accept-Encoding values that mean the same select one variant.
#[tokio::test]
async fn vary_values_that_mean_the_same_share_a_variant() {
    let o = origin()
        .route("/", |_| async {
            text(200, "v", &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding, Accept-Language")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get_with(&proxy.url("/"), &[("accept-encoding", "gzip, br"), ("accept-language", "fr;q=0.5, en")]).await;
    proxy.stored("/").await;
    for (ae, al) in [("br, gzip", "en, fr;q=0.5"), ("br;q=1.0,x-gzip", "EN,fr; q=0.50")] {
        let r = get_with(&proxy.url("/"), &[("accept-encoding", ae), ("accept-language", al)]).await;
        assert!(r.header("cache-status").unwrap().contains("hit"), "{ae} / {al}: {:?}", r.header("cache-status"));
    }
    let r = get_with(&proxy.url("/"), &[("accept-encoding", "gzip, br"), ("accept-language", "fr, en;q=0.5")]).await;
    assert!(!r.header("cache-status").unwrap().contains("hit"), "another preference is another variant");
    // Languages of equal weight, in any order, are one preference.
    get_with(&proxy.url("/"), &[("accept-encoding", "gzip"), ("accept-language", "en, de")]).await;
    until("the en/de variant to be stored", || async { proxy.cached("/").await.len() >= 3 }).await;
    let r = get_with(&proxy.url("/"), &[("accept-encoding", "gzip"), ("accept-language", "de;q=1.0, EN")]).await;
    assert!(r.header("cache-status").unwrap().contains("hit"), "{:?}", r.header("cache-status"));
    assert_eq!(o.hits("/"), 3);
}

/// A new variant and its URL's new Vary record go into memory together: the
/// variant was put only after the record's disk write, and a second request in
/// that window found a record pointing at nothing (40 of 40 URLs fetched at once
/// missed twice). And a client reading by Content-Length is done at the last
/// byte: that byte waits until the copy is in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_variant_is_found_as_soon_as_its_vary_record() {
    let o = origin()
        .route("/", |_| async { text(200, "v", &[("cache-control", "max-age=60"), ("vary", "accept-language")]) })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let urls: Vec<String> = (0..40).map(|i| proxy.url(&format!("/page/{i}"))).collect();
    let twice = urls.iter().map(|url| async move {
        let lang = [("accept-language", "fr")];
        get_with(url, &lang).await;
        get_with(url, &lang).await.header("cache-status").unwrap().to_string()
    });
    let statuses = futures_util::future::join_all(twice).await;
    let missed: Vec<&String> = statuses.iter().filter(|s| !s.contains("hit")).collect();
    assert!(missed.is_empty(), "{} of 40 second requests missed: {:?}", missed.len(), missed.first());
}

/// 1xx responses before the final one (103 Early Hints, 100, 102) never become
/// the final or the stored response. hyper's server cannot send 1xx yet, so
/// they are not passed on either: the client sees the final answer only.
#[tokio::test]
async fn informational_responses_are_neither_final_nor_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = tcp.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        counted.fetch_add(1, Ordering::SeqCst);
                        let answer = "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                                      HTTP/1.1 102 Processing\r\n\r\n\
                                      HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nfinal";
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let proxy = relais(proxy_to(addr)).await;
    let r = get(&proxy.url("/page")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "final"));
    assert_eq!(r.header("link"), None, "the hint's fields are not the final response's");
    proxy.stored("/page").await;
    let again = get(&proxy.url("/page")).await;
    assert_eq!((again.status.as_u16(), again.text().as_str()), (200, "final"));
    assert!(again.header("cache-status").unwrap().contains("hit"), "{:?}", again.header("cache-status"));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

/// Targeted cache control (RFC 9213): `CDN-Cache-Control`, and relais's own
/// field before it, decide for relais instead of `Cache-Control`, and are not
/// passed to clients unless `expose_targeted`.
#[tokio::test]
async fn targeted_cache_control_decides_for_relais() {
    let o = origin()
        .route("/cdn", |_| async {
            text(200, "c", &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")])
        })
        .route("/own", |_| async {
            text(
                200,
                "o",
                &[("cache-control", "max-age=60"), ("cdn-cache-control", "max-age=60"), ("x-edge-cc", "no-store")],
            )
        })
        .start()
        .await;
    for expose in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let conf = proxy_to(o.addr)
            .disk(dir.path())
            .with(format!("targeted_field = \"X-Edge-CC\"\nexpose_targeted = {expose}"));
        let proxy = relais(conf).await;
        let first = get(&proxy.url("/cdn")).await;
        assert_eq!(first.header("cache-control"), Some("no-store"), "Cache-Control is for the browser");
        assert_eq!(first.header("cdn-cache-control").is_some(), expose);
        proxy.stored("/cdn").await;
        let r = get(&proxy.url("/cdn")).await;
        assert!(r.header("cache-status").unwrap().contains("hit"), "{:?}", r.header("cache-status"));
        assert_eq!(r.header("cdn-cache-control").is_some(), expose, "stored, and hidden on hits too");
        get(&proxy.url("/own")).await;
        settle().await;
        let r = get(&proxy.url("/own")).await;
        assert!(!r.header("cache-status").unwrap().contains("hit"), "relais's own field wins: no-store");
        assert_eq!(r.header("x-edge-cc").is_some(), expose);
    }
    assert_eq!(o.hits("/cdn"), 2, "one fetch per proxy");
    assert_eq!(o.hits("/own"), 4);
}

/// A client's HEAD on a stale entry is sent as HEAD, with the stored
/// validators. A 200 that describes the stored GET response (same ETag and
/// length) freshens its headers without its body being fetched (RFC 9111
/// §4.3.5), and the HEAD and the next GET are answered from it; a 200 for
/// another version removes it, and the next GET fetches that version.
#[tokio::test]
async fn a_head_on_a_stale_entry_freshens_the_stored_get() {
    let methods: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = |methods: &Arc<Mutex<Vec<String>>>, req: &Request<Incoming>| {
        let inm = req.headers().get("if-none-match").map_or("", |v| v.to_str().unwrap());
        methods.lock().unwrap().push(format!("{} {} {inm}", req.method(), req.uri().path()));
    };
    let (seen, seen2) = (methods.clone(), methods.clone());
    let o = origin()
        .numbered("/doc", move |i, req: Request<Incoming>| {
            log(&seen, &req);
            async move {
                match i {
                    // Stale as soon as stored: its Age is all of its max-age.
                    0 => {
                        text(200, "v1", &[("cache-control", "max-age=1"), ("age", "1"), ("etag", "\"v1\""), ("a", "1")])
                    }
                    // The same version: fresh for a minute, with a new field.
                    _ => text(200, "v1", &[("cache-control", "max-age=60"), ("etag", "\"v1\""), ("a", "2")]),
                }
            }
        })
        .numbered("/new", move |i, req: Request<Incoming>| {
            log(&seen2, &req);
            async move {
                match i {
                    0 => text(200, "version 1", &[("cache-control", "max-age=1"), ("age", "1"), ("etag", "\"v1\"")]),
                    _ => text(200, "version 2", &[("cache-control", "max-age=60"), ("etag", "\"v2\"")]),
                }
            }
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    assert_eq!(get(&proxy.url("/doc")).await.text(), "v1");
    proxy.stored("/doc").await;
    let head = send(Request::head(proxy.url("/doc")).body(full("")).unwrap()).await;
    assert_eq!((head.status.as_u16(), head.header("etag"), head.header("a")), (200, Some("\"v1\""), Some("2")));
    assert!(head.body.is_empty());
    until("the stored response to be freshened", || async { proxy.ttl("/doc").await > Some(1) }).await;
    let r = get(&proxy.url("/doc")).await;
    assert_eq!((r.text().as_str(), r.header("a")), ("v1", Some("2")));
    assert!(r.header("cache-status").unwrap().contains("hit"), "{:?}", r.header("cache-status"));

    // Another version behind a stale entry: the HEAD removes it.
    assert_eq!(get(&proxy.url("/new")).await.text(), "version 1");
    proxy.stored("/new").await;
    let head = send(Request::head(proxy.url("/new")).body(full("")).unwrap()).await;
    assert_eq!((head.status.as_u16(), head.header("etag")), (200, Some("\"v2\"")));
    until("the outdated entry to be removed", || async { proxy.cached("/new").await.is_empty() }).await;
    assert_eq!(get(&proxy.url("/new")).await.text(), "version 2");
    let methods = methods.lock().unwrap();
    let want = ["GET /doc ", "HEAD /doc \"v1\"", "GET /new ", "HEAD /new \"v1\"", "GET /new "];
    assert_eq!(methods.as_slice(), want);
}

/// `Expires` holds one of the three forms of RFC 9110 §5.6.7 or is already
/// past (RFC 9111 §5.3): a near miss of the form is not read as the date it
/// resembles, whatever the other date fields may accept.
#[tokio::test]
async fn an_expires_not_in_one_of_the_three_forms_is_already_past() {
    const NEAR_MISSES: [&str; 7] = [
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 2050 02:01:18 AEST",
        "Thu, 18 Aug 50 02:01:18 GMT",
        "Thu 18 Aug 2050 02:01:18 GMT",
        "Thu, 18 Aug 2050  02:01:18 GMT",
        "Thu, 18-Aug-2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",
    ];
    let mut o = origin();
    for (i, expires) in NEAR_MISSES.iter().enumerate() {
        o = o.route(&format!("/bad/{i}"), move |_| async move { text(200, "x", &[("expires", expires)]) });
    }
    let o =
        o.route("/good", |_| async { text(200, "x", &[("expires", "Thu, 18 Aug 2050 02:01:18 GMT")]) }).start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get(&proxy.url("/good")).await;
    proxy.stored("/good").await;
    assert!(get(&proxy.url("/good")).await.header("cache-status").unwrap().contains("hit"));
    for (i, expires) in NEAR_MISSES.iter().enumerate() {
        let path = format!("/bad/{i}");
        get(&proxy.url(&path)).await;
        settle().await;
        let r = get(&proxy.url(&path)).await;
        assert!(!r.header("cache-status").unwrap().contains("hit"), "{}: {:?}", expires, r.header("cache-status"));
        assert_eq!(o.hits(&path), 2, "{}", expires);
    }
}

/// A POST's response is never stored, not even one with explicit freshness
/// and a `Content-Location` naming the request's own URL, which RFC 9111 §4
/// lets a cache reuse for later GETs: the body of a POST is the client's, so
/// any client could make its answer every client's GET.
#[tokio::test]
async fn a_post_response_is_never_reused_for_a_get() {
    let o = origin()
        .route("/form", |req: Request<Incoming>| async move {
            let here = format!("http://{}/form", req.headers()["host"].to_str().unwrap());
            let cc = ("cache-control", "max-age=60");
            if req.method() == "POST" {
                return text(200, "your order, Alice", &[cc, ("content-location", &here)]);
            }
            text(200, "the form", &[cc])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let post = send(Request::post(proxy.url("/form")).body(full("name=Alice")).unwrap()).await;
    assert_eq!(post.text(), "your order, Alice");
    assert!(post.header("cache-status").unwrap().contains("fwd=method"), "{:?}", post.header("cache-status"));
    settle().await;
    let r = get(&proxy.url("/form")).await;
    assert_eq!(r.text(), "the form");
    assert!(r.header("cache-status").unwrap().contains("uri-miss"), "{:?}", r.header("cache-status"));
    assert_eq!(o.hits("/form"), 2);
}
