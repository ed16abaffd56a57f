//! relais as an operator sets it up: paths relative to the configuration
//! file whatever the working directory, `RELAIS_*` variables that match no
//! key, and one process per cache directory.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::process::*;
use support::tls::TestCa;
use support::*;

/// A configuration in `dir` that names its files by relative paths.
fn relative_config(port: u16, tls_port: u16, origin: std::net::SocketAddr, key: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n\
         [[server.tls.certificates]]\ncert = \"certs/site.pem\"\nkey = \"{key}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[cache]\ndisk_path = \"cache\"\n\
         [guard]\nrules_file = \"rules.toml\"\n[upstreams.app]\nservers = [\"{origin}\"]\n\
         [[routes]]\nupstream = \"app\"\n"
    )
}

#[tokio::test]
async fn relative_paths_are_the_config_files_folders_whatever_the_working_directory() {
    let o = origin().text("/", "app").start().await;
    let (etc, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = TestCa::new("test CA");
    std::fs::create_dir(etc.path().join("certs")).unwrap();
    ca.issue(&["site.test"]).write(&etc.path().join("certs"), "site");
    write(&etc.path().join("rules.toml"), "[[rules]]\npath_prefix = \"/blocked\"\n");
    let (port, tls_port) = (free_port(), free_port());
    let config = etc.path().join("relais.toml");
    write(&config, &relative_config(port, tls_port, o.addr, "certs/site.key"));

    let mut run = Command::new(bin());
    run.current_dir(elsewhere.path()).args(["run", "-c"]).arg(&config).stdout(Stdio::null()).stderr(Stdio::null());
    let _relais = start_command(&mut run, port).await;
    let r = support::tls::tls_get(([127, 0, 0, 1], tls_port).into(), "site.test", &ca.pem, false, "/").await;
    assert_eq!(r.unwrap().text(), "app", "the certificate beside the configuration is served");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/blocked")).await.status, 403, "rules.toml beside it applies");
    assert!(etc.path().join("cache/relais.lock").is_file(), "the cache is beside the configuration");
    let left: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing made in the working directory: {left:?}");

    // A file that cannot be used is named with its key, resolved.
    write(&config, &relative_config(port, tls_port, o.addr, "certs/missing.key"));
    let out = Command::new(bin()).current_dir(elsewhere.path()).args(["check", "-c"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let missing = etc.path().join("certs/missing.key");
    assert!(err.contains(&format!("server.tls.certificates[0].key: {}", missing.display())), "{err}");
}

#[tokio::test]
async fn a_variable_that_matches_no_key_is_reported_by_check_and_run() {
    let o = origin().text("/", "app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let port = free_port();
    write(&path, &config(dir.path(), port, o.addr, ""));

    let out =
        Command::new(bin()).env("RELAIS_ADMIN_TOKEN", "s3cret").args(["check", "-c"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning, not an error: {err}");
    assert!(
        err.contains("warning") && err.contains("RELAIS_ADMIN_TOKEN") && err.contains("RELAIS_ADMIN__TOKEN"),
        "{err}"
    );

    let log = dir.path().join("stderr.log");
    let mut run = Command::new(bin());
    run.env("RELAIS_ADMIN_TOKEN", "s3cret").args(["run", "-c"]).arg(&path);
    run.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let mut relais = start_command(&mut run, port).await;
    signal(&relais.0, "TERM");
    assert!(exits_within(&mut relais.0, Duration::from_secs(10)).is_some(), "stopped");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("RELAIS_ADMIN_TOKEN") && logged.contains("matches no configuration key"), "{logged}");
}

/// Waits up to `limit` for `child` to exit by itself.
fn exits_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test]
async fn a_second_process_on_the_same_cache_refuses_to_start() {
    let o = origin().text("/", "app").start().await;
    let dir = tempfile::tempdir().unwrap();
    let (first_port, second_port) = (free_port(), free_port());
    let first_config = dir.path().join("first.toml");
    write(&first_config, &config(dir.path(), first_port, o.addr, ""));
    let first = start(&first_config, first_port).await;

    let second_config = dir.path().join("second.toml");
    write(&second_config, &config(dir.path(), second_port, o.addr, ""));
    let run_second = || {
        Command::new(bin())
            .args(["run", "-c"])
            .arg(&second_config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut second = Running(run_second());
    let status = exits_within(&mut second.0, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "the second process stopped at once, failing");
    let mut err = String::new();
    std::io::Read::read_to_string(second.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    let cache = dir.path().join("cache");
    assert!(err.contains(&cache.display().to_string()) && err.contains("in use"), "{err}");
    assert!(err.contains(&format!("process {}", first.pid())), "{err}");
    assert_eq!(get(&format!("http://127.0.0.1:{first_port}/")).await.text(), "app", "the first one serves on");

    // Once the first has stopped, the directory is free.
    signal(&first.0, "TERM");
    let mut first = first;
    assert!(exits_within(&mut first.0, Duration::from_secs(10)).is_some_and(|s| s.success()));
    let _second = start(&second_config, second_port).await;
    assert!(lock_holder(&cache).is_some());
}

fn lock_holder(cache: &Path) -> Option<u32> {
    std::fs::read_to_string(cache.join("relais.lock")).ok()?.trim().parse().ok()
}

#[test]
fn check_warns_of_request_buffering_without_a_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relais.toml");
    let route = "request_buffering = true\n";
    write(&path, &config(dir.path(), 8080, "127.0.0.1:3000".parse().unwrap(), route));
    let out = Command::new(bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: routes[0].request_buffering") && err.contains("server.max_request_body"), "{err}");
    let limited = config(dir.path(), 8080, "127.0.0.1:3000".parse().unwrap(), route)
        .replace("[server]\n", "[server]\nmax_request_body = \"10MiB\"\n");
    write(&path, &limited);
    let out = Command::new(bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}
