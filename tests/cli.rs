//! The `relais` binary as an operator runs it: check, run, SIGHUP, SIGTERM.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_relais");

fn write(path: &Path, text: &str) {
    std::fs::File::create(path).unwrap().write_all(text.as_bytes()).unwrap();
}

fn config(dir: &Path, port: u16, origin: std::net::SocketAddr, extra_route: &str) -> String {
    let cache = dir.join("cache");
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"5s\"\n[cache]\ndisk_path = \"{}\"\n[upstreams.app]\nservers = [\"{origin}\"]\n\
         [[routes]]\npath = \"/\"\nupstream = \"app\"\n{extra_route}",
        cache.display()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap();
    assert!(ok.success());
}

async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("relais did not listen on {port}");
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path) -> Running {
    Running(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn check_accepts_a_valid_file_and_names_the_key_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    write(&good, &config(dir.path(), 8080, "127.0.0.1:3000".parse().unwrap(), ""));
    let out = Command::new(BIN).args(["check", "-c"]).arg(&good).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1:8080") && text.contains("app"), "{text}");

    let bad = dir.path().join("bad.toml");
    write(&bad, "[cache]\nmemory_capacity = \"many\"\n");
    let out = Command::new(BIN).args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("cache.memory_capacity"), "{err}");

    let out = Command::new(BIN).args(["run", "-c", "/nonexistent/relais.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/relais.toml"));
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
    let child = spawn(&path);
    wait_listening(port).await;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/blocked")).await.status, 502);
}

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish() {
    let o = origin()
        .route("/slow", |_| async {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            text(200, "finished", &[])
        })
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));
    let mut child = spawn(&path);
    wait_listening(port).await;

    let url = format!("http://127.0.0.1:{port}/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
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
