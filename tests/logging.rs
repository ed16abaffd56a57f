//! The logs and the signals, against the real binary: a log reader that stalls
//! or goes away costs lines, never requests; log files are reopened on
//! SIGUSR1; no request can add a line or an escape sequence to a log; the
//! level is checked; SIGQUIT drains, SIGUSR1 and SIGUSR2 stop nothing.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;

use support::process::*;
use support::*;

/// A configuration file in a fresh folder: relais on `port`, its admin on
/// `admin`, one route to `origin`, then `extra` (a `[log]` section, say).
struct Setup {
    dir: tempfile::TempDir,
    path: PathBuf,
    port: u16,
    admin: u16,
}

fn setup(origin: std::net::SocketAddr, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let (port, admin) = (free_port(), free_port());
    let toml = config(dir.path(), port, origin, "").replace("127.0.0.1:0", &format!("127.0.0.1:{admin}"));
    write(&path, &format!("{extra}\n{toml}"));
    Setup { dir, path, port, admin }
}

impl Setup {
    fn command(&self) -> Command {
        let mut command = Command::new(bin());
        command.args(["run", "--config"]).arg(&self.path).stdout(Stdio::null());
        command
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `n` GETs of `path(i)`, eight at a time; every one must answer 200 with `body`.
async fn requests(s: &Setup, n: usize, path: impl Fn(usize) -> String, body: &str) {
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (client, urls) = (client.clone(), (worker..n).step_by(8).map(|i| s.url(&path(i))).collect::<Vec<_>>());
        let body = body.to_string();
        tasks.spawn(async move {
            for url in urls {
                let r = send_with(&client, Request::get(&url).body(full("")).unwrap()).await;
                assert_eq!((r.status.as_u16(), r.text()), (200, body.clone()), "{url}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

async fn metric(admin: u16, name: &str) -> f64 {
    let text = get(&format!("http://127.0.0.1:{admin}/metrics")).await.text();
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Waits (up to 10 s) for the child to exit; its exit code.
async fn exit_code(mut child: Running) -> Option<i32> {
    tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if let Some(s) = child.0.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap()
}

/// Reads `path` until `done` holds for its text (up to 5 s); the text.
async fn wait_for(path: &Path, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    panic!("{}: not there within 5 s:\n{text}", path.display());
}

/// A reader that holds the log pipe open and never reads: requests and the
/// admin API go on, the lines that did not fit are counted, and reported
/// once the reader reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_reader_holds_up_no_request() {
    let o = origin().text("/", "ok").start().await;
    let s = setup(o.addr, "");
    let mut command = s.command();
    command.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut child = start_command(&mut command, s.port).await;
    let mut stalled = child.0.stderr.take().unwrap();

    let served = tokio::time::timeout(Duration::from_secs(60), requests(&s, 3000, |i| format!("/{i}"), "ok")).await;
    assert!(served.is_ok(), "3,000 requests did not finish: a log write held them");
    let health = format!("http://127.0.0.1:{}/health", s.admin);
    let health = tokio::time::timeout(Duration::from_secs(5), get(&health)).await;
    assert_eq!(health.expect("/health answers").status, 200);
    assert!(metric(s.admin, "relais_log_dropped_total").await > 0.0);

    // The reader comes back: the log says what it missed.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = stalled.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
            if n == 0 || String::from_utf8_lossy(&seen).contains("log lines dropped") {
                let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
                return;
            }
        }
    });
    assert_eq!(get(&s.url("/after")).await.text(), "ok");
    let seen = rx.recv_timeout(Duration::from_secs(10)).expect("the log reports the lines it dropped");
    let report = seen.lines().find(|l| l.contains("log lines dropped")).unwrap();
    assert!(report.contains("WARN") && report.contains("lines="), "{report}");
}

/// A reader that goes away after 300 bytes (a restarted `tee`): every
/// request is still answered whole, and SIGTERM still stops relais cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_goes_away_fails_no_request() {
    let o =
        origin().route("/", |_| async { text(200, "cached body", &[("cache-control", "max-age=60")]) }).start().await;
    let s = setup(o.addr, "");
    let mut command = s.command();
    command.env("RUST_LOG", "info").stderr(Stdio::piped());
    let mut child = start_command(&mut command, s.port).await;
    let mut pipe = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 300];
        let _ = pipe.read_exact(&mut buf);
        // The pipe closes here: every later write gets EPIPE.
    });

