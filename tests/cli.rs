//! The `relais` binary as an operator runs it: check, run, SIGHUP, SIGTERM.

mod support;

use std::process::Command;
use std::time::Duration;

use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use support::process::*;
use support::*;

#[test]
fn check_accepts_a_valid_file_and_names_the_key_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    write(&good, &config(dir.path(), 8080, "127.0.0.1:3000".parse().unwrap(), ""));
    let out = Command::new(bin()).args(["check", "-c"]).arg(&good).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1:8080") && text.contains("app"), "{text}");

    let bad = dir.path().join("bad.toml");
    write(&bad, "[cache]\nmemory_capacity = \"many\"\n");
    let out = Command::new(bin()).args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("cache.memory_capacity"), "{err}");

    let out = Command::new(bin()).args(["run", "-c", "/nonexistent/relais.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/relais.toml"));
}

/// `relais check` reads every certificate: names and expiry printed, an
/// expired one or a key of another certificate refused with the file named.
#[test]
fn check_validates_certificates() {
    use support::tls::TestCa;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let (cert, key) = ca.issue(&["shop.test", "www.shop.test"]).write(dir.path(), "good");
    let expired = ca.issue_with(&["old.test"], |p| {
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    });
    let (old_cert, old_key) = expired.write(dir.path(), "old");
    let toml = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\n[[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let check = |name: &str, text: String| {
        let path = dir.path().join(name);
        write(&path, &text);
        Command::new(bin()).args(["check", "-c"]).arg(&path).output().unwrap()
    };
    let out = check("good.toml", toml(&cert, &key));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("shop.test, www.shop.test: valid until") && stdout.contains("GMT"), "{stdout}");

    assert!(stdout.contains("(HTTP/1.1 + h2 by ALPN), 1 certificate(s)"), "{stdout}");
    let quic = toml(&cert, &key).replace("[[server", "http3 = true\nearly_data = true\n[[server");
    let out = check("quic.toml", quic);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("h2 by ALPN + HTTP/3 on UDP, 0-RTT for safe requests)"), "{stdout}");

    let out = check("old.toml", toml(&old_cert, &old_key));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("old.pem") && stderr.contains("expired"), "{stderr}");

    let out = check("mismatch.toml", toml(&cert, &old_key));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("old.key") && stderr.contains("does not match"), "{stderr}");
}

/// `relais run` refuses what `check` refuses: an expired certificate stops
/// the start, naming the file and the key. One that ends within 14 days is
/// served, with a warning at start (and daily).
#[tokio::test]
async fn run_refuses_an_expired_certificate_and_warns_of_one_ending_soon() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use support::tls::TestCa;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let now = time::OffsetDateTime::now_utc();
    let (old_cert, old_key) = ca
        .issue_with(&["old.test"], |p| {
            (p.not_before, p.not_after) = (now - time::Duration::days(30), now - time::Duration::days(1))
        })
        .write(dir.path(), "old");
    let (soon_cert, soon_key) = ca
        .issue_with(&["soon.test"], |p| p.not_after = now + time::Duration::days(3) + time::Duration::hours(1))
        .write(dir.path(), "soon");
    let port = free_port();
    let toml = |cert: &std::path::Path, key: &std::path::Path| {
        let base = config(dir.path(), port, "127.0.0.1:3000".parse().unwrap(), "");
        format!(
            "{base}[server.tls]\nlisten = [\"127.0.0.1:0\"]\n[[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let old = dir.path().join("old.toml");
    write(&old, &toml(&old_cert, &old_key));
    let mut command = Command::new(bin());
    command.args(["run", "-c"]).arg(&old).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::piped());
    let mut refused = Running(command.spawn().unwrap());
    let mut exited = None;
    for _ in 0..100 {
        exited = refused.0.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(exited.and_then(|s| s.code()), Some(1), "still serving an expired certificate after 5 s");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("old.pem") && stderr.contains("server.tls.certificates[0].cert"), "{stderr}");
    assert_eq!(stderr.matches("certificates[0]").count(), 1, "the key named once: {stderr}");
    assert!(stderr.contains("expired on"), "{stderr}");

    let soon = dir.path().join("soon.toml");
    write(&soon, &toml(&soon_cert, &soon_key));
    let mut command = Command::new(bin());
    command.args(["run", "-c"]).arg(&soon).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut running = start_command(&mut command, port).await;
    let stderr = running.0.stderr.take().unwrap();
    let warned = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).find(|l| l.contains("expires soon"))
    });
    let line = tokio::time::timeout(Duration::from_secs(10), warned).await.expect("a warning").unwrap().unwrap();
    assert!(line.contains("soon.pem") && line.contains("days_left=3"), "{line}");
}

