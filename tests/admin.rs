//! The admin API: authentication, purges in both tiers and across restarts,
//! soft purge, the in-flight-fill race, PURGE compatibility, metrics.

mod support;

use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use serde_json::Value;
use support::*;
use tokio::io::AsyncWriteExt;

const HOST: &[(&str, &str)] = &[("host", "shop.test")];

fn json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.text()))
}

fn cache_status(r: &Reply) -> &str {
    r.header("cache-status").unwrap_or("")
}

fn tagged_origin() -> OriginBuilder {
    origin().route("/", |req: Request<Incoming>| async move {
        let path = req.uri().path().to_string();
        let tags = if path.starts_with("/products/") { "product catalog" } else { "page" };
        text(
            200,
            &format!("page {path}"),
            &[("cache-control", "max-age=600"), ("surrogate-key", tags), ("etag", "\"v\"")],
        )
    })
}

/// Answers with the request's Accept-Encoding, varying on it.
fn vary_origin() -> OriginBuilder {
    origin().route("/", |req: Request<Incoming>| async move {
        let enc = req.headers().get("accept-encoding").map_or("none", |v| v.to_str().unwrap()).to_string();
        text(200, &enc, &[("cache-control", "max-age=600"), ("vary", "accept-encoding")])
    })
}

#[tokio::test]
async fn authentication() {
    let o = origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    assert_eq!(get(&proxy.admin_url("/health")).await.status, 200, "health needs no token");
    assert_eq!(get(&proxy.admin_url("/stats")).await.status, 401);
    let wrong = get_with(&proxy.admin_url("/stats"), &[("authorization", "Bearer guess")]).await;
    assert_eq!(wrong.status, 403);
    let purge = send(Request::post(proxy.admin_url("/purge")).body(full(r#"{"all": true}"#)).unwrap()).await;
    assert_eq!(purge.status, 401, "no purge without the token");
    assert_eq!(proxy.admin("GET", "/stats", "").await.status, 200);
}

#[tokio::test]
async fn refuses_a_public_admin_listener_without_token() {
    let toml = "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"0.0.0.0:0\"\n";
    let err = relais::Config::from_toml(toml, "t.toml").expect_err("refused by the file check");
    assert!(err.to_string().contains("t.toml: admin.token"), "{err}");
    // A configuration built in code is checked at start.
    let mut config = relais::Config::from_toml("[server]\nlisten = [\"127.0.0.1:0\"]\n", "t.toml").unwrap();
    config.admin.listen = "0.0.0.0:0".parse().unwrap();
    let err = relais::start(config).await.err().expect("refused at start");
    assert!(err.to_string().contains("admin.token"), "{err}");
}

#[tokio::test]
async fn url_purge_in_both_tiers_survives_a_restart() {
    let o = tagged_origin().start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = proxy_to(o.addr).disk(dir.path());
    let proxy = relais(&toml).await;
    get_with(&proxy.url("/a"), HOST).await;
    get_with(&proxy.url("/b"), HOST).await;
    proxy.stored("http://shop.test/a").await;
    proxy.stored("http://shop.test/b").await;
    // Both written to disk first: a purge that overtakes a disk write still in
    // flight is another matter (the write can land after the purge's deletion).
    proxy.on_disk(2).await;
    let r = proxy.admin("POST", "/purge", r#"{"url": "https://shop.test/a"}"#).await;
    assert_eq!(json(&r)["purged"], 1, "{}", r.text());
    assert!(cache_status(&get_with(&proxy.url("/a"), HOST).await).contains("miss"));
    assert!(cache_status(&get_with(&proxy.url("/b"), HOST).await).contains("hit"));
    let r = proxy.admin("POST", "/purge", r#"{"url": "http://shop.test/b"}"#).await;
    assert_eq!(json(&r)["purged"], 1);
    proxy.stored("http://shop.test/a").await;
    proxy.on_disk(1).await;
    proxy.handle.shutdown().await;

    let proxy = relais(&toml).await;
    assert!(cache_status(&get_with(&proxy.url("/b"), HOST).await).contains("miss"), "still gone after restart");
    assert!(cache_status(&get_with(&proxy.url("/a"), HOST).await).contains("hit"), "the refetched /a was stored");
}

#[tokio::test]
async fn tag_purge_of_entries_loaded_from_disk() {
    let o = tagged_origin().start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = proxy_to(o.addr).disk(dir.path());
    let proxy = relais(&toml).await;
    for path in ["/products/1", "/products/2", "/about"] {
        let r = get_with(&proxy.url(path), HOST).await;
        assert_eq!(r.header("surrogate-key"), None, "tag headers are not forwarded to clients");
    }
    proxy.on_disk(3).await;
    proxy.handle.shutdown().await;

    let proxy = relais(&toml).await;
    until("the index to be rebuilt from disk", || async {
        // in the background
        proxy.stats().await["cache"]["indexed_keys"].as_u64() >= Some(3)
    })
    .await;
    let r = proxy.admin("POST", "/purge", r#"{"tags": ["product"]}"#).await;
    assert_eq!(json(&r)["purged"], 2, "{}", r.text());
    assert!(cache_status(&get_with(&proxy.url("/products/1"), HOST).await).contains("miss"));
    assert!(cache_status(&get_with(&proxy.url("/about"), HOST).await).contains("hit"));
}

/// After a restart only tagged keys are in the purge index: the others on disk
/// are found by their URL's label (a URL purge) or by reading the disk's index
/// (a prefix), variants included.
#[tokio::test]
async fn url_and_prefix_purges_reach_entries_only_on_disk() {
    let o = vary_origin().start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = proxy_to(o.addr).disk(dir.path());
    let proxy = relais(&toml).await;
    for path in ["/v", "/docs/a", "/docs/b", "/other"] {
        for enc in ["gzip", "br"] {
            get_with(&proxy.url(path), &[("host", "shop.test"), ("accept-encoding", enc)]).await;
        }
    }
    // Four Vary records and eight variants.
    proxy.on_disk(12).await;
    proxy.handle.shutdown().await;

    let proxy = relais(&toml).await;
    let r = proxy.admin("POST", "/purge", r#"{"url": "http://shop.test/v"}"#).await;
    assert_eq!(json(&r)["purged"], 2, "{}", r.text());
    let r = proxy.admin("POST", "/purge", r#"{"prefix": "http://shop.test/docs/"}"#).await;
    assert_eq!(json(&r)["purged"], 4, "{}", r.text());
    for path in ["/v", "/docs/a", "/docs/b"] {
        let r = get_with(&proxy.url(path), &[("host", "shop.test"), ("accept-encoding", "br")]).await;
        assert!(cache_status(&r).contains("miss"), "{path}: {}", cache_status(&r));
    }
    let r = get_with(&proxy.url("/other"), &[("host", "shop.test"), ("accept-encoding", "br")]).await;
    assert!(cache_status(&r).contains("hit"), "nothing else was purged: {}", cache_status(&r));
}

#[tokio::test]
async fn prefix_and_all() {
    let o = tagged_origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for path in ["/static/a.css", "/static/b.js", "/index"] {
        get_with(&proxy.url(path), HOST).await;
        proxy.stored(&format!("http://shop.test{path}")).await;
    }
    let r = proxy.admin("POST", "/purge", r#"{"prefix": "http://shop.test/static/"}"#).await;
    assert_eq!(json(&r)["purged"], 2);
    assert!(cache_status(&get_with(&proxy.url("/index"), HOST).await).contains("hit"));
    let r = proxy.admin("POST", "/purge", r#"{"all": true}"#).await;
    assert!(json(&r)["purged"].as_u64().unwrap() >= 1);
    assert!(cache_status(&get_with(&proxy.url("/index"), HOST).await).contains("miss"));
}

#[tokio::test]
async fn url_purge_removes_every_variant() {
    let o = vary_origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for enc in ["gzip", "br"] {
        get_with(&proxy.url("/v"), &[("host", "shop.test"), ("accept-encoding", enc)]).await;
    }
    proxy.stored_n("http://shop.test/v", 2).await;
    let r = proxy.admin("POST", "/purge", r#"{"url": "http://shop.test/v"}"#).await;
    assert_eq!(json(&r)["purged"], 2);
    for enc in ["gzip", "br"] {
        let r = get_with(&proxy.url("/v"), &[("host", "shop.test"), ("accept-encoding", enc)]).await;
        assert!(cache_status(&r).contains("miss"), "{enc}: {}", cache_status(&r));
    }
}

#[tokio::test]
async fn soft_purge_serves_stale_while_one_revalidation_runs() {
    let o = origin()
        .route("/", |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            text(200, "doc", &[("cache-control", "max-age=600"), ("etag", "\"d\"")])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr).with("cache = { stale_while_revalidate = \"1m\" }")).await;
    get_with(&proxy.url("/doc"), HOST).await;
    proxy.stored("http://shop.test/doc").await;
    let r = proxy.admin("POST", "/purge", r#"{"url": "http://shop.test/doc", "soft": true}"#).await;
    assert_eq!(json(&r)["purged"], 1);
    let t = std::time::Instant::now();
    for _ in 0..3 {
        let r = get_with(&proxy.url("/doc"), HOST).await;
        assert_eq!(r.text(), "doc");
        assert!(cache_status(&r).contains("hit"), "{}", cache_status(&r));
    }
    assert!(t.elapsed() < Duration::from_millis(250), "stale copies are served without waiting");
    until("the revalidated copy to be stored", || async { proxy.ttl("http://shop.test/doc").await > Some(500) }).await;
    assert_eq!(o.hits("/doc"), 2, "exactly one revalidation");
}

#[tokio::test]
async fn a_purge_during_a_fill_keeps_the_fill_out_of_the_cache() {
    let o = origin()
        .route("/", |_| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            text(200, "old content", &[("cache-control", "max-age=600")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let url = proxy.url("/slow");
    let fill = tokio::spawn(async move { get_with(&url, HOST).await });
    until("the fill to reach the origin", || async { o.hits("/slow") == 1 }).await;
    let r = proxy.admin("POST", "/purge", r#"{"url": "http://shop.test/slow"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(fill.await.unwrap().text(), "old content");
    settle().await;
    let after = get_with(&proxy.url("/slow"), HOST).await;
    assert!(cache_status(&after).contains("miss"), "{}", cache_status(&after));
    assert_eq!(o.hits("/slow"), 2);
}

#[tokio::test]
async fn purge_method_like_nginx_and_varnish_scripts() {
    let o = tagged_origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get_with(&proxy.url("/page"), HOST).await;
    proxy.stored("http://shop.test/page").await;
    let req = Request::builder()
        .method("PURGE")
        .uri(proxy.admin_url("/page"))
        .header("host", "shop.test")
        .header("authorization", "Bearer test-token")
        .body(full(""))
        .unwrap();
    let r = send(req).await;
    assert_eq!(json(&r)["purged"], 1, "{}", r.text());
    assert!(cache_status(&get_with(&proxy.url("/page"), HOST).await).contains("miss"));
}

#[tokio::test]
async fn malformed_purges_are_400_with_a_reason() {
    let o = origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for body in
        ["", "{}", r#"{"url": "/relative"}"#, r#"{"url": "http://a/", "colour": "red"}"#, "not json", r#"{"tags": []}"#]
    {
        let r = proxy.admin("POST", "/purge", body).await;
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
        assert!(json(&r)["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

fn series(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let o = tagged_origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let before = proxy.admin("GET", "/metrics", "").await.text();
    let ours = |l: &&str| !l.starts_with('#') && !l.is_empty();
    assert!(before.lines().filter(ours).all(|l| l.starts_with("relais_") || l.starts_with("process_")), "{before}");
    // The build, and the process's figures as Prometheus's client libraries name them.
    let version = env!("CARGO_PKG_VERSION");
    assert!(before.contains(&format!("relais_build_info{{version=\"{version}\",commit=\"")), "{before}");
    for figure in ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
        assert!(series(&before, &format!("{figure} ")) > 0.0, "{figure}: {before}");
    }
    assert!(before.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "), "{before}");
    get_with(&proxy.url("/m"), HOST).await;
    proxy.stored("http://shop.test/m").await;
    get_with(&proxy.url("/m"), HOST).await;
    let after = proxy.admin("GET", "/metrics", "").await.text();
    let hits = "relais_requests_total{route=\"*/\",status=\"200\",cache=\"hit\"}";
    assert_eq!(series(&after, hits) - series(&before, hits), 1.0, "{after}");
    assert!(series(&after, "relais_cache_memory_entries") >= 1.0);
    assert!(after.contains("relais_upstream_response_seconds_bucket{upstream=\"o\",server="), "{after}");
    assert!(
        after.contains(
            "relais_request_duration_seconds_bucket{route=\"*/\",method=\"GET\",cache=\"hit\",le=\"0.0005\"}"
        ),
        "{after}"
    );
    let stats = json(&proxy.admin("GET", "/stats", "").await);
    assert!(stats["hit_ratio"].as_f64().unwrap() > 0.0, "{stats}");
}

/// Body bytes are counted as they arrive: a chunked upload has no Content-Length to read.
#[tokio::test]
async fn bytes_received_count_chunked_uploads() {
    use http_body_util::{BodyExt, StreamBody};
    let o = origin()
        .route("/up", |req: Request<Incoming>| async move {
            let n = req.into_body().collect().await.unwrap().to_bytes().len();
            text(200, &n.to_string(), &[])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let chunks =
        futures_util::stream::iter([&b"hello "[..], b"chunked ", b"world"].map(|c| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(bytes::Bytes::from(c)))
        }));
    let r = send(Request::post(proxy.url("/up")).body(BodyExt::boxed(StreamBody::new(chunks))).unwrap()).await;
    assert_eq!(r.text(), "19");
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert_eq!(series(&m, "relais_bytes_received_total"), 19.0, "{m}");
}

#[tokio::test]
async fn cache_debug_view() {
    let o = tagged_origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get_with(&proxy.url("/products/9"), HOST).await;
    proxy.stored("http://shop.test/products/9").await;
    let r = proxy.admin("GET", "/cache?url=http%3A%2F%2Fshop.test%2Fproducts%2F9", "").await;
    let v = json(&r);
    let entry = &v["entries"][0];
    assert_eq!(entry["tier"], "memory", "{v}");
    assert_eq!(entry["tags"], serde_json::json!(["catalog", "product"]));
    assert!(entry["ttl"].as_i64().unwrap() > 500);
}

/// A purge names a URL as a client could have sent it: its path is normalised
/// as requests are, so `/x/../a` and `//%61` purge what `/a` stored.
#[tokio::test]
async fn a_url_purge_normalises_its_path_like_requests() {
    let o = tagged_origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    for path in ["/x/../a", "//%61"] {
        get_with(&proxy.url("/a"), HOST).await;
        proxy.stored("http://shop.test/a").await;
        let r = proxy.admin("POST", "/purge", &format!(r#"{{"url": "http://shop.test{path}"}}"#)).await;
        assert_eq!(json(&r)["purged"], 1, "{path}: {}", r.text());
    }
    let r = proxy.admin("POST", "/purge", r#"{"url": "http://shop.test/a%2Fb"}"#).await;
    assert_eq!(r.status, 400, "a path no request could have: {}", r.text());
}

/// A request as a browser would send it to the admin listener.
async fn browser(proxy: &Relais, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut b = Request::builder().method(method).uri(proxy.admin_url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(full(body.to_string())).unwrap()).await
}

/// On its default (loopback, no token) the admin API obeyed any web page: a
/// cross-site `text/plain` POST emptied the cache or reloaded, and a name
/// rebound to 127.0.0.1 read `/stats`. Foreign origins and hosts get 403,
/// actions whose body is not JSON 415; curl's requests still work.
#[tokio::test]
async fn a_web_page_cannot_drive_the_admin_api() {
    let o = tagged_origin().start().await;
    let proxy =
        relais(proxy_to(o.addr).section("[admin]\nlisten = \"127.0.0.1:0\"\nhosts = [\"admin.internal\"]")).await;
    get_with(&proxy.url("/a"), HOST).await;
    proxy.stored("http://shop.test/a").await;
    let evil = ("origin", "http://evil.example");
    let plain = ("content-type", "text/plain");
    let json_type = ("content-type", "application/json");
    let all = r#"{"all": true}"#;
    for (method, path, headers, body, want) in [
        ("POST", "/purge", vec![evil, plain], all, 403),
        ("POST", "/purge", vec![evil, json_type], all, 403),
        ("POST", "/purge", vec![("origin", "null"), json_type], all, 403),
        ("POST", "/purge", vec![plain], all, 415),
        ("POST", "/purge", vec![("content-type", "application/x-www-form-urlencoded")], all, 415),
        ("POST", "/purge", vec![], all, 415),
        ("POST", "/reload", vec![evil], "", 403),
        ("POST", "/reload", vec![plain], "x", 415),
        ("PURGE", "/a", vec![evil, ("host", "shop.test")], "", 403),
        ("GET", "/stats", vec![("host", "rebind.evil.example")], "", 403),
        ("GET", "/stats", vec![("host", "rebind.evil.example:9090")], "", 403),
        ("GET", "/metrics", vec![("host", "localhost.evil.example")], "", 403),
        ("GET", "/stats", vec![evil], "", 403),
    ] {
        let r = browser(&proxy, method, path, &headers, body).await;
        assert_eq!(r.status, want, "{method} {path} {headers:?}: {}", r.text());
    }
    assert!(cache_status(&get_with(&proxy.url("/a"), HOST).await).contains("hit"), "nothing was purged");

    // What curl and the operator's own pages send.
    let port = proxy.handle.admin_addr().port();
    for host in ["127.0.0.1".to_string(), format!("127.0.0.1:{port}"), format!("localhost:{port}"), "[::1]:9090".into()]
    {
        assert_eq!(browser(&proxy, "GET", "/stats", &[("host", &host)], "").await.status, 200, "{host}");
    }
    assert_eq!(browser(&proxy, "GET", "/stats", &[("host", "Admin.Internal:9090")], "").await.status, 200);
    assert_eq!(browser(&proxy, "GET", "/health", &[("host", "rebind.evil.example")], "").await.status, 200);
    let own = format!("http://127.0.0.1:{port}");
    let r = browser(
        &proxy,
        "POST",
        "/purge",
        &[("origin", &own), ("content-type", "application/json; charset=utf-8")],
        all,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = browser(&proxy, "POST", "/purge", &[json_type], r#"{"url": "http://shop.test/a"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(browser(&proxy, "POST", "/reload", &[], "").await.status, 422, "no file to reload here, but asked");
    let r = browser(&proxy, "PURGE", "/a", &[("host", "shop.test")], "").await;
    assert_eq!(r.status, 200, "PURGE names the site in Host: {}", r.text());
}

/// `relais_connections_open` counts client connections by listener and
/// protocol while they are open, and forgets them once closed.
#[tokio::test]
async fn open_connections_are_counted_by_listener_and_protocol() {
    let o = tagged_origin().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let open =
        |protocol: &str, n: u64| format!("relais_connections_open{{listener=\"http\",protocol=\"{protocol}\"}} {n}");
    let mut h1 = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    h1.write_all(b"GET /a HTTP/1.1\r\nHost: shop.test\r\n\r\n").await.unwrap();
    assert!(read_response(&mut h1).await.starts_with("HTTP/1.1 200"));
    let h2 = h2_client();
    assert_eq!(send_with(&h2, Request::get(proxy.url("/a")).body(full("")).unwrap()).await.status, 200);
    let m = proxy.metrics().await;
    assert!(m.contains(&open("http1", 1)) && m.contains(&open("h2", 1)), "{m}");
    assert_eq!(proxy.stats().await["connections_open"]["http"]["h2"], 1);
    drop((h1, h2));
    until("both connections closed", || async {
        let m = proxy.metrics().await;
        m.contains(&open("http1", 0)) && m.contains(&open("h2", 0))
    })
    .await;
}