    // Misses and hits: 50 paths, 10 times each.
    requests(&s, 500, |i| format!("/p/{}", i % 50), "cached body").await;
    reader.join().unwrap();
    requests(&s, 100, |i| format!("/p/{}", i % 50), "cached body").await;
    assert!(metric(s.admin, "relais_log_dropped_total").await > 0.0);

    signal(&child.0, "TERM");
    assert_eq!(exit_code(child).await, Some(0), "SIGTERM with the log reader gone exits 0");
}

/// logrotate's way: rename the files, SIGUSR1, and new lines land in new
/// files, created 0640 or tighter; relative names are the configuration's.
#[tokio::test]
async fn rotated_logs_are_reopened_on_sigusr1() {
    let o = origin().text("/", "ok").start().await;
    let s = setup(o.addr, "[log]\nfile = \"access.log\"\nerror_file = \"logs/error.log\"\n");
    std::fs::create_dir(s.file("logs")).unwrap();
    let mut command = s.command();
    // Another working directory: the names are relative to the configuration file.
    command.current_dir("/").env("RUST_LOG", "info").stderr(Stdio::null());
    let child = start_command(&mut command, s.port).await;
    let (access, error) = (s.file("access.log"), s.file("logs/error.log"));
    for _ in 0..3 {
        assert_eq!(get(&s.url("/before")).await.text(), "ok");
    }
    let before = wait_for(&access, |t| t.lines().count() == 3).await;
    assert!(before.lines().all(|l| l.contains("relais::access") && l.contains("/before")), "{before}");
    let errors = wait_for(&error, |t| t.contains("relais listening")).await;
    assert!(!errors.contains("relais::access"), "access lines in the error log: {errors}");
    for file in [&access, &error] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o137, 0, "{} is {mode:o}", file.display());
    }

    std::fs::rename(&access, s.file("access.log.1")).unwrap();
    std::fs::rename(&error, s.file("logs/error.log.1")).unwrap();
    signal(&child.0, "USR1");
    wait_for(&error, |t| t.contains("reopened")).await;
    for _ in 0..2 {
        assert_eq!(get(&s.url("/after")).await.text(), "ok");
    }
    let after = wait_for(&access, |t| t.lines().count() == 2).await;
    assert!(after.lines().all(|l| l.contains("/after")), "{after}");
    let rotated = std::fs::read_to_string(s.file("access.log.1")).unwrap();
    assert_eq!(rotated, before, "nothing more in the rotated file");
}

