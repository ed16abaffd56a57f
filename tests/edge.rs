//! The small rules around proxying: `return`, `rewrite`, error pages and
//! maintenance mode, through the real proxy to real origins.

mod support;

use std::time::Duration;

use support::*;

/// An origin that answers with the target it was sent.
async fn echo() -> Origin {
    origin()
        .route("/", |req| async move {
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
            text(200, &target, &[("cache-control", "no-store")])
        })
        .start()
        .await
}

#[tokio::test]
async fn return_answers_with_redirects_and_fixed_bodies() {
    let o = echo().await;
    let conf = proxy_to(o.addr)
        .route("/old/", "o")
        .with(r#"return = { status = 301, location = "https://www.example.com{uri}" }"#)
        .section("[[routes]]\npath = \"/health\"")
        .with(r#"return = { status = 200, body = "{\"ok\":true,\"host\":\"{host}\"}", content_type = "application/json" }"#)
        .section("[[routes]]\npath = \"/gone/\"\npath_regex = \"^/gone/([a-z]+)/(\\\\d+)$\"")
        .with(r#"return = { status = 302, location = "/items/{2}?kind={1}&{query}" }"#)
        .section("[[routes]]\npath = \"/hidden/\"\nreturn = { status = 404 }");
    let proxy = relais(&conf).await;

    let r = get(&proxy.url("/old/a/b?x=1")).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://www.example.com/old/a/b?x=1"));
    let r = get_with(&proxy.url("/health"), &[("host", "shop.test")]).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "{\"ok\":true,\"host\":\"shop.test\"}".to_string()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = get(&proxy.url("/gone/shoes/42?page=2")).await;
    assert_eq!(r.header("location"), Some("/items/42?kind=shoes&page=2"), "captures of path_regex");
    // A path the regex does not match falls to the next route, as nginx's regex locations do.
    let r = get(&proxy.url("/gone/shoes/x")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "/gone/shoes/x".to_string()));
    let r = get(&proxy.url("/hidden/x")).await;
    assert_eq!((r.status.as_u16(), r.text()), (404, "404 Not Found\n".to_string()));
    assert_eq!(o.total_hits(), 1, "only the unmatched path reached the origin");
}

#[tokio::test]
async fn a_return_location_that_is_not_a_url_is_refused_at_load() {
    for (location, says) in [
        ("https://x{hots}", "not a variable"),
        ("/a\\r\\nSet-Cookie: x=1", "not an http(s) URL"),
        ("//evil.example/", "not an http(s) URL"),
    ] {
        let toml = format!(
            "[[routes]]\npath = \"/\"\nreturn = {{ status = 301, location = \"{location}\" }}\n[server]\nlisten = [\"127.0.0.1:0\"]\n"
        );
        let e = relais::Config::from_toml(&toml, "site.toml").unwrap_err().to_string();
        assert!(e.contains("site.toml") && e.contains("routes[0].return.location") && e.contains(says), "{e}");
    }
    let toml = "[[routes]]\npath = \"/\"\n[server]\nlisten = [\"127.0.0.1:0\"]\n";
    let e = relais::Config::from_toml(toml, "site.toml").unwrap_err().to_string();
    assert!(e.contains("routes[0].upstream") && e.contains("missing"), "{e}");
}

#[tokio::test]
async fn rewrites_route_again_send_or_redirect() {
    let (a, b) = (echo().await, echo().await);
    let conf = Conf::new()
        .upstream("a", a.addr)
        .upstream("b", b.addr)
        .route("/", "a")
        .with(
            r#"rewrite = [
  { regex = "^/old/(.*)$", replace = "/new/$1", flag = "last" },
  { regex = "^/p/(\\d+)$", replace = "/product?id=$1", flag = "break" },
  { regex = "^/moved$", replace = "/here", flag = "permanent" },
  { regex = "^/tmp$", replace = "/there?", flag = "redirect" },
  { regex = "^/dots/(.*)$", replace = "/$1", flag = "last" },
  { regex = "^/loop/(.*)$", replace = "/loop/$1", flag = "last" },
]"#,
        )
        .route("/new/", "b")
        .route("/private/", "b")
        .with(r#"guard = { deny = ["all"] }"#);
    let proxy = relais(&conf).await;

    let r = get(&proxy.url("/old/x?q=1")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "/new/x?q=1".to_string()), "last: routed again, to b");
    assert_eq!((a.total_hits(), b.hits("/new/x")), (0, 1));
    let r = get(&proxy.url("/p/7?ref=x")).await;
    assert_eq!(r.text(), "/product?id=7&ref=x", "break: sent as rewritten, the query carried");
    let r = get(&proxy.url("/moved?k=v")).await;
    assert_eq!((r.status.as_u16(), r.header("location")), (301, Some("/here?k=v")));
    let r = get(&proxy.url("/tmp?k=v")).await;
    assert_eq!((r.status.as_u16(), r.header("location")), (302, Some("/there")), "a trailing ? drops the query");
    // The rewritten path is normalised and judged again: it cannot step past the guard.
    let r = get(&proxy.url("/dots/private/x")).await;
    assert_eq!(r.status, 403, "routed again to a route that denies");
    let r = get(&proxy.url("/dots/%2e%2e/private/x")).await;
    assert!(r.status == 400 || r.status == 403, "{}", r.status);
    let r = get(&proxy.url("/loop/x")).await;
    assert_eq!(r.status, 500, "a loop ends");
    assert_eq!(b.hits("/private/x"), 0);
}

#[tokio::test]
async fn error_pages_replace_what_relais_makes_and_origin_errors_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("502.html"), "<h1>We'll be right back</h1>").unwrap();
    std::fs::write(dir.path().join("404.html"), "<h1>Nothing here</h1>").unwrap();
    let pages = echo().await;
    let o = origin()
        .route("/missing", |_| async { text(404, "origin's own 404 with /internal/detail", &[]) })
        .route("/fine", |_| async { text(200, "fine", &[]) })
        .start()
        .await;
    let conf = Conf::new()
        .upstream("o", o.addr)
        .upstream("down", dead_addr())
        .upstream("pages", pages.addr)
        .route("/", "o")
        .with(format!(
            "error_pages = {{ \"404\" = {{ file = \"{}\", status = 200, origin = true }} }}",
            dir.path().join("404.html").display()
        ))
        .route("/down/", "down")
        .route("/remote/", "down")
        .with(r#"error_pages = { "502" = { upstream = "pages", path = "/sorry.html" } }"#)
        .route("/plain/", "o")
        .with(r#"guard = { deny = ["all"] }"#)
        .section(format!("[error_pages]\n\"502\" = \"{}\"", dir.path().join("502.html").display()));
    let proxy = relais(&conf).await;

    let r = get(&proxy.url("/down/x")).await;
    assert_eq!((r.status.as_u16(), r.text()), (502, "<h1>We'll be right back</h1>".to_string()), "the global page");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = get(&proxy.url("/remote/x")).await;
    assert_eq!((r.status.as_u16(), r.text()), (502, "/sorry.html".to_string()), "the route's page, from an upstream");
    let r = get(&proxy.url("/missing")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "<h1>Nothing here</h1>".to_string()), "=200, origin's 404");
    assert!(!r.text().contains("internal"));
    let r = get(&proxy.url("/fine")).await;
    assert_eq!(r.text(), "fine");
    let r = get(&proxy.url("/plain/x")).await;
    assert_eq!((r.status.as_u16(), r.text()), (403, "403 Forbidden\n".to_string()), "no page: the short line");
}