/// Every configuration in `examples/` is one `relais check` accepts.
#[test]
fn every_example_config_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let mut path = entry.unwrap().path();
        if path.is_dir() {
            // A site of its own: its relais.toml, with the files it names beside it.
            path = path.join("relais.toml");
        }
        if path.extension().is_none_or(|e| e != "toml") || !path.exists() {
            continue;
        }
        let out =
            Command::new(bin()).args(["check", "-c"]).arg(&path).env_remove("RELAIS_ADMIN__TOKEN").output().unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} example configs");
}

/// What `relais run` would refuse, `relais check` refuses too, naming the key.
#[test]
fn check_refuses_what_run_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n", "server.listen[1]"),
        ("[server]\nlisten = [\"127.0.0.1:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n", "admin.listen"),
        ("[admin]\nlisten = \"0.0.0.0:9090\"\n", "admin.token"),
        ("[cache]\nmax_object_size = \"99999999999999999999GiB\"\n", "cache.max_object_size"),
        ("[upstreams.a]\nservers = [\"127.0.0.1:99999\"]\n", "out of range"),
        ("[server]\nheader_read_timeout = \"0s\"\n", "server.header_read_timeout"),
        (
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\n[routes.compression]\nlevels = { gzip = 0 }\n",
            "routes[0].compression.levels.gzip",
        ),
        ("[upstreams.a]\nservers = [\"https://a..b\"]\n", "upstreams.a.servers[0]"),
    ];
    for (i, (toml, says)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        write(&path, toml);
        let out = Command::new(bin()).args(["check", "-c"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{toml}: {err}");
        assert!(err.contains(&format!("case{i}.toml")) && err.contains(says), "{toml}: {err}");
    }
}

/// A log written to a file (or a pipe) is plain text; colour is for terminals.
#[tokio::test]
async fn logs_to_a_file_carry_no_colour_codes() {
    let o = origin().text("/", "ok").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));
    let log = dir.path().join("relais.log");
    let mut command = Command::new(bin());
    command.args(["run", "--config"]).arg(&path).env("RUST_LOG", "info");
    command.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let child = start_command(&mut command, port).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.text(), "ok");
    until("the access line", || async { std::fs::read_to_string(&log).unwrap().contains("relais::access") }).await;
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("relais listening") && text.contains("relais::access"), "{text}");
    assert!(!text.contains('\x1b'), "colour codes in a log file: {text:?}");
}

#[tokio::test]
async fn sighup_reloads_and_rejects_a_broken_file() {
    let o = origin().text("/", "app").text("/new", "new").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(
        &path,
        &config(
            dir.path(),
            port,
            o.addr,
            "[[routes]]\npath = \"/gone\"\nupstream = \"app\"\nheaders = { x = \"never\" }\n",
        ),
    );
    let child = start(&path, port).await;
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(get(&url).await.text(), "app");

    // A broken file is rejected; the running configuration stays.
    write(&path, "[[routes]]\nupstream = \"nowhere\"\n");
    signal(&child.0, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&url).await.text(), "app");

    // A good file with a new route applies.
    let extra =
        "[upstreams.other]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/blocked\"\nupstream = \"other\"\n";
    write(&path, &config(dir.path(), port, o.addr, extra));
    signal(&child.0, "HUP");
    let blocked = format!("http://127.0.0.1:{port}/blocked");
    until("the new route", || async { get(&blocked).await.text() != "app" }).await;
    assert_eq!(get(&blocked).await.status, 502);
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish() {
    let o = origin().late("/slow", Duration::from_millis(1000), "finished").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));
    let mut child = start(&path, port).await;

    let url = format!("http://127.0.0.1:{port}/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    until("the request to reach the origin", || async { o.hits("/slow") == 1 }).await;
    signal(&child.0, "TERM");
    let r = in_flight.await.unwrap();
    assert_eq!(r.text(), "finished");

    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(s) = child.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exits 0 after draining");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "no longer listening");
}