/// Bytes a client can get past the HTTP parsers: `"` and a percent-encoded
/// newline in the path, `"`, a tab and a C1 escape (0x9b, obs-text) in the
/// user agent and the referer, over HTTP/1.1 and HTTP/2. In every format the
/// line stays one line of printable ASCII, its quotes where the format puts them.
#[tokio::test]
async fn hostile_requests_stay_on_one_escaped_line_in_every_format() {
    let o = origin().text("/", "ok").start().await;
    for format in ["human", "json", "combined"] {
        let s = setup(o.addr, &format!("[log]\nformat = \"{format}\"\n"));
        let log = s.file("stderr.log");
        let mut command = s.command();
        command.env("RUST_LOG", "warn").stderr(std::fs::File::create(&log).unwrap());
        let child = start_command(&mut command, s.port).await;

        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
        let raw = b"GET /a%0Ab\"c?q=%22x HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: evil\"\x9b[31m\tagent\r\n\
                        Referer: http://r.test/\"\x9b\r\nConnection: close\r\n\r\n";
        tokio::io::AsyncWriteExt::write_all(&mut tcp, raw).await.unwrap();
        let answer = read_until_quiet(&mut tcp, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        let agent = http::HeaderValue::from_bytes(b"h2\"\x9b[2J\tagent").unwrap();
        let req = Request::get(s.url("/h2%0D%0A\"x")).header("user-agent", agent).body(full("")).unwrap();
        assert_eq!(send_with(&h2_client(), req).await.status, 200);

        let text = wait_for(&log, |t| t.lines().filter(|l| l.contains("agent")).count() == 2).await;
        drop(child);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("agent")).collect();
        for line in &lines {
            assert!(line.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{format}: a raw byte in {line:?}");
            match format {
                "combined" => {
                    assert_eq!(line.matches('"').count(), 6, "{format}: {line}");
                    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
                }
                "json" => {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let agent = v["user_agent"].as_str().unwrap();
                    assert!(agent.contains("\\x22\\x9B[") && agent.contains("\\x09agent"), "{line}");
                    assert!(v["protocol"].as_str().unwrap().starts_with("HTTP/"), "{line}");
                }
                _ => {
                    // Nine quoted fields: host, path, upstream, cache, route, refused, rule, referer, user agent.
                    assert_eq!(line.matches('"').count(), 18, "{format}: {line}");
                }
            }
        }
        // JSON doubles the backslash of `\xHH`: read back, the value is the same.
        let first = lines[0].replace("\\\\", "\\");
        assert!(first.contains("\\x22\\x9B[31m\\x09agent"), "{format}: {first}");
        assert!(first.contains("/a%0Ab\\x22c?q=%22x"), "{format}: {first}");
        assert!(lines[1].contains("HTTP/2.0"), "{format}: {}", lines[1]);
    }
}

/// SIGQUIT stops as SIGTERM does: the request in flight finishes, exit 0.
#[tokio::test]
async fn sigquit_drains_and_exits_0() {
    let o = origin().late("/slow", Duration::from_millis(1000), "finished").start().await;
    let s = setup(o.addr, "");
    let mut command = s.command();
    command.stderr(Stdio::null());
    let child = start_command(&mut command, s.port).await;
    let url = s.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    until("the request to reach the origin", || async { o.hits("/slow") == 1 }).await;
    signal(&child.0, "QUIT");
    assert_eq!(in_flight.await.unwrap().text(), "finished");
    assert_eq!(exit_code(child).await, Some(0));
}

/// SIGUSR1 with no log file leaves relais serving. (SIGUSR2, the binary
/// upgrade, is tests/upgrade.rs's.)
#[tokio::test]
async fn sigusr1_with_no_log_file_stops_nothing() {
    let o = origin().text("/", "ok").start().await;
    let s = setup(o.addr, "");
    let log = s.file("stderr.log");
    let mut command = s.command();
    command.env("RUST_LOG", "info").stderr(std::fs::File::create(&log).unwrap());
    let child = start_command(&mut command, s.port).await;
    for sig in ["USR1", "USR1"] {
        signal(&child.0, sig);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(get(&s.url("/")).await.text(), "ok", "after SIG{sig}");
    }
    let mut child = child;
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
}

/// `warn` and `warning` both keep warnings, drop info lines, and leave the
/// access log on: it has its own switch.
#[tokio::test]
async fn level_warn_or_warning_keeps_warnings_and_the_access_log() {
    let o = origin().text("/", "ok").start().await;
    for level in ["warn", "warning"] {
        let s = setup(o.addr, &format!("[log]\nlevel = \"{level}\"\n"));
        let log = s.file("stderr.log");
        let mut command = s.command();
        command.env_remove("RUST_LOG").stderr(std::fs::File::create(&log).unwrap());
        let child = start_command(&mut command, s.port).await;
        assert_eq!(get(&s.url("/seen")).await.text(), "ok");
        // A reload that changes admin.listen warns that it needs a restart.
        let moved = std::fs::read_to_string(&s.path).unwrap().replace(&format!("127.0.0.1:{}", s.admin), "127.0.0.1:1");
        write(&s.path, &moved);
        signal(&child.0, "HUP");
        let text = wait_for(&log, |t| t.contains("admin.listen changed") && t.contains("/seen")).await;
        assert!(!text.contains("relais listening"), "{level}: an info line: {text}");
        assert!(text.lines().any(|l| l.contains("relais::access") && l.contains("/seen")), "{level}: {text}");
    }
}

#[test]
fn check_refuses_an_unknown_level_or_an_unusable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    for (level, ok) in [("warning", true), ("info,relais::upstream=debug", true), ("loud", false), ("relais=", false)] {
        write(&path, &format!("[log]\nlevel = \"{level}\"\n"));
        let out = Command::new(bin()).args(["check", "-c"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{level}: {err}");
        if !ok {
            assert!(err.contains("relais.toml") && err.contains("log.level") && err.contains(level), "{err}");
        }
    }
    // A log file that cannot be opened is refused by check as by run, naming the key.
    write(&path, "[log]\nerror_file = \"no/such/folder/error.log\"\n");
    let out = Command::new(bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("log.error_file") && err.contains(&format!("{}/no/such", dir.path().display())), "{err}");
}

/// A gzip body cut short: decoding for a client that does not take gzip
/// fails at its end, and the access line says the body was not complete.
#[tokio::test]
async fn a_body_cut_short_by_a_decode_error_is_logged_incomplete() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&b"a line of text to compress\n".repeat(2000)).unwrap();
    let mut body = gz.finish().unwrap();
    body.truncate(body.len() / 2);
    let body = bytes::Bytes::from(body);
    let o = origin()
        .route("/gz", move |_| {
            let body = body.clone();
            async move {
                let mut r = http::Response::new(full(body));
                r.headers_mut().insert("content-encoding", "gzip".parse().unwrap());
                r.headers_mut().insert("content-type", "text/plain".parse().unwrap());
                r
            }
        })
        .start()
        .await;
    let s = setup(o.addr, "[compression]\nenabled = true\n");
    let log = s.file("stderr.log");
    let mut command = s.command();
    command.env("RUST_LOG", "info").stderr(std::fs::File::create(&log).unwrap());
    let _child = start_command(&mut command, s.port).await;
    // The head may not even have left before the body failed.
    if let Ok(res) = client().request(Request::get(s.url("/gz")).body(full("")).unwrap()).await {
        assert!(res.into_body().collect().await.is_err(), "the client sees the body fail");
    }
    let text = wait_for(&log, |t| t.lines().any(|l| l.contains("relais::access") && l.contains("/gz"))).await;
    let line = text.lines().find(|l| l.contains("relais::access") && l.contains("/gz")).unwrap();
    assert!(line.contains("complete=false"), "{line}");
}