#[tokio::test]
async fn maintenance_answers_503_without_a_reload_except_for_allowed_clients() {
    let o = echo().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("503.html"), "<h1>Down for maintenance</h1>").unwrap();
    let conf = proxy_to(o.addr)
        .route("/api/", "o")
        .with("name = \"api\"")
        .section(format!("[error_pages]\n\"503\" = \"{}\"", dir.path().join("503.html").display()))
        .section("[maintenance]\nallow = [\"10.0.0.0/8\"]\nretry_after = \"2m\"");
    let proxy = relais(&conf).await;
    assert_eq!(get(&proxy.url("/api/x")).await.status, 200);

    let r = proxy.admin("POST", "/maintenance", r#"{"on": true, "route": "api"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&proxy.url("/api/x")).await;
    assert_eq!((r.status.as_u16(), r.text()), (503, "<h1>Down for maintenance</h1>".to_string()));
    assert_eq!(r.header("retry-after"), Some("120"));
    assert_eq!(get(&proxy.url("/other")).await.status, 200, "only that route");
    assert_eq!(proxy.admin("POST", "/maintenance", r#"{"on": true, "route": "nope"}"#).await.status, 404);

    proxy.handle.reload(proxy.handle.config().as_ref().clone()).unwrap();
    assert_eq!(get(&proxy.url("/api/x")).await.status, 503, "a reload keeps it");
    proxy.admin("POST", "/maintenance", r#"{"on": true}"#).await;
    assert_eq!(get(&proxy.url("/other")).await.status, 503, "every route");
    let state = proxy.admin("GET", "/maintenance", "").await.text();
    assert!(state.contains("\"all\":true") && state.contains("api"), "{state}");
    proxy.admin("POST", "/maintenance", r#"{"on": false}"#).await;
    assert_eq!(get(&proxy.url("/api/x")).await.status, 200);
    assert_eq!(o.hits("/api/x"), 2);
}

/// The allow list, the command line and a restart, on the real binary.
#[tokio::test]
async fn maintenance_from_the_command_line_survives_a_restart() {
    let o = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let port = support::process::free_port();
    let admin = support::process::free_port();
    let config = dir.path().join("relais.toml");
    let conf = proxy_to(o.addr)
        .section(format!("[server]\nlisten = [\"127.0.0.1:{port}\"]"))
        .section(format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"t\""))
        .disk(&dir.path().join("cache"));
    std::fs::write(&config, conf.to_string()).unwrap();
    let url = format!("http://127.0.0.1:{port}/x");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(support::process::bin())
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let running = support::process::start(&config, port).await;
    assert_eq!(get(&url).await.status, 200);
    assert_eq!(cli(&["maintenance", "on"]), "maintenance: on for every route\n");
    assert_eq!(get(&url).await.status, 503);
    drop(running);
    let running = support::process::start(&config, port).await;
    assert_eq!(get(&url).await.status, 503, "a restart keeps it");
    assert_eq!(cli(&["maintenance"]), "maintenance: on for every route\n");
    // A loopback client is let through once 127.0.0.1 is allowed (a reload).
    std::fs::write(&config, format!("{conf}\n[maintenance]\nallow = [\"127.0.0.1\"]\n")).unwrap();
    cli(&["reload"]);
    assert_eq!(get(&url).await.status, 200, "an allowed client");
    assert_eq!(cli(&["maintenance", "off"]), "maintenance: off\n");
    drop(running);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// examples/migrated-site, run as written (its addresses moved to the test's):
/// static files with their precompressed sibling, the fallback to the app,
/// redirects, basic auth from its htpasswd, error pages and maintenance.
#[tokio::test]
async fn the_migrated_nginx_site_runs() {
    let app = echo().await;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrated-site");
    let dir = tempfile::tempdir().unwrap();
    let copy = std::process::Command::new("cp").arg("-r").arg(&example).arg(dir.path()).status().unwrap();
    assert!(copy.success());
    let site = dir.path().join("migrated-site");
    let (port, admin) = (support::process::free_port(), support::process::free_port());
    let config = std::fs::read_to_string(site.join("relais.toml"))
        .unwrap()
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:3000", &app.addr.to_string())
        .replace("127.0.0.1:4180", &support::dead_addr().to_string())
        + &format!("\n[cache]\ndisk_path = \"{}\"\n", dir.path().join("cache").display());
    std::fs::write(site.join("relais.toml"), config).unwrap();
    let _running = support::process::start(&site.join("relais.toml"), port).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let shop = [("host", "shop.example.com")];

    let r = get_with(&url("/"), &shop).await;
    assert!(r.status == 200 && r.text().contains("Welcome to the shop"), "index.html from www/");
    let r = get_with(&url("/static/style.css"), &[("host", "shop.example.com"), ("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"), "the .gz sibling");
    let r = get_with(&url("/cart?x=1"), &shop).await;
    assert_eq!(r.text(), "/cart?x=1", "no file: the app");
    let r = get_with(&url("/a?b=c"), &[("host", "www.example.com")]).await;
    assert_eq!((r.status.as_u16(), r.header("location")), (301, Some("http://shop.example.com/a?b=c")));
    let r = get_with(&url("/old/shoes"), &shop).await;
    assert_eq!((r.status.as_u16(), r.header("location")), (301, Some("/new/shoes")));
    let r = get_with(&url("/p/42"), &shop).await;
    assert_eq!(r.header("location"), Some("/product?id=42"));
    assert_eq!(get_with(&url("/health"), &shop).await.text(), "ok");
    let r = get_with(&url("/admin/orders"), &shop).await;
    assert_eq!(
        (r.status.as_u16(), r.header("www-authenticate")),
        (401, Some("Basic realm=\"admin\", charset=\"UTF-8\""))
    );
    let basic = format!("Basic {}", base64_of("admin:change-me"));
    let r = get_with(&url("/admin/orders"), &[("host", "shop.example.com"), ("authorization", &basic)]).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "/admin/orders".to_string()));
    let r = get_with(&url("/reports/q1"), &shop).await;
    assert_eq!(r.status, 500, "its auth upstream is down");

    app.stop();
    let r = get_with(&url("/cart"), &shop).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("catching its breath"), "errors/502.html");
    let on = std::process::Command::new(support::process::bin())
        .args(["maintenance", "on", "-c"])
        .arg(site.join("relais.toml"))
        .output()
        .unwrap();
    assert!(on.status.success(), "{}", String::from_utf8_lossy(&on.stderr));
    let r = get_with(&url("/"), &shop).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (503, Some("600")));
    assert!(r.text().contains("closed for maintenance"));
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A static route's 404 is relais's own: its error page replaces it.
#[tokio::test]
async fn a_missing_file_gets_the_404_page() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/a.txt"), "a").unwrap();
    std::fs::write(dir.path().join("404.html"), "<h1>No such page</h1>").unwrap();
    let conf = Conf::new().section(format!(
        "[[routes]]\npath = \"/\"\nroot = \"{}\"\nerror_pages = {{ \"404\" = \"{}\" }}",
        dir.path().join("www").display(),
        dir.path().join("404.html").display()
    ));
    let proxy = relais(&conf).await;
    assert_eq!(get(&proxy.url("/a.txt")).await.text(), "a");
    let r = get(&proxy.url("/nope.txt")).await;
    assert_eq!((r.status.as_u16(), r.text()), (404, "<h1>No such page</h1>".to_string()));
    let r = send(http::Request::post(proxy.url("/a.txt")).body(full("")).unwrap()).await;
    assert_eq!((r.status.as_u16(), r.header("allow")), (405, Some("GET, HEAD")));
}

/// oauth2-proxy's way: a 401 from auth_request gets the sign-in page, fetched
/// from the auth upstream, with the 401 and its challenge.
#[tokio::test]
async fn a_401_from_auth_request_gets_the_sign_in_page() {
    let app = echo().await;
    let sso = origin()
        .route("/auth", |_| async { text(401, "no", &[("www-authenticate", "Bearer")]) })
        .route("/sign_in", |_| async { text(200, "<form>Sign in</form>", &[("content-type", "text/html")]) })
        .start()
        .await;
    let conf = Conf::new().upstream("app", app.addr).upstream("sso", sso.addr).route("/", "app").with(
        r#"auth_request = { upstream = "sso", path = "/auth" }
error_pages = { "401" = { upstream = "sso", path = "/sign_in" } }"#,
    );
    let proxy = relais(&conf).await;
    let r = get(&proxy.url("/tool")).await;
    assert_eq!((r.status.as_u16(), r.text()), (401, "<form>Sign in</form>".to_string()));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(app.total_hits(), 0);
}
