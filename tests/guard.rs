//! The guard from outside: real clients (and raw sockets where a client would
//! refuse to misbehave), a real origin that counts what reaches it.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use support::process;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An origin that answers every path with the X-Forwarded-For and path it saw.
async fn echo() -> Origin {
    origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let xff = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let path = req.uri().path().to_string();
            text(200, &format!("{path} {xff}"), &[])
        })
        .start()
        .await
}

/// Writes `request` and reads until relais closes or is quiet for 500ms.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_until_quiet(&mut tcp, Duration::from_millis(500)).await
}

fn status_of(response: &str) -> &str {
    response.lines().next().unwrap_or("").get(9..12).unwrap_or("")
}

async fn metrics(proxy: &Relais) -> String {
    proxy.admin("GET", "/metrics", "").await.text()
}

#[tokio::test]
async fn a_denied_block_gets_403_and_the_origin_sees_nothing() {
    let o = echo().await;
    let proxy = relais(proxy_to(o.addr).section("[guard]\ndeny = [\"127.0.0.0/8\", \"::1\"]\n")).await;
    let r = get(&proxy.url("/")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "403 Forbidden\n");
    assert_eq!(o.total_hits(), 0);
    assert!(metrics(&proxy).await.contains("relais_guard_rejections_total{reason=\"access\",route=\"none\"} 1"));
    // The narrower block wins inside the wider, whatever the order.
    let proxy = relais(proxy_to(o.addr).section("[guard]\ndeny = [\"all\"]\nallow = [\"127.0.0.1\"]\n")).await;
    assert_eq!(get(&proxy.url("/")).await.status, 200);
}