/// Misses sent whole on kept-alive connections: hyper stops asking a body for
/// more once Content-Length bytes are out and drops it, so the line was written
/// as the body was dropped, and about half said complete=false.
#[tokio::test]
async fn bodies_sent_whole_are_logged_complete() {
    // The body comes in two pieces, its length declared, and says it has ended
    // only after its last byte has gone.
    let o = origin()
        .route("/", |_| async {
            let pieces = futures_util::StreamExt::then(futures_util::stream::iter(0..3), |i| async move {
                // The last byte, then a pause before the body says it has ended.
                tokio::time::sleep(Duration::from_millis(if i == 0 { 0 } else { 20 })).await;
                let piece = if i < 2 { "x".repeat(2500) } else { String::new() };
                Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(piece)))
            });
            http::Response::builder()
                .header("cache-control", "max-age=60")
                .header("content-length", "5000")
                .body(http_body_util::StreamBody::new(pieces).map_err(|e| Box::new(e) as _).boxed())
                .unwrap()
        })
        .start()
        .await;
    let s = setup(o.addr, "");
    let log = s.file("stderr.log");
    let mut command = s.command();
    command.env("RUST_LOG", "info").stderr(std::fs::File::create(&log).unwrap());
    let _child = start_command(&mut command, s.port).await;
    let body = "x".repeat(5000);
    // Misses, then hits of the same URLs.
    requests(&s, 80, |i| format!("/m/{i}"), &body).await;
    requests(&s, 80, |i| format!("/m/{i}"), &body).await;
    let lines = |t: &str| t.lines().filter(|l| l.contains("relais::access") && l.contains("/m/")).count();
    let text = wait_for(&log, |t| lines(t) == 160).await;
    let incomplete: Vec<&str> = text.lines().filter(|l| l.contains("/m/") && l.contains("complete=false")).collect();
    assert!(incomplete.is_empty(), "{} of 160 whole bodies logged incomplete: {}", incomplete.len(), incomplete[0]);
}