/// Distinct, checkable content for object `i`.
fn object(i: usize, len: usize) -> String {
    let unit = format!("object {i} ");
    unit.repeat(len / unit.len() + 1)[..len].to_string()
}

/// An origin answering `/<anything>/<i>` with [`object`] `i`, cacheable.
async fn objects(len: usize) -> Origin {
    origin()
        .route("/", move |req: Request<hyper::body::Incoming>| async move {
            let i: usize = req.uri().path().rsplit('/').next().unwrap().parse().unwrap();
            text(200, &object(i, len), &[("cache-control", "max-age=600")])
        })
        .start()
        .await
}

async fn get_host(port: u16, path: &str) -> Reply {
    get_site(&client(), port, path).await
}

/// GET `path` of site.test on `port` through `client`'s keep-alive pool.
async fn get_site(client: &Client<HttpConnector, Body>, port: u16, path: &str) -> Reply {
    let req = Request::get(format!("http://127.0.0.1:{port}{path}")).header("host", "site.test");
    send_with(client, req.body(full("")).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_disk_writes_never_leaves_a_bad_entry() {
    const LEN: usize = 2 << 20;
    let o = objects(LEN).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));
    let cache = dir.path().join("cache");
    for round in 0..3 {
        let mut child = start(&path, port).await;
        let before = disk_entries(&cache);
        for i in 0..4 {
            let r = get_host(port, &format!("/big/{}", round * 4 + i)).await;
            assert_eq!(r.body.len(), LEN);
            if i == 2 {
                // Let the first three reach the disk; the fourth is cut off mid-write.
                until("three entries on disk", || async { disk_entries(&cache) >= before + 3 }).await;
            }
        }
        // Killed while the last bodies are still being written to disk.
        child.0.kill().unwrap();
        child.0.wait().unwrap();
    }
    let _child = start(&path, port).await;
    let mut hits = 0;
    for i in 0..12 {
        let r = get_host(port, &format!("/big/{i}")).await;
        assert_eq!(r.text(), object(i, LEN), "object {i} is whole and right");
        hits += r.header("cache-status").unwrap().contains("hit") as usize;
    }
    assert!(hits > 0, "what was committed before the kills is served from disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_many_large_objects() {
    const LEN: usize = 1 << 20;
    let o = objects(LEN).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    let toml = config(dir.path(), port, o.addr, "").replace("[cache]\n", "[cache]\nmemory_capacity = \"16MiB\"\n");
    write(&path, &toml);
    let child = start(&path, port).await;
    for i in 0..150 {
        assert_eq!(get_host(port, &format!("/obj/{i}")).await.body.len(), LEN);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(child.0.id());
    assert!(rss < (16 + 64) * 1024, "RSS {rss} KiB over memory_capacity + 64MiB after 150 MiB of objects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_entries_cost_about_their_size() {
    // A stored header or body that stays a slice of the connection's read buffer
    // keeps the whole buffer (8 KiB or more) alive per entry.
    const N: usize = 3000;
    let o = objects(200).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    // Entries waiting for a busy disk hold their metadata too (up to the backlog,
    // 32 MiB by default): on a loaded machine that, not the entries, was measured.
    let toml = config(dir.path(), port, o.addr, "").replace("[cache]\n", "[cache]\ndisk_write_backlog = \"1MiB\"\n");
    write(&path, &toml);
    let child = start(&path, port).await;
    // One keep-alive connection, as a busy client's would be.
    let client = client();
    assert_eq!(get_site(&client, port, "/small/0").await.body.len(), 200);
    let before = rss_kib(child.0.id());
    for i in 1..N {
        assert_eq!(get_site(&client, port, &format!("/small/{i}")).await.body.len(), 200);
    }
    let grown = rss_kib(child.0.id()).saturating_sub(before);
    // About 3.3 KiB each measured (index, both tiers' maps, allocator); pinned buffers made it 8.
    assert!(grown < 16 * 1024, "{N} entries of 200 bytes grew RSS by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_survives_a_kill_before_its_disk_deletions_finish() {
    const N: usize = 400;
    let o = objects(100).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let (port, admin) = (free_port(), free_port());
    let toml = config(dir.path(), port, o.addr, "").replace("127.0.0.1:0", &format!("127.0.0.1:{admin}"));
    write(&path, &toml);
    let mut child = start(&path, port).await;
    let client = client();
    for i in 0..N {
        get_site(&client, port, &format!("/p/{i}")).await;
    }
    until("every entry on disk", || async { disk_entries(&dir.path().join("cache")) >= N }).await;
    let purge = Request::post(format!("http://127.0.0.1:{admin}/purge"))
        .header("content-type", "application/json")
        .body(full(r#"{"prefix": "http://site.test/p/"}"#))
        .unwrap();
    let r = send(purge).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&format!("\"purged\":{N}")), "{}", r.text());
    // Killed at once: most disk copies are not deleted yet.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let _child = start(&path, port).await;
    // A new pool: the old one's connections went with the killed process.
    let fresh = support::client();
    for i in 0..N {
        let r = get_site(&fresh, port, &format!("/p/{i}")).await;
        let status = r.header("cache-status").unwrap().to_string();
        assert!(!status.contains("hit"), "/p/{i} was purged, yet served from disk after a restart: {status}");
    }
    drop(child);
}

#[tokio::test]
async fn admin_reload_answers_whether_the_file_was_accepted() {
    let o = origin().text("/", "app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let (port, admin) = (free_port(), free_port());
    let with_admin = |extra: &str| {
        config(dir.path(), port, o.addr, extra).replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"t\""),
        )
    };
    write(&path, &with_admin(""));
    let _child = start(&path, port).await;
    let reload = || async {
        let req = Request::post(format!("http://127.0.0.1:{admin}/reload"))
            .header("authorization", "Bearer t")
            .body(full(""))
            .unwrap();
        send(req).await
    };
    write(&path, "[[routes]]\nupstream = \"nowhere\"\n");
    let r = reload().await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("nowhere"));
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.text(), "app", "the running configuration stays");

    write(&path, &with_admin("[[routes]]\npath = \"/teapot\"\nupstream = \"app\"\nheaders = { x = \"1\" }\n"));
    let r = reload().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = send(
        Request::get(format!("http://127.0.0.1:{admin}/metrics"))
            .header("authorization", "Bearer t")
            .body(full(""))
            .unwrap(),
    )
    .await
    .text();
    assert!(m.contains("relais_reloads_total{result=\"ok\"} 1"), "{m}");
    assert!(m.contains("relais_reloads_total{result=\"failed\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_each_way_streams_with_flat_memory() {
    use http_body_util::{BodyExt, StreamBody};
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 4096; // 1 GiB
    let chunk = bytes::Bytes::from(vec![b'x'; CHUNK]);
    let stream =
        move |chunk: bytes::Bytes| {
            StreamBody::new(futures_util::stream::iter((0..CHUNKS).map(move |_| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(chunk.clone()))
            })))
        };
    let down = chunk.clone();
    let o = origin()
        .route("/download", move |_| {
            let down = down.clone();
            async move {
                let mut r = http::Response::new(BodyExt::boxed(stream(down)));
                r.headers_mut().insert("cache-control", "no-store".parse().unwrap());
                r
            }
        })
        .route("/upload", |req: Request<hyper::body::Incoming>| async move {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(f) = body.frame().await {
                n += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
            }
            text(200, &n.to_string(), &[])
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));
    let child = start(&path, port).await;
    let pid = child.0.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let start_rss = rss_kib(pid);

    let res = client()
        .request(Request::get(format!("http://127.0.0.1:{port}/download")).body(full("")).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(n, (CHUNK * CHUNKS) as u64);

    let upload = Request::post(format!("http://127.0.0.1:{port}/upload")).body(BodyExt::boxed(stream(chunk))).unwrap();
    let res = client().request(upload).await.unwrap();
    let answer = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&answer), (CHUNK * CHUNKS).to_string());

    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak < start_rss + 48 * 1024, "RSS went from {start_rss} KiB to {peak} KiB while streaming 1 GiB each way");
}

