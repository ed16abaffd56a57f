//! relais under a service manager: sd_notify messages on `NOTIFY_SOCKET`
//! (as systemd's `Type=notify` reads them) and `server.user`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::process::*;
use support::*;

/// The next datagram relais sent, within a few seconds.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn listening(path: &Path) -> UnixDatagram {
    let socket = UnixDatagram::bind(path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket
}

#[tokio::test]
async fn systemd_hears_ready_reloading_and_stopping() {
    let o = origin().text("/", "app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));
    let notify = listening(&dir.path().join("notify.sock"));
    let mut child = start_notifying(&path, dir.path().join("notify.sock"), port).await;

    let ready = next(&notify);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}\n", child.pid())), "{ready}");
    assert!(ready.contains(&format!("STATUS=serving on 127.0.0.1:{port}")), "{ready}");

    // A reload is bracketed: RELOADING=1 with the monotonic clock, then READY=1.
    signal(&child.0, "HUP");
    let reloading = next(&notify);
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..].parse().unwrap();
    assert!(usec > 0);
    let done = next(&notify);
    assert!(done.starts_with("READY=1\n") && done.contains("STATUS=configuration reloaded"), "{done}");

    // A refused reload ends in READY=1 too, saying so.
    write(&path, "[[routes]]\nupstream = \"nowhere\"\n");
    signal(&child.0, "HUP");
    assert!(next(&notify).starts_with("RELOADING=1\n"));
    let refused = next(&notify);
    assert!(refused.starts_with("READY=1\n") && refused.contains("STATUS=reload refused"), "{refused}");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.text(), "app");

    signal(&child.0, "TERM");
    let stopping = next(&notify);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A service manager that stops reading its socket (its queue holds 10
/// datagrams by default) never stalls relais: past the queue, notifications
/// are dropped, and reloads and the stop go on.
#[tokio::test]
async fn a_notify_socket_nobody_reads_stalls_nothing() {
    let o = origin().text("/", "app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));
    let _unread = listening(&dir.path().join("notify.sock"));
    let mut child = start_notifying(&path, dir.path().join("notify.sock"), port).await;
    // Each reload sends two notifications: twelve overflow any default queue.
    for _ in 0..12 {
        signal(&child.0, "HUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.text(), "app");
    signal(&child.0, "TERM");
    let waited = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(status) = child.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(waited.and_then(|s| s.code()), Some(0), "relais did not stop within 10 s");
}

#[tokio::test]
async fn an_abstract_notify_socket_is_heard_too() {
    let o = origin().text("/", "app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));
    let name = format!("relais-test-{}-{port}", std::process::id());
    let addr = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
    };
    let notify = UnixDatagram::bind_addr(&addr).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _child = start_notifying(&path, format!("@{name}"), port).await;
    assert!(next(&notify).starts_with("READY=1\n"));
}

#[test]
fn check_and_run_refuse_an_unknown_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let text = config(dir.path(), free_port(), "127.0.0.1:3000".parse().unwrap(), "");
    write(&path, &text.replacen("[server]\n", "[server]\nuser = \"no-such-relais-user\"\n", 1));
    for command in ["check", "run"] {
        let out = Command::new(bin()).args([command, "-c"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("relais.toml: server.user: no user named \"no-such-relais-user\""), "{command}: {err}");
    }
}

/// The ids on a /proc status `Uid:` or `Gid:` line: real, effective, saved, filesystem.
fn ids(status: &str, key: &str) -> Vec<u32> {
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect()
}

#[tokio::test]
async fn started_as_root_it_serves_and_caches_as_server_user() {
    if !Command::new("id").arg("-u").output().unwrap().stdout.starts_with(b"0\n") {
        eprintln!("skipped: only root can become another user");
        return;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let o = origin().route("/", |_| async { text(200, "app", &[("cache-control", "max-age=60")]) }).start().await;
    let dir = tempfile::tempdir().unwrap();
    // What relais writes after the drop is the user's: here the whole folder.
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    for p in [dir.path(), &cache] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    let path = dir.path().join("relais.toml");
    let port = free_port();
    let text = config(dir.path(), port, o.addr, "");
    write(&path, &text.replacen("[server]\n", "[server]\nuser = \"nobody\"\n", 1));
    let child = start(&path, port).await;

    // Every thread, tokio's workers too, runs as nobody.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", child.pid())).unwrap();
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert_eq!(ids(&status, "Uid:"), [uid; 4], "{status}");
        assert_eq!(ids(&status, "Gid:"), [gid; 4], "{status}");
        assert!(status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Groups:", &gid.to_string()]));
    }
    // The disk tier still takes entries.
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(get(&url).await.text(), "app");
    until("an entry on disk", || async { disk_entries(&cache) > 0 }).await;
    assert_eq!(get(&url).await.text(), "app");
    assert_eq!(o.hits("/"), 1);
}