/// Requests hyper refuses before relais sees them (a bad request line, a
/// header block too large) are logged and counted, as nginx logs its 400s:
/// fail2ban reads them.
#[tokio::test]
async fn requests_the_parser_refuses_are_logged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = origin().text("/", "ok").start().await;
    let s = setup(o.addr, "[log]\nformat = \"combined\"\nfile = \"access.log\"\n");
    let _child = start(&s.path, s.port).await;
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(80 * 1024));
    for (raw, status) in [("GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n".to_string(), "400"), (big, "431")] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
        let _ = tcp.write_all(raw.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
    }
    let text = wait_for(&s.file("access.log"), |t| t.lines().count() == 2).await;
    // Two connections: their lines may come in either order.
    for status in ["400", "431"] {
        let line = text.lines().find(|l| l.contains(&format!(" {status} 0 "))).unwrap_or_default();
        assert!(
            line.starts_with("127.0.0.1 - - [") && line.contains(&format!("] \"-\" {status} 0 \"-\" \"-\"")),
            "{status}: {text}"
        );
    }
    let m = get(&format!("http://127.0.0.1:{}/metrics", s.admin)).await.text();
    assert!(m.contains("relais_requests_total{route=\"none\",status=\"400\",cache=\"-\"} 1"), "{m}");
}

/// A reload applies `[log]`: the level, the access log's file and format; a
/// file that cannot be opened refuses the reload and the logs stay.
#[tokio::test]
async fn log_settings_apply_on_reload() {
    let o = origin().text("/", "ok").start().await;
    let s = setup(o.addr, "[log]\nlevel = \"warn\"\nfile = \"one.log\"\nerror_file = \"error.log\"\n");
    let mut command = s.command();
    command.env_remove("RUST_LOG").stderr(Stdio::null());
    let child = start_command(&mut command, s.port).await;
    assert_eq!(get(&s.url("/first")).await.text(), "ok");
    wait_for(&s.file("one.log"), |t| t.contains("/first")).await;

    let toml = std::fs::read_to_string(&s.path).unwrap();
    let write_log = |log: &str| write(&s.path, &toml.replace("level = \"warn\"\nfile = \"one.log\"", log));
    write_log("level = \"info\"\nformat = \"combined\"\nfile = \"two.log\"");
    signal(&child.0, "HUP");
    // At info, the reload says so.
    wait_for(&s.file("error.log"), |t| t.contains("configuration reloaded")).await;
    assert_eq!(get(&s.url("/second")).await.text(), "ok");
    let two = wait_for(&s.file("two.log"), |t| t.contains("/second")).await;
    assert!(two.starts_with("127.0.0.1 - - ["), "combined: {two}");
    assert!(!std::fs::read_to_string(s.file("one.log")).unwrap().contains("/second"));

    write_log("level = \"info\"\nfile = \"no/such/dir/three.log\"");
    signal(&child.0, "HUP");
    let errors = wait_for(&s.file("error.log"), |t| t.contains("reload rejected")).await;
    assert!(errors.contains("three.log") && errors.contains("log.file"), "{errors}");
    assert_eq!(get(&s.url("/third")).await.text(), "ok");
    wait_for(&s.file("two.log"), |t| t.contains("/third")).await;
}
