//! The cluster's purge log: three relais and a real `nats-server -js` on
//! 127.0.0.1. A purge sent to one node reaches the others; a node that was
//! down replays what it missed before it reads its disk tier again; a bus that
//! is down keeps purges in the outbox until it is back; a node whose last
//! purge fell out of the stream's retention empties its disk tier.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::{self, free_port};
use support::{Conf, Relais, get_with, origin, relais_in, text, until};

/// A `nats-server -js` on a free port, its store in `dir` (kept across a restart).
struct Nats {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    async fn start(dir: &Path) -> Nats {
        Nats::start_on(dir, free_port()).await
    }

    async fn start_on(dir: &Path, port: u16) -> Nats {
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is not installed: run the tests through scripts/test, which installs it");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Nats { child, port, dir: dir.to_path_buf() };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nats-server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One node's `[cluster]`: `ports` are the nodes' client ports, node ids n1, n2, n3.
fn cluster(node: usize, ports: &[u16], bus: &str, extra: &str) -> String {
    let peers: Vec<String> = ports.iter().enumerate().map(|(i, p)| format!("n{} = \"127.0.0.1:{p}\"", i + 1)).collect();
    format!(
        "[cluster]\nnode = \"n{node}\"\nsharding = \"off\"\npeers = {{ {} }}\n[cluster.bus]\nurl = \"{bus}\"\n{extra}",
        peers.join(", ")
    )
}

/// An in-process node listening on `ports[node - 1]`.
async fn node(node: usize, ports: &[u16], bus: &str, origin: std::net::SocketAddr) -> Relais {
    let conf = Conf::new()
        .section(format!("[server]\nlisten = [\"127.0.0.1:{}\"]", ports[node - 1]))
        .upstream("o", origin)
        .route_all("o")
        .section(cluster(node, ports, bus, ""));
    relais_in(conf, tempfile::tempdir().unwrap()).await
}

/// A GET of `path` on site.test through `addr`; the body.
async fn fetch(addr: impl std::fmt::Display, path: &str) -> String {
    get_with(&format!("http://{addr}{path}"), &[("host", "site.test")]).await.text()
}

/// An origin whose every answer is new: "<path> #<n>", cacheable for an hour.
async fn numbered_origin() -> support::Origin {
    origin()
        .numbered("/", |n, req| {
            let body = format!("{} #{n}", req.uri().path());
            async move { text(200, &body, &[("cache-control", "max-age=3600")]) }
        })
        .start()
        .await
}

/// The bus connected and the stream read (so it exists: a purge published
/// before the first node created it would go to the outbox).
async fn connected(node: &Relais) {
    until("the bus to be connected and the stream read", || async {
        let bus = &node.stats().await["cluster"]["bus"];
        bus["connected"] == true && bus["replayed"] == true
    })
    .await;
}

async fn purge(node: &Relais, query: &str, body: &str) -> Value {
    let reply = node.admin("POST", &format!("/purge{query}"), body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

async fn stored(node: &Relais, url: &str) -> bool {
    !node.cached(url).await.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_sent_to_one_node_is_applied_on_the_others_within_500ms() {
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start(store.path()).await;
    let origin = numbered_origin().await;
    let ports = [free_port(), free_port(), free_port()];
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(node(i, &ports, &nats.url(), origin.addr).await);
    }
    for n in &nodes {
        fetch(n.addr, "/page").await;
        n.stored("http://site.test/page").await;
    }
    // Every node has heard from the others before the purge is timed.
    until("the nodes to hear each other", || async {
        let stats = nodes[0].stats().await;
        ["n1", "n2", "n3"].iter().all(|n| stats["cluster"]["nodes"][n]["live"] == true)
    })
    .await;

    let sent = Instant::now();
    let answer = purge(&nodes[0], "", r#"{"url": "http://site.test/page"}"#).await;
    assert!(answer["cluster"]["sequence"].as_u64().is_some(), "{answer}");
    assert!(answer.get("warning").is_none(), "{answer}");
    while stored(&nodes[1], "http://site.test/page").await || stored(&nodes[2], "http://site.test/page").await {
        assert!(sent.elapsed() < Duration::from_millis(500), "not applied on every node within 500ms");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = origin.total_hits();
    assert_eq!(fetch(nodes[1].addr, "/page").await, format!("/page #{before}"), "node 2 fetched it anew");

    // ?wait=applied answers once every live node applied it.
    fetch(nodes[2].addr, "/page").await;
    nodes[2].stored("http://site.test/page").await;
    let answer = purge(&nodes[0], "?wait=applied", r#"{"prefix": "http://site.test/"}"#).await;
    let applied = &answer["cluster"]["nodes"];
    assert!(["n1", "n2", "n3"].iter().all(|n| applied[n] == "applied"), "{answer}");
    assert!(!stored(&nodes[2], "http://site.test/page").await, "applied means gone");
    let metrics = nodes[2].metrics().await;
    assert!(metrics.contains("relais_cluster_bus_connected 1"), "{metrics}");
    assert!(metrics.contains("relais_cluster_purges_applied_total 2"), "{metrics}");
    assert!(metrics.contains("relais_cluster_purge_lag{node=\"n3\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_bus_down_purges_apply_here_and_reach_the_others_once_it_is_back() {
    let store = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(store.path()).await;
    let origin = numbered_origin().await;
    let ports = [free_port(), free_port()];
    let (n1, n2) = (node(1, &ports, &nats.url(), origin.addr).await, node(2, &ports, &nats.url(), origin.addr).await);
    for n in [&n1, &n2] {
        fetch(n.addr, "/page").await;
        n.stored("http://site.test/page").await;
        until("the stream to be read", || async { n.stats().await["cluster"]["bus"]["replayed"] == true }).await;
    }

    nats.stop();
    until("the bus to be seen down", || async { n1.stats().await["cluster"]["bus"]["connected"] == false }).await;
    let answer = purge(&n1, "", r#"{"url": "http://site.test/page"}"#).await;
    assert!(answer["warning"].as_str().is_some_and(|w| w.contains("outbox")), "{answer}");
    assert_eq!(answer["purged"], 1, "applied here at once");
    assert!(!stored(&n1, "http://site.test/page").await);
    assert!(stored(&n2, "http://site.test/page").await, "the other node cannot know yet");
    assert!(n1.metrics().await.contains("relais_cluster_outbox_purges 1"));
    assert_eq!(std::fs::read_to_string(n1.cache_dir.path().join("cluster-outbox")).unwrap().lines().count(), 1);

    let _nats = Nats::start_on(&nats.dir.clone(), nats.port).await;
    until("the outboxed purge to reach node 2", || async { !stored(&n2, "http://site.test/page").await }).await;
    until("the outbox to empty", || async { n1.stats().await["cluster"]["bus"]["outbox"] == 0 }).await;
    assert!(n1.metrics().await.contains("relais_cluster_bus_connected 1"));
}

/// The binary's configuration for node 3, its cache in `dir/cache`.
fn process_config(
    dir: &Path,
    ports: &[u16],
    admin: u16,
    bus: &str,
    origin: std::net::SocketAddr,
    extra: &str,
) -> PathBuf {
    let conf = Conf::new()
        .section(format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"test-token\"",
            ports[2]
        ))
        .disk(&dir.join("cache"))
        .upstream("o", origin)
        .route_all("o")
        .section(cluster(3, ports, bus, extra));
    let path = dir.join("relais.toml");
    process::write(&path, &conf.to_string());
    path
}

async fn admin_stats(admin: u16) -> Value {
    let req = http::Request::get(format!("http://127.0.0.1:{admin}/stats"))
        .header("authorization", "Bearer test-token")
        .body(support::full(""))
        .unwrap();
    serde_json::from_slice(&support::send(req).await.body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_a_purge_never_serves_the_purged_object_when_it_restarts() {
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start(store.path()).await;
    let origin = numbered_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let (ports, admin) = ([free_port(), free_port(), free_port()], free_port());
    let n1 = node(1, &ports, &nats.url(), origin.addr).await;
    let config = process_config(dir.path(), &ports, admin, &nats.url(), origin.addr, "");
    let n3 = process::start(&config, ports[2]).await;
    let old_page = fetch(local(ports[2]), "/page").await;
    let old_other = fetch(local(ports[2]), "/other").await;
    until("both on node 3's disk", || async {
        admin_stats(admin).await["cache"]["disk"]["entries"].as_u64() >= Some(2)
    })
    .await;
    drop(n3);

    connected(&n1).await;
    let answer = purge(&n1, "", r#"{"url": "http://site.test/page"}"#).await;
    assert_eq!(answer["cluster"]["sequence"], 1, "{answer}");
    let n3 = process::start(&config, ports[2]).await;
    // From its first answer on: never the purged copy, even before it has replayed.
    for _ in 0..20 {
        assert_ne!(fetch(local(ports[2]), "/page").await, old_page, "node 3 served the purged object");
    }
    until("node 3 to replay", || async { admin_stats(admin).await["cluster"]["bus"]["replayed"] == true }).await;
    assert_ne!(fetch(local(ports[2]), "/page").await, old_page);
    assert_eq!(fetch(local(ports[2]), "/other").await, old_other, "what was not purged is served from disk again");
    assert_eq!(std::fs::read_to_string(dir.path().join("cache/cluster-sequence")).unwrap().trim(), "1");
    drop(n3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_last_purge_fell_out_of_retention_empties_its_disk_tier() {
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start(store.path()).await;
    let origin = numbered_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let (ports, admin) = ([free_port(), free_port(), free_port()], free_port());
    let n1 = {
        let conf = Conf::new()
            .section(format!("[server]\nlisten = [\"127.0.0.1:{}\"]", ports[0]))
            .upstream("o", origin.addr)
            .route_all("o")
            .section(cluster(1, &ports, &nats.url(), "retention = \"1s\""));
        relais_in(conf, tempfile::tempdir().unwrap()).await
    };
    let config = process_config(dir.path(), &ports, admin, &nats.url(), origin.addr, "retention = \"1s\"");
    let n3 = process::start(&config, ports[2]).await;
    let old_other = fetch(local(ports[2]), "/other").await;
    until("on node 3's disk", || async { admin_stats(admin).await["cache"]["disk"]["entries"].as_u64() >= Some(1) })
        .await;
    drop(n3);

    connected(&n1).await;
    let answer = purge(&n1, "", r#"{"url": "http://site.test/page"}"#).await;
    assert_eq!(answer["cluster"]["sequence"], 1, "{answer}");
    // The stream forgets it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _n3 = process::start(&config, ports[2]).await;
    until("node 3 to catch up", || async { admin_stats(admin).await["cluster"]["bus"]["replayed"] == true }).await;
    assert_ne!(fetch(local(ports[2]), "/other").await, old_other, "the disk tier was emptied");
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_the_bus_is_down_reads_nothing_from_disk_until_it_has_replayed() {
    let store = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(store.path()).await;
    let origin = numbered_origin().await;
    let (ports, bus) = ([free_port()], nats.url());
    let conf = || {
        Conf::new()
            .section(format!("[server]\nlisten = [\"127.0.0.1:{}\"]", ports[0]))
            .upstream("o", origin.addr)
            .route_all("o")
            .section(cluster(1, &ports, &bus, ""))
    };
    let n1 = relais_in(conf(), tempfile::tempdir().unwrap()).await;
    let old = fetch(n1.addr, "/page").await;
    let old_other = fetch(n1.addr, "/other").await;
    n1.on_disk(2).await;
    let Relais { handle, cache_dir, .. } = n1;
    handle.shutdown().await;

    nats.stop();
    let n1 = relais_in(conf(), cache_dir).await;
    assert_ne!(fetch(n1.addr, "/page").await, old, "read from disk before the purge log was replayed");
    assert_eq!(n1.stats().await["cluster"]["bus"]["replayed"], false);

    let _nats = Nats::start_on(&nats.dir.clone(), nats.port).await;
    until("the purge log to be replayed", || async { n1.stats().await["cluster"]["bus"]["replayed"] == true }).await;
    assert_eq!(fetch(n1.addr, "/other").await, old_other, "the disk tier is read again");
}

/// `when_down = "refuse"`: while the bus is unreachable a purge is refused
/// with 503 and applied nowhere, so no node differs from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_when_down_refuse_a_purge_while_the_bus_is_down_is_refused_and_applied_nowhere() {
    let store = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(store.path()).await;
    let origin = numbered_origin().await;
    let ports = [free_port()];
    let conf = Conf::new()
        .section(format!("[server]\nlisten = [\"127.0.0.1:{}\"]", ports[0]))
        .upstream("o", origin.addr)
        .route_all("o")
        .section(cluster(1, &ports, &nats.url(), "when_down = \"refuse\""));
    let n1 = relais_in(conf, tempfile::tempdir().unwrap()).await;
    connected(&n1).await;
    fetch(n1.addr, "/page").await;
    n1.stored("http://site.test/page").await;

    nats.stop();
    until("the bus to be seen down", || async { n1.stats().await["cluster"]["bus"]["connected"] == false }).await;
    let reply = n1.admin("POST", "/purge", r#"{"url": "http://site.test/page"}"#).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("when_down"), "{}", reply.text());
    assert!(stored(&n1, "http://site.test/page").await, "nothing was purged");
    assert!(n1.metrics().await.contains("relais_cluster_outbox_purges 0"));

    let _nats = Nats::start_on(&nats.dir.clone(), nats.port).await;
    connected(&n1).await;
    assert_eq!(purge(&n1, "", r#"{"url": "http://site.test/page"}"#).await["purged"], 1);
}