#[tokio::test]
async fn real_ip_from_a_trusted_forwarded_for_decides_and_is_what_the_origin_is_told() {
    let o = echo().await;
    let guard = "[guard]\nreal_ip = { trusted = [\"127.0.0.1\", \"10.0.0.0/8\"] }\ndeny = [\"203.0.113.0/24\"]\n";
    let proxy = relais(proxy_to(o.addr).section(guard)).await;
    // The rightmost untrusted address is the client: denied.
    let r = get_with(&proxy.url("/"), &[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.1.1.1")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(o.total_hits(), 0);
    // A forged address on the left does not help: the rightmost untrusted one counts.
    let r = get_with(&proxy.url("/"), &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")]).await;
    assert_eq!(r.status, 200);
    // The origin is told the chain up to the client, without relais's own side.
    assert_eq!(r.text(), "/ 203.0.113.9, 198.51.100.1");
    let r = get_with(&proxy.url("/"), &[("x-forwarded-for", "198.51.100.1, 10.0.0.3")]).await;
    assert_eq!(r.text(), "/ 198.51.100.1");
}

#[tokio::test]
async fn an_untrusted_peer_forwarded_for_is_ignored() {
    let o = echo().await;
    let guard = "[guard]\nreal_ip = { trusted = [\"10.0.0.0/8\"] }\ndeny = [\"203.0.113.0/24\"]\n";
    let proxy = relais(proxy_to(o.addr).section(guard)).await;
    let r = get_with(&proxy.url("/"), &[("x-forwarded-for", "10.0.0.1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "/ 10.0.0.1, 127.0.0.1", "the claim is passed on, with the real peer after it");
    let proxy =
        relais(proxy_to(o.addr).section("[guard]\ndeny = [\"127.0.0.1\"]\nreal_ip = { trusted = [\"10.0.0.0/8\"] }"))
            .await;
    let r = get_with(&proxy.url("/"), &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(r.status, 403, "claiming another address does not get an untrusted peer past deny");
}

fn proxy_v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_give_the_client_address() {
    let o = echo().await;
    let proxy = relais(proxy_to(o.addr).section(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nproxy_protocol = true\n[guard]\ndeny = [\"198.51.100.0/24\"]\n",
    ))
    .await;
    let get = b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let v1 = |src: &str| [format!("PROXY TCP4 {src} 127.0.0.1 5555 80\r\n").as_bytes(), get].concat();
    let r = raw(proxy.addr, &v1("192.0.2.44")).await;
    assert_eq!(status_of(&r), "200", "{r}");
    assert!(r.ends_with("/x 192.0.2.44"), "{r}");
    assert_eq!(status_of(&raw(proxy.addr, &v1("198.51.100.3")).await), "403");
    let r = raw(proxy.addr, &[proxy_v2([192, 0, 2, 45], 4444), get.to_vec()].concat()).await;
    assert_eq!(status_of(&r), "200", "{r}");
    assert!(r.ends_with("/x 192.0.2.45"), "{r}");
    assert_eq!(status_of(&raw(proxy.addr, &[proxy_v2([198, 51, 100, 9], 1), get.to_vec()].concat()).await), "403");
    // IPv6 in v1, and the balancer's own check (UNKNOWN) keeps the peer.
    let r = raw(proxy.addr, &[b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n".as_slice(), get].concat()).await;
    assert!(r.ends_with("/x 2001:db8::7"), "{r}");
    let r = raw(proxy.addr, &[b"PROXY UNKNOWN\r\n".as_slice(), get].concat()).await;
    assert!(r.ends_with("/x 127.0.0.1"), "{r}");
    // Without a header, or with a broken one: closed, nothing answered, nothing forwarded.
    let before = o.total_hits();
    assert_eq!(raw(proxy.addr, get).await, "");
    assert_eq!(raw(proxy.addr, &[b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\n".as_slice(), get].concat()).await, "");
    assert_eq!(o.total_hits(), before);
}

#[tokio::test]
async fn rules_by_path_regex_header_and_method_and_log_mode_passes() {
    let o = echo().await;
    let rules = r#"
[[guard.rules]]
name = "wp"
path_regex = "^/wp-(login|admin)"
status = 404
body = "nothing here"

[[guard.rules]]
header = { "x-scanner" = "" }

[[guard.rules]]
name = "no-sqlmap"
user_agent_regex = "(?i)sqlmap"
action = "deny"

[[guard.rules]]
name = "office"
cidr = ["127.0.0.1"]
path_prefix = "/office/"
action = "allow"

[[guard.rules]]
name = "try-me"
query_regex = "debug=1"
action = "log"

[[guard.rules]]
method = ["DELETE", "PUT"]
status = 405
"#;
    let proxy = relais(proxy_to(o.addr).section(format!("[guard]\n{rules}"))).await;
    let r = get(&proxy.url("/wp-login.php")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (404, "nothing here\n"));
    assert_eq!(get_with(&proxy.url("/a"), &[("x-scanner", "yes")]).await.status, 403);
    assert_eq!(get_with(&proxy.url("/a"), &[("user-agent", "SQLMap/1.7")]).await.status, 403);
    // allow skips the rules after it.
    assert_eq!(get_with(&proxy.url("/office/a"), &[("x-scanner", "1")]).await.status, 403, "x-scanner comes first");
    let put = Request::put(proxy.url("/office/a")).body(full("")).unwrap();
    assert_eq!(send(put).await.status, 200, "allow skipped the method rule");
    let put = Request::put(proxy.url("/a")).body(full("")).unwrap();
    assert_eq!(send(put).await.status, 405);
    // log: passes, and is counted as a dry run.
    let r = get(&proxy.url("/a?debug=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(o.hits("/wp-login.php"), 0);
    let m = metrics(&proxy).await;
    assert!(m.contains("relais_guard_dry_run_total{reason=\"rule\",route=\"none\"} 1"), "{m}");
    assert!(m.contains("relais_guard_rejections_total{reason=\"rule\",route=\"none\"} 5"), "{m}");
}

#[tokio::test]
async fn normalised_paths_cannot_slip_past_a_rule_and_the_origin_sees_the_normal_path() {
    let o = echo().await;
    let toml = proxy_to(o.addr)
        .section("[[guard.rules]]\npath_prefix = \"/private/\"")
        .route("/admin/", "o")
        .with("guard = { deny = [\"all\"] }");
    let proxy = relais(&toml).await;
    for (path, want) in [
        ("/x/../private/", "403"),
        ("/%70rivate/", "403"),
        ("/./private/", "403"),
        ("//private/", "403"),
        ("/private//", "403"),
        ("/%2e%2e/private/a", "403"),
        ("/x/..%2Fprivate/", "400"),
        ("/x/..%5Cprivate/", "400"),
        // Tomcat reads `..;/` as `..`: a dot-segment with parameters is refused.
        ("/x/..;/private/", "400"),
        ("/private%00/", "400"),
        ("/a%zz", "400"),
        ("/x/../admin/", "403"),
        ("/%61dmin/", "403"),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
        let r = raw(proxy.addr, req.as_bytes()).await;
        assert_eq!(status_of(&r), want, "{path}: {r}");
    }
    assert_eq!(o.total_hits(), 0, "nothing reached the origin");
    let r = raw(proxy.addr, b"GET /a/./b/../c//d%7e?q=%2F HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await;
    assert!(r.ends_with("/a/c/d~ 127.0.0.1"), "{r}");
    assert_eq!(o.hits("/a/c/d~"), 1);
    let m = metrics(&proxy).await;
    assert!(m.contains("relais_guard_rejections_total{reason=\"path\",route=\"none\"} 5"), "{m}");
    assert!(m.contains("relais_guard_rejections_total{reason=\"access\",route=\"*/admin/\"} 2"), "{m}");
}

/// A `/private/` route or rule covers the directory itself: `/private`, in
/// every spelling that normalises to it, gets nginx's 301 to `/private/`
/// (query kept) before any other route is considered, and a rule on
/// `/private/` holds for it. They used to reach the `/` route's origin.
#[tokio::test]
async fn a_directory_without_its_slash_is_redirected_or_refused_in_every_spelling() {
    let o = echo().await;
    let toml = proxy_to(o.addr)
        .with("guard = { rules = [{ path_prefix = \"/internal/\" }] }")
        .section("[[guard.rules]]\npath_prefix = \"/secret/\"")
        .route("/private/", "o")
        .with("guard = { deny = [\"all\"] }")
        .route("/exact/", "o")
        .route("/exact", "o");
    let proxy = relais(&toml).await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    for (path, want, location) in [
        ("/private", "301", Some("/private/")),
        ("/./private", "301", Some("/private/")),
        ("//private", "301", Some("/private/")),
        ("/x/../private", "301", Some("/private/")),
        ("/%2e/private", "301", Some("/private/")),
        ("/x/%2E%2e/private", "301", Some("/private/")),
        ("/%70rivate", "301", Some("/private/")),
        ("/private?a=1&b", "301", Some("/private/?a=1&b")),
        ("/private/.", "403", None),
        ("/private/", "403", None),
        ("/%2fprivate", "400", None),
        ("/private%2F", "400", None),
        ("/secret", "403", None),
        ("/./secret", "403", None),
        ("//secret", "403", None),
        ("/secret/.", "403", None),
        ("/%73ecret?x=1", "403", None),
        ("/internal", "403", None),
        ("//internal", "403", None),
    ] {
        let r = raw(proxy.addr, request(path).as_bytes()).await;
        assert_eq!(status_of(&r), want, "{path}: {r}");
        let got = r.lines().find_map(|l| l.strip_prefix("location: "));
        assert_eq!(got, location, "{path}: {r}");
    }
    assert_eq!(o.total_hits(), 0, "nothing reached the origin");
    // A route for exactly the path without its slash is the operator's choice: it wins, as an nginx location does.
    let r = raw(proxy.addr, request("/exact").as_bytes()).await;
    assert_eq!(status_of(&r), "200", "{r}");
    assert_eq!(o.hits("/exact"), 1);

    // HTTP/2 `:path`, the same.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    for (path, want) in
        [("/private", 301), ("/./private", 301), ("//private", 301), ("/private/.", 403), ("/secret", 403)]
    {
        let req = Request::get(format!("http://a.test{path}")).body(()).unwrap();
        let (res, _) = h2.send_request(req, true).unwrap();
        let res = res.await.unwrap();
        assert_eq!(res.status().as_u16(), want, "h2 {path}");
        if want == 301 {
            assert_eq!(res.headers()["location"], "/private/", "h2 {path}");
        }
    }
    assert_eq!(o.total_hits(), 1);
}

/// Route prefixes match whole segments: `/api` is `/api`, `/api/…` and
/// `/api?…`, never `/api..` or `/apix`. With `strip_prefix`, `/api../admin/x`
/// reached the origin as `/../admin/x`, past a rule on `/api/admin`.
#[tokio::test]
async fn route_prefixes_match_whole_segments_so_strip_prefix_cannot_reopen_dots() {
    let site = echo().await;
    let api = echo().await;
    let toml = Conf::new()
        .section("[[guard.rules]]\npath_prefix = \"/api/admin\"")
        .upstream("site", site.addr)
        .upstream("api", api.addr)
        .route_all("site")
        .route("/api", "api")
        .with("strip_prefix = true");
    let proxy = relais(&toml).await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    for (path, want) in [
        ("/api", "api /"),
        ("/api/", "api /"),
        ("/api/x", "api /x"),
        ("/api?q=1", "api /"),
        ("/api../admin/x", "site /api../admin/x"),
        ("/api..", "site /api.."),
        ("/apix", "site /apix"),
        ("/api/../admin/x", "site /admin/x"),
    ] {
        let r = raw(proxy.addr, request(path).as_bytes()).await;
        assert_eq!(status_of(&r), "200", "{path}: {r}");
        let seen = r.rsplit("\r\n").next().unwrap().trim_end_matches(" 127.0.0.1");
        let (which, origin) = if api.hits(seen) > 0 { ("api", &api) } else { ("site", &site) };
        assert!(origin.hits(seen) > 0, "{path}: {r}");
        assert_eq!(format!("{which} {seen}"), want, "{path}");
    }
    assert_eq!(status_of(&raw(proxy.addr, request("/api/admin/x").as_bytes()).await), "403");
    assert_eq!(api.hits("/../admin/x") + api.hits("/admin/x"), 0, "the api origin never saw its admin");
}

/// Tomcat, Jetty and other servlet containers drop a segment's parameters
/// before they route: `/private;x/acct` is their `/private/acct` and `/admin;x`
/// their `/admin`. Both reached the `/` route's origin, past routes and rules
/// on `/private/` and `/admin` (a route on `/admin` covered `/admin;x` before
/// prefixes matched whole segments). Parameters before the last segment are
/// refused, as `..;` is; on the last one they belong to its segment, so a
/// route or rule on the segment covers them.
#[tokio::test]
async fn a_segment_with_parameters_cannot_slip_past_a_route_or_rule() {
    let o = echo().await;
    let toml = proxy_to(o.addr)
        .section("[[guard.rules]]\npath_prefix = \"/secret/\"\n[[guard.rules]]\npath = \"/login\"")
        .route("/private/", "o")
        .with("guard = { deny = [\"all\"] }")
        .route("/admin", "o")
        .with("guard = { deny = [\"all\"] }");
    let proxy = relais(&toml).await;
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    for (path, want, location) in [
        ("/private;x/acct", "400", None),
        ("/private/;x/acct", "400", None),
        ("/secret;jsessionid=1/a", "400", None),
        ("/a;b/private/acct", "400", None),
        ("/admin;x", "403", None),
        ("/admin;jsessionid=AB?q=1", "403", None),
        ("/login;x", "403", None),
        ("/secret;x", "403", None),
        ("/private;x", "301", Some("/private/")),
        ("/private;x?a=1", "301", Some("/private/?a=1")),
    ] {
        let r = raw(proxy.addr, request(path).as_bytes()).await;
        assert_eq!(status_of(&r), want, "{path}: {r}");
        let got = r.lines().find_map(|l| l.strip_prefix("location: "));
        assert_eq!(got, location, "{path}: {r}");
    }
    assert_eq!(o.total_hits(), 0, "nothing reached the origin");
    let r = raw(proxy.addr, request("/shop/cart.do;jsessionid=AB12?x=1").as_bytes()).await;
    assert!(r.ends_with("/shop/cart.do;jsessionid=AB12 127.0.0.1"), "a session in the last segment passes: {r}");
}

/// Rules and zones that read the Host header read the host the request is
/// routed, keyed and sent by: an absolute-form target names it over Host, and
/// HTTP/2 carries it in `:authority`, with no Host at all. A rule on Host was
/// passed by `GET http://admin.test/` with `Host: www.test`, and a zone keyed
/// by Host limited no HTTP/2 client.
#[tokio::test]
async fn rules_and_zones_on_host_see_the_host_the_request_is_for() {
    let o = echo().await;
    let toml = proxy_to(o.addr).with("limit_req = [\"by_host\"]").section(
        "[[guard.rules]]\nheader = { host = \"^admin\\\\.\" }\n[[limit_req]]\nname = \"by_host\"\nkey = \"header:host\"\nrate = \"1r/m\"",
    );
    let proxy = relais(&toml).await;
    let r = raw(proxy.addr, b"GET http://admin.test/x HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&r), "403", "{r}");
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut ask = |host: &str| {
        let (res, _) = h2.send_request(Request::get(format!("http://{host}/x")).body(()).unwrap(), true).unwrap();
        async move { res.await.unwrap().status().as_u16() }
    };
    assert_eq!(ask("admin.test").await, 403, "HTTP/2 :authority");
    assert_eq!(ask("shop.test").await, 200);
    assert_eq!(ask("shop.test").await, 429, "one a minute per host, over HTTP/2 too");
    assert_eq!(o.hits("/x"), 1);
}

/// A literal backslash is what `%5C` is: refused with `reject_encoded_slashes`
/// (an origin that reads `\` as `/` would see `/private/acct`), kept encoded
/// without it. It used to be forwarded as it came, past a `/private/` rule.
#[tokio::test]
async fn a_raw_backslash_is_refused_as_an_encoded_one_is() {
    let o = echo().await;
    let rule = "[[guard.rules]]\npath_prefix = \"/private/\"\n";
    let proxy = relais(proxy_to(o.addr).section(rule)).await;
    for path in ["/x/..\\private/acct", "/static/..\\account", "\\private/", "/a\\b"] {
        let r = raw(proxy.addr, format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
        assert_eq!(status_of(&r), "400", "{path}: {r}");
    }
    assert_eq!(o.total_hits(), 0);
    let open = relais(proxy_to(o.addr).section(format!("[guard]\nreject_encoded_slashes = false\n{rule}"))).await;
    let r = raw(open.addr, b"GET /x/..\\private/acct HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await;
    assert!(r.ends_with("/x/..%5Cprivate/acct 127.0.0.1"), "kept encoded, as %5C is: {r}");
}

#[tokio::test]
async fn long_targets_get_414_and_methods_405_with_allow() {
    let o = echo().await;
    let toml = proxy_to(o.addr)
        .section("[guard]\nmax_uri_length = \"1KiB\"")
        .route("/ro/", "o")
        .with("methods = [\"GET\", \"OPTIONS\"]");
    let proxy = relais(&toml).await;
    let long = format!("/{}", "a".repeat(1100));
    assert_eq!(get(&proxy.url(&long)).await.status, 414);
    assert_eq!(get(&proxy.url(&long[..900])).await.status, 200);
    let r = send(Request::post(proxy.url("/ro/x")).body(full("x")).unwrap()).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, OPTIONS, HEAD"));
    assert_eq!(send(Request::head(proxy.url("/ro/x")).body(full("")).unwrap()).await.status, 200);
    assert_eq!(o.hits("/ro/x"), 1);
}

/// `n` requests at once on one HTTP/2 connection; the statuses, and when each answer came.
async fn burst(url: &str, n: usize) -> Vec<(u16, Duration, Option<String>)> {
    let client = h2_client();
    // One request first so that the connection exists before the clock starts.
    let _ = send_with(&client, Request::get(url.replace("/r", "/warm")).body(full("")).unwrap()).await;
    let start = Instant::now();
    let all = (0..n).map(|_| {
        let client = client.clone();
        async move {
            let r = send_with(&client, Request::get(url).body(full("")).unwrap()).await;
            (r.status.as_u16(), start.elapsed(), r.header("retry-after").map(str::to_string))
        }
    });
    futures_util::future::join_all(all).await
}

fn zone(name: &str, settings: &str) -> String {
    format!("[[limit_req]]\nname = \"{name}\"\n{settings}\n")
}

#[tokio::test]
async fn five_a_second_without_burst_lets_one_of_twenty_through() {
    let o = echo().await;
    let toml = proxy_to(o.addr)
        .section(zone("per_ip", "rate = \"5r/s\"\nburst = 0"))
        .route("/r", "o")
        .with("limit_req = [\"per_ip\"]");
    let proxy = relais(&toml).await;
    let got = burst(&proxy.url("/r"), 20).await;
    let passed = got.iter().filter(|g| g.0 == 200).count();
    let refused: Vec<_> = got.iter().filter(|g| g.0 == 429).collect();
    assert_eq!((passed, refused.len()), (1, 19), "{got:?}");
    assert!(refused.iter().all(|g| g.2.as_deref() == Some("1")), "Retry-After: {got:?}");
    assert_eq!(o.hits("/r"), 1);
    let m = metrics(&proxy).await;
    assert!(m.contains("relais_guard_rejections_total{reason=\"limit_req\",route=\"*/r\"} 19"), "{m}");
}

#[tokio::test]
async fn burst_with_nodelay_passes_at_once_and_without_it_waits_its_turn() {
    let o = echo().await;
    let toml = proxy_to(o.addr)
        .section(zone("fast", "rate = \"4r/s\"\nburst = 3\nnodelay = true"))
        .section(zone("paced", "rate = \"4r/s\"\nburst = 3"))
        .section(zone("half", "rate = \"4r/s\"\nburst = 3\ndelay = 1\nstatus = 503"))
        .route("/r", "o")
        .with("limit_req = [\"fast\"]")
        .route("/slow/r", "o")
        .with("limit_req = [\"paced\"]")
        .route("/half/r", "o")
        .with("limit_req = [\"half\"]");
    let proxy = relais(&toml).await;
    let fast = burst(&proxy.url("/r"), 8).await;
    let passed: Vec<_> = fast.iter().filter(|g| g.0 == 200).collect();
    assert_eq!(passed.len(), 4, "{fast:?}");
    assert!(passed.iter().all(|g| g.1 < Duration::from_millis(200)), "nodelay: {fast:?}");

    let paced = burst(&proxy.url("/slow/r"), 8).await;
    let mut passed: Vec<Duration> = paced.iter().filter(|g| g.0 == 200).map(|g| g.1).collect();
    passed.sort();
    assert_eq!(passed.len(), 4, "{paced:?}");
    // Admitted at the rate: about 0, 250, 500 and 750ms.
    assert!(passed[0] < Duration::from_millis(200), "{paced:?}");
    assert!(passed[3] >= Duration::from_millis(600), "{paced:?}");
    assert!(paced.iter().filter(|g| g.0 == 429).all(|g| g.1 < Duration::from_millis(200)), "refusals are at once");

    let half = burst(&proxy.url("/half/r"), 8).await;
    let mut passed: Vec<Duration> = half.iter().filter(|g| g.0 == 200).map(|g| g.1).collect();
    passed.sort();
    assert_eq!((passed.len(), half.iter().filter(|g| g.0 == 503).count()), (4, 4), "{half:?}");
    // delay = 1: two at once, then at the rate.
    assert!(passed[1] < Duration::from_millis(200) && passed[2] >= Duration::from_millis(150), "{half:?}");
}

#[tokio::test]
async fn a_dry_run_zone_refuses_nothing_and_cache_hits_count_only_when_the_zone_says() {
    let o = origin().text("/c", "cached").start().await;
    let toml = Conf::new()
        .section(zone("origin_only", "rate = \"1r/m\"\ncount_hits = false"))
        .section(zone("dry", "rate = \"1r/m\"\ndry_run = true"))
        .upstream("o", o.addr)
        .route("/c", "o")
        .with("limit_req = [\"origin_only\"]\ncache = { default_ttl = \"1m\" }")
        .route("/d", "o")
        .with("limit_req = [\"dry\"]");
    let proxy = relais(&toml).await;
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/c")).await.status, 200, "hits do not count");
    }
    assert_eq!(get(&proxy.url("/c?other")).await.status, 429, "a second miss does");
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/d")).await.status, 404, "the origin's own answer: nothing refused");
    }
    let m = metrics(&proxy).await;
    assert!(m.contains("relais_guard_dry_run_total{reason=\"limit_req\",route=\"*/d\"} 2"), "{m}");
}

/// A zone keyed by a header remembered each key whole: `max_keys` (100,000)
/// keys of up to 64 KiB (the header size) are 6 GiB, where nginx's zone is a
/// size in bytes. A long key is remembered by its SHA-256 and still limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_keyed_by_long_headers_stays_small() {
    let o = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let zone = "[[limit_req]]\nname = \"k\"\nkey = \"header:x-key\"\nrate = \"1r/m\"\n[guard]\nlimit_req = [\"k\"]\n";
    let path = dir.path().join("relais.toml");
    process::write(&path, &process::config(dir.path(), port, o.addr, zone));
    let child = process::start(&path, port).await;
    let url = format!("http://127.0.0.1:{port}/");
    let long = |i: usize| format!("{i:08}{}", "k".repeat(56 << 10));
    let client = client();
    let ask = |i: usize| send_with(&client, Request::get(&url).header("x-key", long(i)).body(full("")).unwrap());
    assert_eq!(ask(0).await.status, 200);
    assert_eq!(ask(0).await.status, 429, "a long key is limited as any other");
    let start = process::rss_kib(child.pid());
    for batch in 0..375 {
        let four = (1..=4).map(|i| ask(batch * 4 + i));
        for r in futures_util::future::join_all(four).await {
            assert_eq!(r.status, 200);
        }
    }
    let grown = process::rss_kib(child.pid()).saturating_sub(start);
    assert!(grown < 24 * 1024, "1,500 keys of 56 KiB grew RSS by {grown} KiB");
}

#[tokio::test]
async fn limit_conn_counts_requests_in_progress() {
    let o = origin().late("/slow", Duration::from_millis(400), "slow").start().await;
    let toml = proxy_to(o.addr).section("[[limit_conn]]\nname = \"two\"\nmax = 2\n[guard]\nlimit_conn = [\"two\"]\n");
    let proxy = relais(&toml).await;
    let client = client();
    let all = (0..5).map(|_| send_with(&client, Request::get(proxy.url("/slow")).body(full("")).unwrap()));
    let got: Vec<u16> = futures_util::future::join_all(all).await.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(got.iter().filter(|s| **s == 200).count(), 2, "{got:?}");
    assert_eq!(got.iter().filter(|s| **s == 503).count(), 3, "{got:?}");
    assert_eq!(get(&proxy.url("/slow")).await.status, 200, "places are given back");
}

#[tokio::test]
async fn past_max_connections_relais_stops_accepting_and_resumes() {
    let o = echo().await;
    let proxy = relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = 2\n")).await;
    let a = TcpStream::connect(proxy.addr).await.unwrap();
    let _b = TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"GET /c HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
    assert!(early.is_err(), "answered past the cap");
    drop(a);
    let r = read_until_quiet(&mut c, Duration::from_secs(2)).await;
    assert_eq!(status_of(&r), "200", "served once a place was free: {r}");
}

#[tokio::test]
async fn a_kept_alive_connection_closes_after_max_requests() {
    let o = echo().await;
    let proxy = relais(proxy_to(o.addr).section("[guard]\nmax_requests_per_connection = 3\n")).await;
    let one = b"GET /k HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let r = raw(proxy.addr, &one.repeat(5)).await;
    assert_eq!(r.matches("HTTP/1.1 200").count(), 3, "{r}");
    assert_eq!(r.matches("connection: close").count(), 1, "the last answer says so: {r}");
    assert_eq!(o.hits("/k"), 3);
}

#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_minimum_rate_gets_408() {
    let o = origin()
        .route("/up", |req: Request<hyper::body::Incoming>| async move {
            use http_body_util::BodyExt;
            let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            text(200, &format!("read {n}"), &[])
        })
        .start()
        .await;
    let toml = proxy_to(o.addr).section("[guard]\nbody_timeout = \"1s\"\nbody_min_rate = \"10KiB\"\n");
    let proxy = relais(&toml).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n").await.unwrap();
    let start = tokio::time::Instant::now();
    let mut answer = String::new();
    for _ in 0..40 {
        if tcp.write_all(&[b'x'; 100]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
    }
    assert_eq!(status_of(&answer), "408", "{answer:?}");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "cut off by the rate, not the timeout: {took:?}");
}

/// `body_min_rate` is on by default (500 bytes per second, as Apache's
/// mod_reqtimeout): a byte every half second never trips `body_timeout`, but
/// is cut off once the waiting passes `body_timeout` plus a second per 500
/// bytes.
#[tokio::test(start_paused = true)]
async fn a_trickling_upload_is_cut_off_by_default() {
    let o = origin()
        .route("/up", |req: Request<hyper::body::Incoming>| async move {
            use http_body_util::BodyExt;
            let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            text(200, &format!("read {n}"), &[])
        })
        .start()
        .await;
    let proxy = relais(proxy_to(o.addr).section("[guard]\nbody_timeout = \"2s\"\n")).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    for _ in 0..12 {
        if tcp.write_all(b"x").await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await {
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
    }
    assert_eq!(status_of(&answer), "408", "{answer:?}");
}

#[tokio::test]
async fn the_admin_listener_has_its_own_lists() {
    let proxy = relais("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"test-token\"\ndeny = [\"127.0.0.1\"]\n").await;
    assert_eq!(get(&proxy.admin_url("/health")).await.status, 403);
    assert_eq!(proxy.admin("POST", "/purge", "{\"all\": true}").await.status, 403);
}

#[tokio::test]
async fn rules_file_is_read_relative_to_the_config_and_again_on_reload() {
    let o = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[[rules]]\npath_prefix = \"/one\"\n").unwrap();
    let config = dir.path().join("relais.toml");
    let cache = dir.path().join("cache");
    let text = proxy_to(o.addr)
        .with("limit_req = [\"z\"]")
        .section("[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"")
        .disk(&cache)
        .section("[guard]\nrules_file = \"rules.toml\"\n[[limit_req]]\nname = \"z\"\nrate = \"1r/m\"\nburst = 1\nnodelay = true")
        .to_string();
    std::fs::write(&config, text).unwrap();
    let handle = relais::start(relais::Config::load(&config).unwrap()).await.unwrap();
    let url = |p: &str| format!("http://{}{p}", handle.addrs()[0]);
    assert_eq!(get(&url("/one")).await.status, 403);
    assert_eq!(get(&url("/two")).await.status, 200);
    std::fs::write(&rules, "[[rules]]\npath_prefix = \"/two\"\n").unwrap();
    handle.reload_from_source().unwrap();
    assert_eq!(get(&url("/one")).await.status, 200, "the zone, unchanged, kept its count across the reload");
    assert_eq!(get(&url("/two")).await.status, 403);
    assert_eq!(get(&url("/three")).await.status, 429);
    std::fs::write(&rules, "[[rules]]\npath_regex = \"(\"\n").unwrap();
    let err = handle.reload_from_source().unwrap_err();
    assert!(err.contains("rules.toml") && err.contains("path_regex"), "{err}");
    handle.shutdown().await;
}

// HTTP/2 floods, with raw frames.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// GET / for a.test: :method GET, :scheme http, :path / from the static table, :authority literal.
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x01, 6];
    b.extend_from_slice(b"a.test");
    b
}

/// Opens an h2c connection: preface and empty SETTINGS.
async fn h2_connect(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[PREFACE, &frame(4, 0, 0, &[])].concat()).await.unwrap();
    tcp
}

/// Sends `frames` over and over (reading and dropping what comes back, so
/// that backpressure is not what stops it) until relais ends the connection;
/// returns whether it did within 10s.
async fn flood_until_closed(
    mut tcp: TcpStream,
    opening: Vec<u8>,
    frames: impl Fn(u32) -> Vec<u8> + Send + 'static,
) -> bool {
    let _ = tcp.write_all(&opening).await;
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        for i in 0..200_000u32 {
            if wr.write_all(&frames(i)).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    closed
}

#[tokio::test]
async fn http2_floods_end_their_connection_while_others_are_served() {
    let o = origin().text("/", "fine").start().await;
    let proxy = relais(proxy_to(o.addr)).await;
    let addr = proxy.addr;
    let url = proxy.url("/ok");
    // A well-behaved client on its own connection, all through the floods.
    let good = tokio::spawn(async move {
        let client = h2_client();
        let mut served = 0;
        for _ in 0..40 {
            if send_with(&client, Request::get(&url).body(full("")).unwrap()).await.status == 200 {
                served += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served
    });
    let ping = |_| frame(6, 0, 0, &[1; 8]);
    assert!(flood_until_closed(h2_connect(addr).await, Vec::new(), ping).await, "PING flood");
    let settings = |_| frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    assert!(flood_until_closed(h2_connect(addr).await, Vec::new(), settings).await, "SETTINGS flood");
    // Rapid reset: a stream opened and cancelled at once, over and over.
    let reset = |i: u32| {
        let id = 2 * i + 1;
        [frame(1, 0x5, id, &get_block()), frame(3, 0, id, &8u32.to_be_bytes())].concat()
    };
    assert!(flood_until_closed(h2_connect(addr).await, Vec::new(), reset).await, "rapid reset");
    // CONTINUATION: one header block that never ends.
    let opening = frame(1, 0x1, 1, &get_block());
    let continuation = |i: u32| {
        let mut block = vec![0x00, 4];
        block.extend_from_slice(format!("x{:03}", i % 1000).as_bytes());
        block.push(120);
        block.extend_from_slice(&[b'v'; 120]);
        frame(9, 0, 1, &block)
    };
    assert!(flood_until_closed(h2_connect(addr).await, opening, continuation).await, "CONTINUATION flood");
    assert_eq!(good.await.unwrap(), 40, "the well-behaved client was served throughout");
    let m = metrics(&proxy).await;
    assert!(m.contains("relais_guard_rejections_total{reason=\"h2_flood\",route=\"none\"} 4"), "{m}");
}

#[tokio::test]
async fn http2_streams_past_the_cap_are_refused() {
    let o = origin().late("/slow", Duration::from_millis(300), "slow").start().await;
    let proxy = relais(proxy_to(o.addr).section("[guard]\nhttp2_max_concurrent_streams = 3\n")).await;
    let mut tcp = h2_connect(proxy.addr).await;
    let mut out = Vec::new();
    for i in 0..6u32 {
        let mut block = vec![0x82, 0x86, 0x04, 5];
        block.extend_from_slice(b"/slow");
        block.extend_from_slice(&[0x01, 6]);
        block.extend_from_slice(b"a.test");
        out.extend(frame(1, 0x5, 2 * i + 1, &block));
    }
    // Sent before relais's SETTINGS can be read: the client has not yet seen the cap.
    tcp.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    // Walk the frames: RST_STREAM (REFUSED_STREAM = 7) for streams past the cap.
    let (mut i, mut refused, mut answered) = (0, 0, 0);
    while i + 9 <= got.len() {
        let len = (usize::from(got[i]) << 16) | (usize::from(got[i + 1]) << 8) | usize::from(got[i + 2]);
        let kind = got[i + 3];
        if kind == 3 && got.get(i + 9..i + 13) == Some(&7u32.to_be_bytes()[..]) {
            refused += 1;
        }
        if kind == 1 {
            answered += 1;
        }
        i += 9 + len;
    }
    assert_eq!((answered, refused), (3, 3), "{} bytes", got.len());
}
