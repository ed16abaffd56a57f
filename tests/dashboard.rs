//! The dashboard page: its headers over plain HTTP, and the page itself in
//! headless Chromium driven through WebDriver (`chromium` and
//! `chromium-driver`, which scripts/test installs): figures that match
//! `/stats`, a purge through its form, nothing without the token, and
//! nothing for another origin.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

fn origin_page() -> OriginBuilder {
    origin()
        .route("/page", |_| async { text(200, "a cached page", &[("cache-control", "max-age=600")]) })
        .route("/other", |_| async {
            text(200, "<!doctype html><title>another site</title>", &[("content-type", "text/html")])
        })
}

#[tokio::test]
async fn the_page_needs_no_token_and_forbids_framing_and_foreign_code() {
    let o = origin_page().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    let page = get(&proxy.admin_url("/dashboard")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.body.len() < 100 * 1024, "{} bytes", page.body.len());
    let csp = page.header("content-security-policy").unwrap();
    for part in ["default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "{part}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    // The page's one script is the one the policy allows.
    let html = page.text();
    let script = html.split("<script>").nth(1).unwrap().split("</script>").next().unwrap();
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes()));
    assert!(csp.contains(&format!("script-src 'sha256-{hash}'")), "{csp}");

    let root = get(&proxy.admin_url("/")).await;
    assert_eq!(root.status, 303);
    assert_eq!(root.header("location"), Some("/dashboard"));

    assert_eq!(get(&proxy.admin_url("/stats/history")).await.status, 401, "the data needs the token");
    let history: Value = serde_json::from_slice(&proxy.admin("GET", "/stats/history", "").await.body).unwrap();
    assert_eq!((history["every_secs"].as_u64(), history["kept"].as_u64()), (Some(5), Some(180)));
    assert!(history["samples"].is_array());
    // A request from another origin's page, even with the token, gets nothing.
    let foreign = [("authorization", "Bearer test-token"), ("origin", "http://localhost:1")];
    let r = get_with(&proxy.admin_url("/stats"), &foreign).await;
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("requests"));
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let port = process::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, installed by scripts/test)");
        let driver = Driver { child, port };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not listen on {port}");
    }

    async fn browser(&self) -> Client {
        let caps = json!({"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1500",
        ]}});
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of element `#id` once `ok` holds for it (10 s limit).
async fn wait_text(b: &Client, id: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(e) = b.find(Locator::Id(id)).await {
            last = e.text().await.unwrap_or_default();
            if ok(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("#{id} is {last:?}");
}

/// Accepts the confirm() the last click opened.
async fn confirm(b: &Client) {
    for _ in 0..50 {
        if b.accept_alert().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no confirmation asked");
}

#[tokio::test]
async fn figures_match_stats_and_a_purge_through_the_form_empties_the_entry() {
    let o = origin_page().start().await;
    // A cluster whose other node is down: the page shows the ring, and this node fetches for itself.
    let cluster =
        "[cluster]\nnode = \"a\"\npeers = { a = \"127.0.0.1:1\", b = \"127.0.0.1:2\" }\nsecret = \"0123456789abcdef\"";
    let proxy = relais(proxy_to(o.addr).section(cluster)).await;
    let page = proxy.url("/page");
    get(&page).await;
    proxy.stored(&page).await;
    assert!(get(&page).await.header("cache-status").unwrap().contains("hit"));
    let driver = Driver::start().await;
    let b = driver.browser().await;

    b.goto(&proxy.admin_url("/")).await.unwrap();
    b.find(Locator::Id("token")).await.unwrap().send_keys("test-token").await.unwrap();
    b.find(Locator::Css("#login-form button")).await.unwrap().click().await.unwrap();
    let s = proxy.stats().await;
    let total = s["requests"]["total"].as_u64().unwrap().to_string();
    wait_text(&b, "requests-total", |t| t == total).await;
    let version = format!("v{}", s["relais"]["version"].as_str().unwrap());
    wait_text(&b, "version", |t| t == version).await;
    wait_text(&b, "upstreams", |t| t.contains(&o.addr.to_string()) && t.contains("up")).await;
    wait_text(&b, "cluster-line", |t| t.contains("node a · sharding rendezvous · no purge bus")).await;
    wait_text(&b, "cluster", |t| t.contains("self") && t.contains("127.0.0.1:2")).await;

    b.find(Locator::Id("lookup-url")).await.unwrap().send_keys(&page).await.unwrap();
    b.find(Locator::Css("#lookup-form button")).await.unwrap().click().await.unwrap();
    wait_text(&b, "lookup-result", |t| t.contains("\"status\": 200")).await;

    b.find(Locator::Id("purge-target")).await.unwrap().send_keys(&page).await.unwrap();
    b.find(Locator::Css("#purge-form button")).await.unwrap().click().await.unwrap();
    confirm(&b).await;
    wait_text(&b, "purge-result", |t| t == "purged 1 entry").await;
    assert!(get(&page).await.header("cache-status").unwrap().contains("miss"), "the next request is a miss");
    assert_eq!(proxy.stats().await["purges"]["url"]["hard"], 1);

    // A refused reload shows why: this configuration was built in code, with no file to read.
    b.find(Locator::Id("reload")).await.unwrap().click().await.unwrap();
    confirm(&b).await;
    wait_text(&b, "reload-result", |t| t.starts_with("refused: ")).await;
    wait_text(&b, "reloads", |t| t == "0 / 1").await;

    let total = proxy.stats().await["requests"]["total"].as_u64().unwrap().to_string();
    wait_text(&b, "requests-total", |t| t == total).await;
    b.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    let png = b.screenshot().await.unwrap();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot: {}", shot.display());
    b.close().await.unwrap();
}

#[tokio::test]
async fn without_the_token_nothing_shows_and_another_origin_reads_nothing() {
    let o = origin_page().start().await;
    let proxy = relais(&proxy_to(o.addr)).await;
    get(&proxy.url("/page")).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;

    b.goto(&proxy.admin_url("/dashboard")).await.unwrap();
    assert!(b.find(Locator::Id("token")).await.unwrap().is_displayed().await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.find(Locator::Id("main")).await.unwrap().is_displayed().await.unwrap());
    let figures = "return [...document.querySelectorAll('main b, main td, main svg *, main .result, header small')]\
                   .map(e => e.textContent).join('')";
    assert_eq!(b.execute(figures, vec![]).await.unwrap(), "", "no figure anywhere in the page");

    // A wrong token: refused, back to the prompt.
    b.find(Locator::Id("token")).await.unwrap().send_keys("guess").await.unwrap();
    b.find(Locator::Css("#login-form button")).await.unwrap().click().await.unwrap();
    wait_text(&b, "login-error", |t| t == "Forbidden").await;
    assert!(!b.find(Locator::Id("main")).await.unwrap().is_displayed().await.unwrap());

    // A page of another origin (the proxy's own listener) that knows the token.
    b.goto(&proxy.url("/other")).await.unwrap();
    let read = r#"
        const [url, done] = arguments;
        const auth = { Authorization: 'Bearer test-token' };
        const tries = [
            fetch(url + '/stats', { headers: auth }).then(r => r.text()),
            fetch(url + '/stats', { mode: 'no-cors' }).then(r => r.text()),
            fetch(url + '/purge', { method: 'POST', body: '{"all": true}', headers: { 'content-type': 'text/plain' } }).then(r => r.text()),
        ];
        Promise.allSettled(tries).then(all => done(all.map(r => r.status === 'fulfilled' ? r.value : 'blocked')));
    "#;
    let got = b.execute_async(read, vec![json!(proxy.admin_url(""))]).await.unwrap();
    assert_eq!(got, json!(["blocked", "", "blocked"]), "nothing readable");
    let s = proxy.stats().await;
    assert_eq!(s["purges"]["all"]["hard"], 0, "the cross-site POST purged nothing");
    b.close().await.unwrap();
}
