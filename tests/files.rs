//! Static files (`root`, `alias`, `index`, `fallback`, `symlinks`,
//! `precompressed`), through the real proxy, from a directory each test makes.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use http::Request;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A temporary folder holding `www/` (the route's directory) and, beside it,
/// `secret.txt`, which no request may read.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "top secret").unwrap();
        let site = Site { dir };
        site.file("hello.txt", b"hello, world\n");
        site.file("page.html", b"<p>page</p>");
        site
    }

    fn www(&self) -> std::path::PathBuf {
        self.dir.path().join("www")
    }

    fn file(&self, name: &str, data: &[u8]) {
        let path = self.www().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    /// A route serving `www/` at `/`, with `extra` keys.
    fn route(&self, extra: &str) -> Conf {
        Conf::new().section(format!("[[routes]]\npath = \"/\"\nroot = \"{}\"\n{extra}", self.www().display()))
    }
}

/// Sends `target` as it is written, byte for byte, and reads the answer's status and body.
async fn raw(proxy: &Relais, target: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!("GET {target} HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::CompressorWriter::new(&mut out, 4096, 5, 22).write_all(data).unwrap();
    out
}

#[tokio::test]
async fn a_file_comes_with_its_type_validators_and_length() {
    let site = Site::new();
    let proxy = relais(site.route("")).await;
    let r = get(&proxy.url("/hello.txt")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, world\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("13"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with("-d\""), "mtime-size in hex: {etag}");
    let modified = r.header("last-modified").unwrap().to_string();
    assert!(httpdate::parse_http_date(&modified).is_ok(), "{modified}");
    assert_eq!(get(&proxy.url("/page.html")).await.header("content-type"), Some("text/html; charset=utf-8"));

    // HEAD: the same fields, no body.
    let head = send(Request::head(proxy.url("/hello.txt")).body(full("")).unwrap()).await;
    assert_eq!((head.status.as_u16(), head.body.len()), (200, 0));
    assert_eq!(head.header("content-length"), Some("13"));
    assert_eq!(head.header("etag"), Some(etag.as_str()));

    // Conditionals.
    let r = get_with(&proxy.url("/hello.txt"), &[("if-none-match", &etag)]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = get_with(&proxy.url("/hello.txt"), &[("if-modified-since", &modified)]).await;
    assert_eq!(r.status, 304);
    let earlier = httpdate::fmt_http_date(httpdate::parse_http_date(&modified).unwrap() - Duration::from_secs(60));
    assert_eq!(get_with(&proxy.url("/hello.txt"), &[("if-modified-since", &earlier)]).await.status, 200);
    assert_eq!(get_with(&proxy.url("/hello.txt"), &[("if-none-match", "\"other\"")]).await.status, 200);
    assert_eq!(get_with(&proxy.url("/hello.txt"), &[("if-match", "\"other\"")]).await.status, 412);
    assert_eq!(get_with(&proxy.url("/hello.txt"), &[("if-match", &etag)]).await.status, 200);
    assert_eq!(get_with(&proxy.url("/hello.txt"), &[("if-unmodified-since", &earlier)]).await.status, 412);
}

#[tokio::test]
async fn ranges_are_cut_from_the_file() {
    let site = Site::new();
    site.file("digits.txt", b"0123456789");
    let proxy = relais(site.route("")).await;
    let r = get_with(&proxy.url("/digits.txt"), &[("range", "bytes=2-5")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "2345"));
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("content-length"), Some("4"));
    let r = get_with(&proxy.url("/digits.txt"), &[("range", "bytes=-3")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "789"));
    let r = get_with(&proxy.url("/digits.txt"), &[("range", "bytes=10-")]).await;
    assert_eq!((r.status.as_u16(), r.header("content-range")), (416, Some("bytes */10")));
    // Several ranges: the whole file. A stale If-Range: the whole file.
    let r = get_with(&proxy.url("/digits.txt"), &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "0123456789"));
    let r = get_with(&proxy.url("/digits.txt"), &[("range", "bytes=0-1"), ("if-range", "\"old\"")]).await;
    assert_eq!(r.status, 200);
    let etag = get(&proxy.url("/digits.txt")).await.header("etag").unwrap().to_string();
    let r = get_with(&proxy.url("/digits.txt"), &[("range", "bytes=0-1"), ("if-range", &etag)]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "01"));
}