/// A `log` rule logs the rule that matched and lets the request through; a
/// refused request's access line says why and which rule.
#[tokio::test]
async fn guard_rules_show_in_the_log() {
    let o = origin().text("/", "ok").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    let rules = "[[guard.rules]]\nname = \"try-admin\"\npath_prefix = \"/admin\"\naction = \"log\"\n\n\
                 [[guard.rules]]\nname = \"no-admin-delete\"\npath_prefix = \"/admin\"\nmethod = \"DELETE\"\n";
    write(&path, &format!("{}{rules}", config(dir.path(), port, o.addr, "")));
    let log = dir.path().join("relais.log");
    let mut command = Command::new(bin());
    command.args(["run", "--config"]).arg(&path).env("RUST_LOG", "info");
    command.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let child = start_command(&mut command, port).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/admin/x")).await.text(), "ok");
    let req = http::Request::delete(format!("http://127.0.0.1:{port}/admin/x")).body(full("")).unwrap();
    assert_eq!(send(req).await.status, 403);
    until("the refusal's access line", || async {
        std::fs::read_to_string(&log).unwrap().lines().any(|l| l.contains("relais::access") && l.contains("DELETE"))
    })
    .await;
    drop(child);
    let text = std::fs::read_to_string(&log).unwrap();
    let logged = text.lines().find(|l| l.contains("rule matched (log only)")).expect(&text);
    assert!(logged.contains("try-admin") && logged.contains("127.0.0.1"), "{logged}");
    let access = text.lines().find(|l| l.contains("relais::access") && l.contains("DELETE")).expect(&text);
    assert!(access.contains("refused=\"rule\"") && access.contains("rule=\"no-admin-delete\""), "{access}");
}

