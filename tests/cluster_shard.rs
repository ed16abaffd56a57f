//! Sharding across three relais in this process: each key's owner fetches it
//! from the origin once for the cluster; the others forward their misses to it,
//! and fetch for themselves when it is gone. A client cannot pass for a peer.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, Request};
use support::{Conf, Relais, full, get_with, origin, process::free_port, relais, send, text};

const SECRET: &str = "a-cluster-secret-of-some-length";

/// Three nodes' configurations, each listening on its own port, `extra` added to the cluster table.
fn cluster(origin: std::net::SocketAddr, ports: [u16; 3], extra: &str) -> Vec<String> {
    let peers: Vec<String> = ports.iter().enumerate().map(|(i, p)| format!("n{i} = \"127.0.0.1:{p}\"")).collect();
    (0..3)
        .map(|i| {
            let conf = Conf::new()
                .section(format!("[server]\nlisten = [\"127.0.0.1:{}\"]", ports[i]))
                .upstream("o", origin)
                .route("/private/", "o")
                .with("cache = { bypass = true }")
                .route_all("o")
                .section(format!(
                    "[cluster]\nnode = \"n{i}\"\npeers = {{ {} }}\nsecret = \"{SECRET}\"\nforward_timeout = \"500ms\"\n{extra}",
                    peers.join(", ")
                ));
            conf.to_string()
        })
        .collect()
}

async fn three(origin: std::net::SocketAddr, extra: &str) -> Vec<Relais> {
    let ports = [free_port(), free_port(), free_port()];
    let mut nodes = Vec::new();
    for conf in cluster(origin, ports, extra) {
        nodes.push(relais(conf).await);
    }
    for node in &nodes {
        peers_up(node).await;
    }
    nodes
}

/// Waits until `node`'s health checks have found every peer up.
async fn peers_up(node: &Relais) {
    support::until("every peer up", || async {
        let stats = node.stats().await;
        let peers = stats["cluster"]["peers"]["nodes"].as_object().cloned().unwrap_or_default();
        peers.values().all(|p| p["state"] == "up" || p["state"] == "self")
    })
    .await;
}

/// An origin whose answers are cacheable for a minute, keeping every request's headers.
async fn recording() -> (support::Origin, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let record = seen.clone();
    let o = origin()
        .route("/", move |req| {
            record.lock().unwrap().push(req.headers().clone());
            async move { text(200, "object", &[("cache-control", "max-age=60")]) }
        })
        .start()
        .await;
    (o, seen)
}

/// A GET for `shop.test`, the site every node serves (as behind a load balancer).
async fn ask(url: &str) -> support::Reply {
    get_with(url, &[("host", "shop.test")]).await
}

async fn metric(node: &Relais, line: &str) -> u64 {
    let text = node.admin("GET", "/metrics", "").await.text();
    text.lines().find_map(|l| l.strip_prefix(line)).map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_key_asked_of_every_node_is_fetched_from_the_origin_once() {
    let (o, _) = recording().await;
    let nodes = three(o.addr, "").await;
    for k in 0..12 {
        let path = format!("/objects/{k}");
        // Each node asked in turn, then all at once.
        for node in &nodes {
            let r = ask(&node.url(&path)).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), "object");
        }
        let path = format!("/together/{k}");
        let urls: Vec<String> = nodes.iter().map(|n| n.url(&path)).collect();
        for r in futures_util::future::join_all(urls.iter().map(|u| ask(u))).await {
            assert_eq!(r.text(), "object");
        }
    }
    for k in 0..12 {
        assert_eq!(o.hits(&format!("/objects/{k}")), 1, "/objects/{k}");
        assert_eq!(o.hits(&format!("/together/{k}")), 1, "/together/{k}");
    }
    let mut forwarded = 0;
    for node in &nodes {
        forwarded += metric(node, "relais_cluster_forwarded_total{result=\"answered\"} ").await;
        let stats: serde_json::Value = serde_json::from_str(&node.admin("GET", "/stats", "").await.text()).unwrap();
        assert_eq!(stats["cluster"]["peers"]["nodes"].as_object().unwrap().len(), 3, "{stats}");
    }
    // About two thirds of the 72 requests are not their key's owner's.
    assert!((30..=60).contains(&forwarded), "{forwarded}");
}

/// Which node owns `path`: the one that answers it without asking a peer.
async fn owner_of(nodes: &[Relais], path: &str) -> usize {
    for (i, node) in nodes.iter().enumerate() {
        let r = ask(&node.url(path)).await;
        let status = r.header("cache-status").unwrap_or("").to_string();
        if !status.contains("owner") {
            return i;
        }
    }
    panic!("no node owns {path}");
}

#[tokio::test]
async fn with_the_owner_gone_the_others_fetch_from_the_origin_in_time() {
    let (o, _) = recording().await;
    let mut nodes = three(o.addr, "").await;
    // A key node 0 does not own.
    let mut k = 0;
    let (path, owner) = loop {
        let path = format!("/k/{k}");
        let owner = owner_of(&nodes, &path).await;
        if owner != 0 {
            break (path, owner);
        }
        k += 1;
    };
    assert_eq!(o.hits(&path), 1);
    nodes.remove(owner).handle.shutdown().await;
    let started = Instant::now();
    let r = ask(&nodes[0].url(&path)).await;
    assert_eq!(r.text(), "object");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert_eq!(o.hits(&path), 2, "asked of the origin, the owner being gone");
    assert!(metric(&nodes[0], "relais_cluster_owner_fallbacks_total{reason=\"error\"} ").await >= 1);
    // Its keys now go to the nodes still up: every new key is fetched once.
    for k in 0..10 {
        let path = format!("/after/{k}");
        for node in &nodes {
            assert_eq!(ask(&node.url(&path)).await.text(), "object");
        }
        assert!(o.hits(&path) <= 2, "{path}: {}", o.hits(&path));
    }
}