#[tokio::test]
async fn a_precompressed_sibling_goes_to_clients_that_accept_it() {
    let site = Site::new();
    let plain: Vec<u8> = (0..500).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    site.file("app.js", &plain);
    site.file("app.js.gz", &gzip(&plain));
    site.file("app.js.br", &brotli(&plain));
    let proxy = relais(site.route("")).await;

    let gz = get_with(&proxy.url("/app.js"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept-Encoding"));
    assert_eq!(gz.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(gz.body.as_ref(), gzip(&plain).as_slice());

    let br = get_with(&proxy.url("/app.js"), &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(br.body.as_ref(), brotli(&plain).as_slice());

    let none = get(&proxy.url("/app.js")).await;
    assert_eq!(none.header("content-encoding"), None);
    assert_eq!(none.body.as_ref(), plain.as_slice());
    let gz_only = get_with(&proxy.url("/app.js"), &[("accept-encoding", "gzip;q=1, br;q=0")]).await;
    assert_eq!(gz_only.header("content-encoding"), Some("gzip"));

    // Each coding has its own ETag; a range counts the sibling's bytes.
    let tags = [&gz, &br, &none].map(|r| r.header("etag").unwrap().to_string());
    assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2], "{tags:?}");
    let part = get_with(&proxy.url("/app.js"), &[("accept-encoding", "gzip"), ("range", "bytes=0-9")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body.as_ref(), &gzip(&plain)[..10]);

    let metrics = proxy.admin("GET", "/metrics", "").await.text();
    for line in [
        "relais_files_served_total{coding=\"gzip\"} 3",
        "relais_files_served_total{coding=\"br\"} 1",
        "relais_files_served_total{coding=\"identity\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // With relais's own compression on, the sibling is sent as it is, and a
    // file without one is compressed on the way out.
    site.file("other.js", &plain);
    let proxy = relais(site.route("").section("[compression]\nenabled = true")).await;
    let r = get_with(&proxy.url("/app.js"), &[("accept-encoding", "br")]).await;
    assert_eq!((r.header("content-encoding"), r.body.as_ref()), (Some("br"), brotli(&plain).as_slice()));
    assert_eq!(r.header("etag"), br.header("etag"));
    let r = get_with(&proxy.url("/other.js"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.header("etag").unwrap().starts_with("W/"), "made weak as it is encoded");

    // Off: the plain file only.
    let proxy = relais(site.route("precompressed = false")).await;
    let r = get_with(&proxy.url("/app.js"), &[("accept-encoding", "gzip, br")]).await;
    assert_eq!((r.header("content-encoding"), r.body.len()), (None, plain.len()));
}

#[tokio::test]
async fn directories_have_an_index_a_slash_and_no_listing() {
    let site = Site::new();
    site.file("docs/index.html", b"<h1>docs</h1>");
    site.file("docs/guide.html", b"guide");
    site.file("empty/notes.txt", b"notes");
    site.file("index.htm", b"home");
    let proxy = relais(site.route("index = [\"index.html\", \"index.htm\"]")).await;
    let r = get(&proxy.url("/docs/")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "<h1>docs</h1>"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(get(&proxy.url("/")).await.text(), "home", "the second index name");
    let r = get(&proxy.url("/docs?x=1")).await;
    assert_eq!((r.status.as_u16(), r.header("location")), (301, Some("/docs/?x=1")));
    let r = get(&proxy.url("/empty/")).await;
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("notes"), "no listing: {}", r.text());
    assert_eq!(get(&proxy.url("/docs/guide.html/")).await.status, 404, "a file is not a directory");

    // Slashes kept as sent: a redirect never leaves for another host.
    site.file("evil.example/x", b"x");
    let proxy = relais(site.route("").section("[guard]\nmerge_slashes = false")).await;
    let (status, text) = raw(&proxy, "//evil.example").await;
    assert_eq!(status, 301, "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nlocation: /evil.example/\r\n"), "{text}");
    assert_eq!(get(&proxy.url("/missing.txt")).await.status, 404);
}

#[tokio::test]
async fn no_encoding_of_dot_dot_reaches_outside_the_root() {
    let site = Site::new();
    site.file("a/b.txt", b"inside");
    let proxy = relais(site.route("")).await;
    for target in [
        "/../secret.txt",
        "/a/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2e/secret.txt",
        "/a/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/a/..%2f..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..\\secret.txt",
        "/a\\..\\..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/a/b.txt%00",
        "//../secret.txt",
    ] {
        let (status, text) = raw(&proxy, target).await;
        assert!(!text.contains("top secret"), "{target} read outside the root: {text}");
        assert!((400..500).contains(&status), "{target}: {status}");
        assert!(!text.contains(&*site.dir.path().to_string_lossy()), "{target}: a path in the answer: {text}");
    }
    assert_eq!(raw(&proxy, "/a/b.txt").await.0, 200);
    assert_eq!(raw(&proxy, "/a/./b.txt").await.0, 200, "normalised by the guard first");
}

#[tokio::test]
async fn a_symlink_out_of_the_root_is_refused_unless_allowed() {
    let site = Site::new();
    std::os::unix::fs::symlink(site.dir.path().join("secret.txt"), site.www().join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(site.dir.path(), site.www().join("up")).unwrap();
    std::os::unix::fs::symlink(site.www().join("hello.txt"), site.www().join("alias.txt")).unwrap();
    let proxy = relais(site.route("")).await;
    assert_eq!(get(&proxy.url("/leak.txt")).await.status, 404);
    assert_eq!(get(&proxy.url("/up/secret.txt")).await.status, 404);
    assert_eq!(get(&proxy.url("/up")).await.status, 404, "not even redirected");
    assert_eq!(get(&proxy.url("/up/")).await.status, 404);
    assert_eq!(get(&proxy.url("/alias.txt")).await.text(), "hello, world\n", "a link inside is followed");

    let proxy = relais(site.route("symlinks = \"follow\"")).await;
    assert_eq!(get(&proxy.url("/leak.txt")).await.text(), "top secret");
    assert_eq!(get(&proxy.url("/up/secret.txt")).await.text(), "top secret");
}

#[tokio::test]
async fn without_a_file_the_upstream_answers() {
    let site = Site::new();
    let o = origin().text("/", "from the origin").start().await;
    let conf = Conf::new().upstream("app", o.addr).section(format!(
        "[[routes]]\npath = \"/\"\nupstream = \"app\"\nroot = \"{}\"\nfallback = \"upstream\"",
        site.www().display()
    ));
    let proxy = relais(conf).await;
    assert_eq!(get(&proxy.url("/hello.txt")).await.text(), "hello, world\n");
    assert_eq!(o.hits("/hello.txt"), 0);
    assert_eq!(get(&proxy.url("/api/users")).await.text(), "from the origin");
    assert_eq!(o.hits("/api/users"), 1);
    // Other methods are the upstream's.
    let post = send(Request::post(proxy.url("/hello.txt")).body(full("x")).unwrap()).await;
    assert_eq!((post.status.as_u16(), post.text().as_str()), (200, "from the origin"));
}

#[tokio::test]
async fn a_single_page_app_gets_its_index_for_any_path() {
    let site = Site::new();
    site.file("index.html", b"<div id=app>");
    let proxy = relais(site.route("fallback = \"/index.html\"")).await;
    let r = get(&proxy.url("/users/42")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "<div id=app>"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(get(&proxy.url("/hello.txt")).await.text(), "hello, world\n");
}

#[tokio::test]
async fn alias_replaces_the_route_path() {
    let site = Site::new();
    site.file("css/site.css", b"body{}");
    let o = origin().text("/", "origin").start().await;
    let conf = Conf::new()
        .upstream("app", o.addr)
        .route("/", "app")
        .section(format!("[[routes]]\npath = \"/assets/\"\nalias = \"{}\"", site.www().display()))
        .with("response_headers = { set = { \"cache-control\" = \"max-age=3600\" } }");
    let proxy = relais(conf).await;
    let r = get(&proxy.url("/assets/css/site.css")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "body{}"));
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("max-age=3600"), "the route's response headers");
    assert_eq!(get(&proxy.url("/assets/hello.txt")).await.text(), "hello, world\n");
    assert_eq!(get(&proxy.url("/css/site.css")).await.text(), "origin", "other routes are the origin's");
    assert_eq!(get(&proxy.url("/assets/nothing")).await.status, 404);
}

#[tokio::test]
async fn a_large_file_is_streamed_whole() {
    let site = Site::new();
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    site.file("big.bin", &big);
    let proxy = relais(site.route("")).await;
    let r = get(&proxy.url("/big.bin")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body.len(), big.len());
    assert!(r.body.as_ref() == big.as_slice(), "the bytes of the file");
    let r = get_with(&proxy.url("/big.bin"), &[("range", "bytes=5000000-5000099")]).await;
    assert_eq!(r.body.as_ref(), &big[5_000_000..5_000_100]);
    let h2 = send_with(&h2_client(), Request::get(proxy.url("/big.bin")).body(full("")).unwrap()).await;
    assert_eq!(h2.body.len(), big.len());
    assert!(h2.body.as_ref() == big.as_slice(), "the same bytes over HTTP/2");
}

#[tokio::test]
async fn dot_files_can_be_refused_by_a_guard_rule() {
    let site = Site::new();
    site.file(".git/config", b"[core]");
    site.file(".well-known/security.txt", b"contact");
    let proxy =
        relais(site.route(r#"guard = { rules = [{ path_regex = "/\\.(git|ht|env)", action = "deny" }] }"#)).await;
    assert_eq!(get(&proxy.url("/.git/config")).await.status, 403);
    assert_eq!(get(&proxy.url("/.well-known/security.txt")).await.text(), "contact");
}

#[tokio::test]
async fn only_get_and_head() {
    let site = Site::new();
    let proxy = relais(site.route("")).await;
    for method in ["POST", "PUT", "DELETE"] {
        let r = send(Request::builder().method(method).uri(proxy.url("/hello.txt")).body(full("x")).unwrap()).await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[tokio::test]
async fn files_never_enter_the_cache() {
    let site = Site::new();
    let proxy = relais(site.route("")).await;
    for _ in 0..3 {
        let r = get(&proxy.url("/hello.txt")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("cache-status"), None);
    }
    // A changed file is seen at once.
    site.file("hello.txt", b"changed");
    assert_eq!(get(&proxy.url("/hello.txt")).await.text(), "changed");
    let reply = proxy.admin("GET", "/stats", "").await;
    let stats: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(stats["requests"]["lookups"], 0, "{stats}");
    assert_eq!(stats["requests"]["hits"], 0, "{stats}");
    assert_eq!(stats["cache"]["memory"]["entries"], 0, "{stats}");
    assert_eq!(stats["requests"]["total"], 4, "{stats}");
}

#[test]
fn the_directory_is_checked_at_load() {
    let site = Site::new();
    let missing = site.dir.path().join("nowhere");
    let err = |toml: String| relais::Config::from_toml(&toml, "site.toml").unwrap_err().to_string();
    let route = |keys: &str| format!("[server]\nlisten = [\"127.0.0.1:0\"]\n[[routes]]\npath = \"/\"\n{keys}\n");
    let e = err(route(&format!("root = \"{}\"", missing.display())));
    assert!(e.contains("site.toml") && e.contains("routes[0].root") && e.contains("not a directory"), "{e}");
    let e = err(route(&format!("root = \"{}\"", site.www().join("hello.txt").display())));
    assert!(e.contains("routes[0].root"), "{e}");
    let both = format!("root = \"{0}\"\nalias = \"{0}\"", site.www().display());
    assert!(err(route(&both)).contains("routes[0].alias"));
    let upstreamless = format!("root = \"{}\"\nfallback = \"upstream\"", site.www().display());
    assert!(err(route(&upstreamless)).contains("routes[0].upstream"));
    let with_upstream = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n";
    let e = err(format!("{with_upstream}{}", route("upstream = \"a\"\nfallback = \"/index.html\"")));
    assert!(e.contains("routes[0].fallback") && e.contains("root or alias"), "{e}");
    let bad = format!("root = \"{}\"\nfallback = \"../x\"", site.www().display());
    assert!(err(route(&bad)).contains("fallback"));
    let bad = format!("root = \"{}\"\nindex = [\"a/b.html\"]", site.www().display());
    assert!(err(route(&bad)).contains("index"));
    let bad = format!("root = \"{}\"\nsymlinks = \"sometimes\"", site.www().display());
    assert!(err(route(&bad)).contains("symlinks"));
    // A route with only a directory needs no upstream.
    assert!(relais::Config::from_toml(&route(&format!("root = \"{}\"", site.www().display())), "t").is_ok());
    assert!(Path::new(&site.www()).is_dir());
}

/// `relais check`: a relative directory is the configuration file's folder's,
/// the route is shown with it, and a missing one is named with its key.
#[test]
fn check_resolves_and_names_the_directory() {
    let site = Site::new();
    let write = |name: &str, root: &str| {
        let path = site.dir.path().join(name);
        let toml = format!("[server]\nlisten = [\"127.0.0.1:8080\"]\n[[routes]]\npath = \"/\"\nroot = \"{root}\"\n");
        std::fs::write(&path, toml).unwrap();
        std::process::Command::new(support::process::bin()).args(["check", "-c"]).arg(&path).output().unwrap()
    };
    let out = write("good.toml", "www");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let shown = format!("files from {}", site.www().display());
    assert!(text.contains("(answers itself)") && text.contains(&shown), "{text}");

    let out = write("bad.toml", "nowhere");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("routes[0].root") && err.contains("not a directory"), "{err}");
}