/// `relais check` sums up the guard: lists, rules, real ip, zones, and which
/// routes have limits or a guard of their own.
#[test]
fn check_sums_up_the_guard() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guard.toml");
    write(
        &path,
        "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[guard]\nreal_ip = { trusted = [\"10.0.0.0/8\"] }\n\
         deny = [\"192.0.2.0/24\"]\n[[guard.rules]]\npath_regex = \"^/wp-login\"\n\
         [[limit_req]]\nname = \"per_ip\"\nrate = \"10r/s\"\nburst = 20\n\
         [[routes]]\nname = \"api\"\npath = \"/api/\"\nupstream = \"app\"\nlimit_req = [\"per_ip\"]\n\
         [[routes]]\npath = \"/admin/\"\nupstream = \"app\"\nguard = { allow = [\"10.0.0.0/8\"], deny = [\"all\"] }\n",
    );
    let out = Command::new(bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let guard = text.lines().find(|l| l.trim_start().starts_with("guard")).expect(&text);
    for part in ["1 denied blocks", "1 rules", "real ip from x-forwarded-for", "limit_req per_ip 10r/s burst 20"] {
        assert!(guard.contains(part), "{part}: {guard}");
    }
    assert!(text.contains("[0] api: */api/ → app · limits per_ip"), "{text}");
    assert!(text.contains("[1] */admin/ → app · own guard"), "{text}");
}

/// A slow client reading a 20 MiB pass-through answer: read ahead into memory
/// (1 MiB here) and an unlinked temp file with buffering, or held back without
/// it; relais's RSS stays within the budget either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffering_a_slow_client_keeps_memory_within_the_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = origin()
        .route("/", |_| async {
            let chunks = futures_util::stream::iter(
                (0..20)
                    .map(|_| Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![b'x'; 1 << 20])))),
            );
            use http_body_util::BodyExt;
            http::Response::builder()
                .header("cache-control", "no-store")
                .body(http_body_util::StreamBody::new(chunks).map_err(|e| Box::new(e) as _).boxed())
                .unwrap()
        })
        .start()
        .await;
    for buffering in ["response = true", "response = false"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relais.toml");
        let port = free_port();
        let extra = format!(
            "\n[buffering]\n{buffering}\nresponse_memory = \"1MiB\"\ntemp_path = \"{}\"\n",
            dir.path().display()
        );
        write(&path, &(config(dir.path(), port, o.addr, "") + &extra));
        let child = start(&path, port).await;
        let before = rss_kib(child.0.id());
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(b"GET /big HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 10 * 1024];
        for _ in 0..20 {
            let _ = tcp.read(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let grown = rss_kib(child.0.id()).saturating_sub(before);
        assert!(grown < 16 * 1024, "{buffering}: RSS grew {grown} KiB while a slow client read 20 MiB");
    }
}

/// relais on `port` with its admin API on `admin`, behind `token`.
fn with_admin(dir: &std::path::Path, port: u16, admin: u16, origin: std::net::SocketAddr) -> String {
    config(dir, port, origin, "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{admin}"))
        .replace("[admin]\n", "[admin]\ntoken = \"s3cret\"\n")
}

/// Runs `relais ARGS…` to its end, off the runtime the test's origin runs on.
async fn ask(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin()).args(&args).env_remove("RELAIS_ADMIN__TOKEN").output().unwrap()
    })
    .await
    .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// `relais status`, `top`, `cache` and `purge` ask the running relais over its admin
