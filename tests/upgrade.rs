//! A binary upgrade (SIGUSR2) with the real binary: clients sending without
//! pause see no refused or reset connection, the new process answers, the old
//! one exits 0, and the disk cache is warm after it. A new process that
//! cannot start leaves the old one serving.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::process::*;
use support::*;

fn conf(dir: &Path, port: u16, admin: u16, origin: std::net::SocketAddr) -> String {
    Conf::new()
        .section(format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"5s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\""
        ))
        .disk(&dir.join("cache"))
        .upstream("app", origin)
        .route("/", "app")
        .to_string()
}

async fn cacheable() -> Origin {
    origin().route("/", |_| async { text(200, "page", &[("cache-control", "max-age=3600")]) }).start().await
}

/// The pid of the process whose admin listener answered.
async fn pid_on(admin: u16) -> u64 {
    let stats = get(&format!("http://127.0.0.1:{admin}/stats")).await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    stats["relais"]["pid"].as_u64().expect("a pid in /stats")
}

/// The process that took over, stopped when the test ends however it ends.
struct Successor(u64);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
    }
}

/// `relais upgrade` against the admin listener on `admin`.
async fn upgrade_command(admin: u16) -> std::process::Output {
    let mut command = std::process::Command::new(bin());
    command.args(["upgrade", "--config", "/nonexistent/relais.toml", "--admin", &format!("127.0.0.1:{admin}")]);
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

/// Sends requests one after the other until `stop`, counting answers and failures.
struct Load {
    answered: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        // One keep-alive connection, reused while the server keeps it.
        let (a, f, s) = (answered.clone(), failures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            while !s.load(Ordering::Relaxed) {
                let req = Request::get(format!("http://127.0.0.1:{port}/kept")).body(full("")).unwrap();
                match client.request(req).await {
                    Ok(res) if res.status() == 200 => {
                        let _ = res.into_body().collect().await.map_err(|e| f.lock().unwrap().push(e.to_string()));
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(res) => f.lock().unwrap().push(format!("status {}", res.status())),
                    Err(e) => f.lock().unwrap().push(format!("keep-alive: {e:?}")),
                }
            }
        }));
        // A fresh connection each time.
        let (a, f, s) = (answered.clone(), failures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let answer = async {
                    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    tcp.write_all(b"GET /fresh HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n").await?;
                    let mut text = String::new();
                    tcp.read_to_string(&mut text).await?;
                    Ok::<_, std::io::Error>(text)
                };
                match answer.await {
                    Ok(text) if text.starts_with("HTTP/1.1 200") && text.ends_with("page") => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(text) => f.lock().unwrap().push(format!("fresh: {text:?}")),
                    Err(e) => f.lock().unwrap().push(format!("fresh: {e}")),
                }
            }
        }));
        Load { answered, failures, stop, tasks }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.answered.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr2_hands_over_without_a_refused_connection_and_the_cache_stays_warm() {
    let o = cacheable().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let (port, admin) = (free_port(), free_port());
    write(&path, &conf(dir.path(), port, admin, o.addr));
    let mut old = start(&path, port).await;
    let old_pid = u64::from(old.pid());
    assert_eq!(pid_on(admin).await, old_pid);

    // Stored on disk by the old process.
    let url = format!("http://127.0.0.1:{port}/warm");
    assert_eq!(get(&url).await.text(), "page");
    wait::until("the disk write", || async { disk_entries(&dir.path().join("cache")) >= 1 }).await;

    let load = Load::start(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&old.0, "USR2");
    wait::until("the new process on the admin listener", || async { pid_on(admin).await != old_pid }).await;
    let new = Successor(pid_on(admin).await);
    let status = tokio::task::spawn_blocking(move || {
        let status = old.0.wait().unwrap();
        std::mem::forget(old);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "the old process exits 0: {status}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (answered, failures) = load.finish().await;
    assert!(failures.is_empty(), "{} failures of {answered}: {failures:?}", failures.len());
    assert!(answered > 50, "{answered} answers");

    // The new process reads what the old one stored.
    assert_eq!(pid_on(admin).await, new.0);
    let warm = get(&url).await;
    assert!(warm.header("cache-status").unwrap_or("").contains("hit"), "{:?}", warm.headers);
    assert_eq!(o.hits("/warm"), 1);
}

#[tokio::test]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let o = cacheable().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let (port, admin) = (free_port(), free_port());
    write(&path, &conf(dir.path(), port, admin, o.addr));
    let old = start(&path, port).await;
    let url = format!("http://127.0.0.1:{port}/warm");
    assert_eq!(get(&url).await.text(), "page");

    write(&path, "[[routes]]\nupstream = \"nowhere\"\n");
    let refused = upgrade_command(admin).await;
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains(&format!("upgrade failed: process {} serves on", old.pid())), "{said}");
    assert_eq!(pid_on(admin).await, u64::from(old.pid()));
    assert_eq!(get(&url).await.text(), "page");
    // Its disk cache is still its own: stores go on.
    let before = disk_entries(&dir.path().join("cache"));
    assert_eq!(get(&format!("http://127.0.0.1:{port}/another")).await.text(), "page");
    wait::until("the disk write", || async { disk_entries(&dir.path().join("cache")) > before }).await;
    // And a later upgrade with a good configuration goes through.
    write(&path, &conf(dir.path(), port, admin, o.addr));
    let done = upgrade_command(admin).await;
    let _new = Successor(pid_on(admin).await);
    assert!(done.status.success(), "{done:?}");
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(said.starts_with(&format!("upgraded: process {} serves", _new.0)), "{said}");
    assert_eq!(get(&url).await.text(), "page");
}

#[tokio::test]
async fn systemd_hears_the_new_main_pid_from_the_old_one() {
    let o = cacheable().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let (port, admin) = (free_port(), free_port());
    write(&path, &conf(dir.path(), port, admin, o.addr));
    let notify = std::os::unix::net::UnixDatagram::bind(dir.path().join("notify.sock")).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let old = start_notifying(&path, dir.path().join("notify.sock"), port).await;
    let mut buf = [0u8; 4096];
    let mut next = || {
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(next().starts_with("READY=1\n"));

    signal(&old.0, "USR2");
    // The new process's own READY=1 would be refused (not the main pid yet): the old one speaks for it.
    let handed = next();
    wait::until("the new process", || async { pid_on(admin).await != u64::from(old.pid()) }).await;
    let new = Successor(pid_on(admin).await);
    assert!(handed.starts_with(&format!("MAINPID={}\nREADY=1\n", new.0)), "{handed}");
    // And the old one, no longer the main process, says nothing of its own stop.
    notify.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut rest = [0u8; 4096];
    assert!(notify.recv(&mut rest).is_err(), "{}", String::from_utf8_lossy(&rest));
}
