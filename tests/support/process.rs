//! relais as an operator runs it: the binary in a child process, with its
//! configuration in a file, and its resident memory read from /proc.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary under test; `RELAIS_TEST_BIN` points at another build (e.g. release).
pub fn bin() -> String {
    std::env::var("RELAIS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_relais").to_string())
}

pub fn write(path: &Path, text: &str) {
    std::fs::File::create(path).unwrap().write_all(text.as_bytes()).unwrap();
}

/// A configuration for one origin behind relais on `port`, with `extra_route`
/// appended (keys of the route, then any tables).
pub fn config(dir: &Path, port: u16, origin: std::net::SocketAddr, extra_route: &str) -> String {
    super::Conf::new()
        .section(format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\""
        ))
        .disk(&dir.join("cache"))
        .upstream("app", origin)
        .route("/", "app")
        .with(extra_route)
        .to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap();
    assert!(ok.success());
}

/// A running relais process, killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Runs `relais run --config <config>` and waits until it listens on `port`.
pub async fn start(config: &Path, port: u16) -> Running {
    let mut command = Command::new(bin());
    command.args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(Stdio::null());
    start_command(&mut command, port).await
}

/// Like [`start`], with `NOTIFY_SOCKET` set to `socket` (a path, or `@name` for an abstract one).
pub async fn start_notifying(config: &Path, socket: impl AsRef<std::ffi::OsStr>, port: u16) -> Running {
    let mut command = Command::new(bin());
    command
        .args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    start_command(&mut command, port).await
}

/// Spawns `command` (a relais run, perhaps under a shell that sets limits) and
/// waits until something listens on `port`.
pub async fn start_command(command: &mut Command, port: u16) -> Running {
    if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
        command.env("RUST_LOG", "warn");
    }
    let child = Running(command.spawn().unwrap());
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("relais did not listen on {port}");
}

/// Entries a relais process has committed to the disk tier in `cache`: its
/// index files, one a key, written once the body is on disk.
pub fn disk_entries(cache: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries.flatten().map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 }).sum()
    }
    count(&cache.join("index-v5"))
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Samples a process's RSS every 20 ms until dropped; `peak()` is the highest seen.
pub struct PeakRss {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    pub fn watch(pid: u32) -> PeakRss {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid)));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = s
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                {
                    p.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        PeakRss { peak, task }
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.task.abort();
    }
}