#[tokio::test]
async fn an_owner_that_does_not_answer_in_time_is_passed_over() {
    let (o, _) = recording().await;
    // Node n2 passes its health checks and answers nothing else in time.
    let slow = origin()
        .route("/", |req| async move {
            if req.headers().contains_key("relais-peer-check") {
                return text(204, "", &[]);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            text(200, "too late", &[])
        })
        .start()
        .await;
    let ports = [free_port(), free_port(), slow.addr.port()];
    let confs = cluster(o.addr, ports, "");
    let a = relais(&confs[0]).await;
    let b = relais(&confs[1]).await;
    peers_up(&a).await;
    peers_up(&b).await;
    for k in 0..9 {
        let path = format!("/slow/{k}");
        let started = Instant::now();
        assert_eq!(ask(&a.url(&path)).await.text(), "object");
        assert!(started.elapsed() < Duration::from_millis(1500), "{path}: {:?}", started.elapsed());
        assert_eq!(ask(&b.url(&path)).await.text(), "object");
    }
    // The first of n2's keys waits for it; then passive health takes it out.
    assert_eq!(metric(&a, "relais_cluster_owner_fallbacks_total{reason=\"timeout\"} ").await, 1);
    assert!(metric(&a, "relais_cluster_owner_fallbacks_total{reason=\"down\"} ").await >= 1, "some keys are n2's");
}

#[tokio::test]
async fn a_client_claiming_to_be_a_peer_is_not_trusted() {
    let (o, seen) = recording().await;
    let nodes = three(o.addr, "").await;
    let forged = [("relais-forwarded-by", "n1"), ("relais-peer-auth", "1700000000:00ff")];
    for k in 0..6 {
        let path = format!("/forged/{k}");
        for node in &nodes {
            let r = get_with(&node.url(&path), &[forged[0], forged[1], ("host", "shop.test")]).await;
            assert_eq!(r.text(), "object");
        }
        // Were the claim trusted, each node would have fetched the key itself.
        assert_eq!(o.hits(&path), 1, "{path}");
    }
    for headers in seen.lock().unwrap().iter() {
        assert!(headers.get("relais-forwarded-by").is_none(), "{headers:?}");
        assert!(headers.get("relais-peer-auth").is_none(), "{headers:?}");
    }
}

#[tokio::test]
async fn unsafe_methods_and_uncached_routes_are_never_forwarded() {
    let (o, _) = recording().await;
    let nodes = three(o.addr, "").await;
    for k in 0..6 {
        for node in &nodes {
            let post =
                Request::post(node.url(&format!("/form/{k}"))).header("host", "shop.test").body(full("a=1")).unwrap();
            assert_eq!(send(post).await.status, 200);
            assert_eq!(ask(&node.url(&format!("/private/{k}"))).await.text(), "object");
        }
        assert_eq!(o.hits(&format!("/form/{k}")), 3);
        assert_eq!(o.hits(&format!("/private/{k}")), 3);
    }
    for node in &nodes {
        assert_eq!(metric(node, "relais_cluster_forwarded_total{result=\"answered\"} ").await, 0);
    }
}

#[tokio::test]
async fn a_peer_copy_is_kept_only_when_asked() {
    let (o, _) = recording().await;
    let nodes = three(o.addr, "peer_copy_ttl = \"30s\"").await;
    for k in 0..6 {
        let path = format!("/copies/{k}");
        for node in &nodes {
            ask(&node.url(&path)).await;
        }
        // Asked again, every node answers from its own copy.
        for node in &nodes {
            let r = ask(&node.url(&path)).await;
            assert!(r.header("cache-status").unwrap_or("").contains("hit"), "{:?}", r.headers);
        }
        assert_eq!(o.hits(&path), 1);
    }
}

#[test]
fn check_prints_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relais.toml");
    let conf = &cluster(support::dead_addr(), [8081, 8082, 8083], "")[1];
    support::process::write(&file, &format!("{conf}\n[cache]\ndisk_path = \"{}\"", dir.path().display()));
    let out = std::process::Command::new(support::process::bin()).args(["check", "-c"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cluster  node n1 · sharding rendezvous"), "{stdout}");
    assert!(stdout.contains("n1           127.0.0.1:8082 (this node) · owns"), "{stdout}");
    let shares: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.split("owns ").nth(1))
        .map(|s| s.trim_end_matches("% of keys").parse().unwrap())
        .collect();
    assert_eq!(shares.len(), 3, "{stdout}");
    assert!(shares.iter().all(|s| (28.0..39.0).contains(s)), "{stdout}");
}

#[tokio::test]
async fn requests_one_key_serves_have_one_owner() {
    let (o, _) = recording().await;
    let keyed = "[[routes]]\npath = \"/keyed/\"\nupstream = \"o\"\ncache.key = { drop_params = [\"utm_*\"] }";
    let nodes = three(o.addr, keyed).await;
    for k in 0..6 {
        // Each node asked with its own campaign: one key URL, so one owner and one fetch.
        for (i, node) in nodes.iter().enumerate() {
            let r = ask(&node.url(&format!("/keyed/{k}?utm_source=n{i}"))).await;
            assert_eq!(r.text(), "object");
        }
        assert_eq!(o.hits(&format!("/keyed/{k}")), 1, "/keyed/{k}");
    }
}
