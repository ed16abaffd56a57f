//! Certificates over ACME, end to end against pebble, Let's Encrypt's test
//! CA (Debian's `pebble`; `scripts/test` installs it): relais obtains a
//! certificate for a name that pebble's DNS resolves to 127.0.0.1, a client
//! that trusts pebble's root completes a handshake and a request, renewal
//! comes when the window says, and a restart reuses what was stored.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::process::free_port;
use support::tls::{Connection, TestCa, client_config, connect};
use support::*;

struct Pebble {
    children: Vec<Child>,
    directory: String,
    /// The CA pebble's own HTTPS listener is signed by.
    listener_ca: std::path::PathBuf,
    /// The root pebble issues certificates under.
    root_pem: String,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

impl Pebble {
    /// Pebble validating challenges on `http_port` (http-01) and `tls_port`
    /// (tls-alpn-01) of 127.0.0.1, with its own DNS answering 127.0.0.1.
    async fn start(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        assert!(
            Command::new("pebble").arg("-h").output().is_ok(),
            "pebble is not installed: run the tests through scripts/test, which installs it"
        );
        let ca = TestCa::new("pebble listener CA");
        let listener_ca = ca.write(dir);
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]).write(dir, "pebble");
        let (acme_port, management_port, dns_port, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = dir.join("pebble.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble": {{"listenAddress": "127.0.0.1:{acme_port}", "managementListenAddress": "127.0.0.1:{management_port}",
                "certificate": "{}", "privateKey": "{}", "httpPort": {http_port}, "tlsPort": {tls_port},
                "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut p = Pebble {
            children: vec![dns, pebble],
            directory: format!("https://127.0.0.1:{acme_port}/dir"),
            listener_ca,
            root_pem: String::new(),
        };
        wait_port(SocketAddr::from(([127, 0, 0, 1], acme_port))).await;
        let management = SocketAddr::from(([127, 0, 0, 1], management_port));
        wait_port(management).await;
        let stream = connect(management, "localhost", client_config(&ca.pem, &[b"http/1.1"], None)).await.unwrap();
        let root = Connection::open(stream).await.get("localhost", "/roots/0").await;
        assert_eq!(root.status, 200);
        p.root_pem = root.text();
        p
    }
}

/// The serial of the certificate relais presents for `name`, verified
/// against pebble's root; None while it has none that verifies.
async fn served_serial(addr: SocketAddr, name: &str, root: &str) -> Option<String> {
    let stream = connect(addr, name, client_config(root, &[b"http/1.1"], None)).await.ok()?;
    let leaf = stream.get_ref().1.peer_certificates()?[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    Some(cert.raw_serial_as_string())
}

async fn wait_for_serial(addr: SocketAddr, name: &str, root: &str, not: Option<&str>) -> String {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(serial) = served_serial(addr, name, root).await
            && Some(serial.as_str()) != not
        {
            return serial;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no (new) certificate for {name} after 30 s");
}

fn acme_relais_config(p: &Pebble, o: &Origin, http: u16, tls: u16, storage: &Path, extra: &str) -> String {
    let acme = format!(
        "[server]\nlisten = [\"127.0.0.1:{http}\"]\n[server.tls]\nlisten = [\"127.0.0.1:{tls}\"]\n\
         [acme]\ndirectory = \"{}\"\nca_root = \"{}\"\nemail = \"ops@shop.test\"\nnames = [\"shop.test\"]\n\
         storage = \"{}\"\nretry_after = \"1s\"\n{extra}",
        p.directory,
        p.listener_ca.display(),
        storage.display(),
    );
    proxy_to(o.addr).section(acme).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_obtains_a_certificate_and_renews_it() {
    let o = origin().text("/", "from the origin").start().await;
    let dir = tempfile::tempdir().unwrap();
    let (http, tls) = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), http, tls).await;
    let storage = dir.path().join("acme");
    // A tiny renew_at: renewal due as soon as a certificate is in.
    let toml =
        acme_relais_config(&pebble, &o, http, tls, &storage, "challenge = \"tls-alpn-01\"\nrenew_at = 0.000000001");
    let proxy = relais(&toml).await;
    let addr = proxy.handle.tls_addrs()[0];
    let first = wait_for_serial(addr, "shop.test", &pebble.root_pem, None).await;
    let stream = connect(addr, "shop.test", client_config(&pebble.root_pem, &[b"h2"], None)).await.unwrap();
    let r = Connection::open(stream).await.get("shop.test", "/").await;
    assert_eq!(r.text(), "from the origin");
    let renewed = wait_for_serial(addr, "shop.test", &pebble.root_pem, Some(&first)).await;
    assert_ne!(renewed, first);
    let m = proxy.admin("GET", "/metrics", "").await.text();
    let ok: f64 =
        m.lines().find_map(|l| l.strip_prefix("relais_acme_orders_total{result=\"ok\"} ")?.parse().ok()).unwrap();
    assert!(ok >= 2.0, "{m}");
    assert!(m.contains("relais_tls_certificate_expiry_seconds{name=\"shop.test\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_obtains_a_certificate_kept_across_a_restart() {
    let o = origin().text("/", "from the origin").start().await;
    let dir = tempfile::tempdir().unwrap();
    let (http, tls) = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), http, tls).await;
    let storage = dir.path().join("acme");
    let toml = acme_relais_config(&pebble, &o, http, tls, &storage, "challenge = \"http-01\"");
    let cache = tempfile::tempdir().unwrap();
    let proxy = relais_in(&toml, cache).await;
    let addr = proxy.handle.tls_addrs()[0];
    let first = wait_for_serial(addr, "shop.test", &pebble.root_pem, None).await;
    assert!(storage.join("shop.test/cert.pem").is_file() && storage.join("shop.test/key.pem").is_file());
    let mode = std::fs::metadata(storage.join("shop.test/key.pem")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077, 0, "the key is the owner's only");
    proxy.handle.shutdown().await;

    // A new process: the stored certificate is served at once, no new order.
    let proxy = relais(&toml).await;
    let addr = proxy.handle.tls_addrs()[0];
    assert_eq!(served_serial(addr, "shop.test", &pebble.root_pem).await.as_deref(), Some(first.as_str()));
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert!(m.contains("relais_acme_orders_total{result=\"ok\"} 0"), "{m}");
}
