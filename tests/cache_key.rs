//! Cache keys that operators shape (`cache.key`), against real origins that
//! count their hits: what shares an entry, what splits one, what the origin is
//! asked, and what a purge by URL removes.

mod support;

use support::*;

/// An origin that answers every path with the query it was asked with, cacheable.
async fn echo_query() -> Origin {
    origin()
        .route("/", |req| async move {
            let seen = req.uri().query().unwrap_or("").to_string();
            text(200, &seen, &[("cache-control", "max-age=60")])
        })
        .start()
        .await
}

fn status(r: &Reply) -> &str {
    r.header("cache-status").unwrap_or("")
}

#[tokio::test]
async fn dropped_parameters_share_one_entry_and_still_reach_the_origin() {
    let o = echo_query().await;
    let conf = proxy_to(o.addr).with(r#"cache.key = { drop_params = ["utm_*", "fbclid", "gclid"] }"#);
    let proxy = relais(&conf).await;

    let first = get(&proxy.url("/p?utm_source=news&x=1&fbclid=abc")).await;
    assert_eq!(first.text(), "utm_source=news&x=1&fbclid=abc", "the origin is asked with the query as sent");
    let key = format!("key=\"http://{}/p?x=1\"", proxy.addr);
    assert!(status(&first).contains("fwd=uri-miss") && status(&first).contains(&key), "{}", status(&first));
    proxy.stored("/p?x=1").await;

    let second = get(&proxy.url("/p?x=1&utm_campaign=spring&gclid=zz")).await;
    assert!(status(&second).starts_with("relais; hit") && status(&second).contains(&key), "{}", status(&second));
    assert_eq!(second.text(), "utm_source=news&x=1&fbclid=abc");
    assert_eq!(o.total_hits(), 1);

    // A parameter that is not dropped still splits the cache.
    get(&proxy.url("/p?x=2&utm_source=news")).await;
    assert_eq!(o.total_hits(), 2);
    // The admin view shows the key the entries were stored under.
    let view = proxy.admin("GET", &format!("/cache?url=http://{}/p%3Fx%3D1%26gclid%3Dq", proxy.addr), "").await;
    let view: serde_json::Value = serde_json::from_slice(&view.body).unwrap();
    assert_eq!(view["url"], format!("http://{}/p?x=1", proxy.addr));
    assert_eq!(view["entries"].as_array().map(Vec::len), Some(1), "{view}");
}

#[tokio::test]
async fn sorted_ignored_and_kept_queries_and_folded_paths() {
    let o = echo_query().await;
    let conf = Conf::new()
        .upstream("o", o.addr)
        .route("/sorted/", "o")
        .with(r#"cache.key = { query = "sorted" }"#)
        .route("/ignored/", "o")
        .with(r#"cache.key = { query = "ignore", fold_path_case = true }"#)
        .route("/kept/", "o")
        .with(r#"cache.key = { keep_params = ["page"] }"#);
    let proxy = relais(&conf).await;
    let hits = |paths: &[&str]| {
        let (o, proxy) = (&o, &proxy);
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        async move {
            let before = o.total_hits();
            for p in paths {
                get(&proxy.url(&p)).await;
                // Stored before the next request asks.
                proxy.stored(&p).await;
            }
            o.total_hits() - before
        }
    };
    assert_eq!(hits(&["/sorted/a?b=2&a=1", "/sorted/a?a=1&b=2"]).await, 1);
    assert_eq!(hits(&["/sorted/a?a=2&b=1"]).await, 1, "values still count");
    assert_eq!(hits(&["/ignored/A?v=1", "/ignored/a?v=2", "/ignored/a"]).await, 1);
    assert_eq!(hits(&["/kept/x?page=2&sort=asc", "/kept/x?sort=desc&page=2"]).await, 1);
    assert_eq!(hits(&["/kept/x?page=3"]).await, 1);
}

#[tokio::test]
async fn a_header_or_a_cookie_in_the_key_splits_the_cache() {
    let o = origin()
        .route("/", |req| async move {
            let tenant = req.headers().get("x-tenant").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
            text(200, &tenant, &[("cache-control", "max-age=60")])
        })
        .start()
        .await;
    let conf = proxy_to(o.addr).with(r#"cache.key = { headers = ["x-tenant"], cookies = ["plan"] }"#);
    let proxy = relais(&conf).await;
    let ask = |tenant: &str, cookie: &str| {
        let url = proxy.url("/page");
        let (tenant, cookie) = (tenant.to_string(), cookie.to_string());
        async move { get_with(&url, &[("x-tenant", &tenant), ("cookie", &cookie)]).await }
    };

    let a = ask("acme", "plan=gold; theme=dark").await;
    assert_eq!(a.text(), "acme");
    let key = format!("key=\"http://{}/page header:x-tenant cookie:plan\"", proxy.addr);
    assert!(status(&a).contains(&key), "names, never values: {}", status(&a));
    proxy.stored("/page").await;
    let again = ask("acme", "theme=light; plan=gold").await;
    assert!(status(&again).starts_with("relais; hit"), "another cookie does not split: {}", status(&again));
    assert_eq!(o.total_hits(), 1);

    let b = ask("globex", "plan=gold").await;
    assert_eq!(b.text(), "globex", "another tenant is not served acme's page");
    let silver = ask("acme", "plan=silver").await;
    assert!(status(&silver).contains("fwd=uri-miss"), "{}", status(&silver));
    assert_eq!(o.total_hits(), 3);
    proxy.stored_n("/page", 3).await;
    let view = proxy.admin("GET", &format!("/cache?url=http://{}/page", proxy.addr), "").await;
    let view: serde_json::Value = serde_json::from_slice(&view.body).unwrap();
    assert_eq!(view["cache_key"], format!("http://{}/page header:x-tenant cookie:plan", proxy.addr));

    // One purge of the URL removes every tenant's and plan's entry.
    let purged = proxy.admin("POST", "/purge", &format!(r#"{{"url": "{}"}}"#, proxy.url("/page"))).await;
    assert!(purged.text().contains("\"purged\":3"), "{}", purged.text());
    ask("acme", "plan=gold").await;
    assert_eq!(o.total_hits(), 4);
}

#[tokio::test]
async fn purge_by_url_applies_the_routes_key_rules() {
    let o = echo_query().await;
    let conf = Conf::new()
        .upstream("o", o.addr)
        .route("/", "o")
        .route("/shop/", "o")
        .with(r#"cache.key = { query = "sorted", drop_params = ["utm_*"] }"#);
    let proxy = relais(&conf).await;

    get(&proxy.url("/shop/p?b=1&a=2")).await;
    proxy.stored("/shop/p?a=2&b=1").await;
    let body = format!(r#"{{"url": "http://{}/shop/p?utm_source=mail&a=2&b=1"}}"#, proxy.addr);
    let purged = proxy.admin("POST", "/purge", &body).await;
    assert!(purged.text().contains("\"purged\":1"), "{}", purged.text());
    get(&proxy.url("/shop/p?a=2&b=1")).await;
    assert_eq!(o.total_hits(), 2, "purged: asked again");

    // The PURGE method finds the route the same way.
    proxy.stored("/shop/p?b=1&a=2").await;
    let req = http::Request::builder()
        .method("PURGE")
        .uri(proxy.admin_url("/shop/p?b=1&utm_medium=x&a=2"))
        .header("host", proxy.addr.to_string())
        .header("authorization", "Bearer test-token")
        .body(full(""))
        .unwrap();
    let purged = send(req).await;
    assert!(purged.text().contains("\"purged\":1"), "{}", purged.text());

    // The route without rules keys as it always did: a parameter is a parameter.
    get(&proxy.url("/plain?utm_source=a")).await;
    proxy.stored("/plain?utm_source=a").await;
    let other = get(&proxy.url("/plain?utm_source=b")).await;
    assert!(status(&other).contains("fwd=uri-miss") && !status(&other).contains("key="), "{}", status(&other));
}

#[tokio::test]
async fn a_post_invalidates_the_key_url_of_its_own_and_its_locations() {
    let o = origin()
        .route("/other", |_| async { text(200, "done", &[("location", "/q?utm_source=post")]) })
        .route("/", |req| async move {
            let seen = req.uri().query().unwrap_or("").to_string();
            text(200, &seen, &[("cache-control", "max-age=60")])
        })
        .start()
        .await;
    let proxy = relais(&proxy_to(o.addr).with(r#"cache.key = { drop_params = ["utm_*"] }"#)).await;
    let post = |path: &str| {
        let url = proxy.url(path);
        async move { send(http::Request::post(url).body(full("x")).unwrap()).await }
    };
    for path in ["/p?x=1", "/q"] {
        get(&proxy.url(path)).await;
        proxy.stored(path).await;
    }
    assert_eq!(post("/p?utm_source=a&x=1").await.status, 200);
    assert!(proxy.cached("/p?x=1").await.is_empty(), "the POST's own URL, as the route keys it");
    assert_eq!(post("/other").await.text(), "done");
    assert!(proxy.cached("/q").await.is_empty(), "its Location, as the route keys it");
}

#[tokio::test]
async fn min_uses_stores_a_response_once_its_key_was_asked_that_often() {
    let o = echo_query().await;
    let proxy = relais(&proxy_to(o.addr).with("cache = { min_uses = 3 }")).await;
    for n in 1..=2 {
        let r = get(&proxy.url("/popular")).await;
        assert_eq!(status(&r), "relais; fwd=miss; detail=min-uses", "request {n}");
    }
    settle().await;
    assert!(proxy.cached("/popular").await.is_empty(), "not stored before the third request");
    let third = get(&proxy.url("/popular")).await;
    assert!(status(&third).contains("stored"), "{}", status(&third));
    proxy.stored("/popular").await;
    assert!(status(&get(&proxy.url("/popular")).await).starts_with("relais; hit"));
    assert_eq!(o.total_hits(), 3);
    // Another key counts from one.
    let other = get(&proxy.url("/rare")).await;
    assert!(status(&other).contains("detail=min-uses"), "{}", status(&other));
}