/// API, with the address and token of its configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cache_and_purge_ask_the_running_relais() {
    let o = objects(100).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let (port, admin) = (free_port(), free_port());
    write(&path, &with_admin(dir.path(), port, admin, o.addr));
    let _child = start(&path, port).await;
    let c = path.to_str().unwrap();
    get_host(port, "/p/1").await;
    get_host(port, "/p/1").await;

    let (code, out, err) = ask(&["status", "-c", c]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("relais {}", env!("CARGO_PKG_VERSION"))), "{out}");
    assert!(
        out.contains("hit ratio   50.0%") && out.contains(c) && out.contains(&format!("127.0.0.1:{port}")),
        "{out}"
    );

    let (code, out, _) = ask(&["status", "--json", "-c", c]).await;
    assert_eq!(code, Some(0));
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["requests"]["total"], 2, "{stats}");
    assert_eq!(stats["relais"]["version"], env!("CARGO_PKG_VERSION"), "{stats}");

    let (code, out, err) = ask(&["top", "-n", "1", "-c", c]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("requests/s") && out.contains("route") && out.contains("  app"), "{out}");

    let (code, out, err) = ask(&["cache", "-c", c, "http://site.test/p/1"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("http://site.test/p/1") && out.contains("200") && out.contains("memory"), "{out}");

    let (code, out, err) = ask(&["purge", "-c", c, "http://site.test/p/1"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("purged 1 entry (url)"), "{out}");
    let (_, out, _) = ask(&["cache", "-c", c, "http://site.test/p/1"]).await;
    assert!(out.contains("not cached"), "{out}");
    get_host(port, "/p/1").await;
    assert_eq!(o.hits("/p/1"), 2, "the request after the purge is a miss");

    // A malformed URL is the request refused: 5.
    let (code, _, err) = ask(&["purge", "-c", c, "not a url"]).await;
    assert_eq!(code, Some(5), "{err}");
}

/// Exit codes scripts can rely on: 3 when nothing answers, 4 for a missing
/// or wrong token, 5 for a refused reload, each with the address on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_answers_with_its_result_and_failures_have_their_exit_codes() {
    let o = objects(100).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let (port, admin) = (free_port(), free_port());
    let good = with_admin(dir.path(), port, admin, o.addr);
    write(&path, &good);
    let _child = start(&path, port).await;
    let c = path.to_str().unwrap();
    let at = format!("127.0.0.1:{admin}");

    let (code, out, err) = ask(&["reload", "-c", c]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("reloaded"), "{out}");

    // The file is broken elsewhere than [admin]: relais refuses it and says why.
    write(&path, &format!("{good}[[routes]]\nupstream = \"nowhere\"\n"));
    let (code, _, err) = ask(&["reload", "-c", c]).await;
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains(&at) && err.contains("nowhere"), "{err}");
    let (_, out, _) = ask(&["status", "--json", "-c", c]).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["reloads"]["failed"], 1);

    let (code, _, err) = ask(&["status", "--admin", &at, "--token", "wrong"]).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains(&at) && err.contains("403") && err.contains("wrong token"), "{err}");
    let (code, _, err) = ask(&["status", "--admin", &at, "-c", "/nonexistent.toml"]).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("401"), "{err}");

    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = ask(&["status", "--admin", &nobody, "--token", "s3cret"]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&nobody) && err.contains("unreachable"), "{err}");
}
