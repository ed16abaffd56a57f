//! Cluster purge latency: from the admin purge call on node 1 to applied on all
//! three nodes, over `CLUSTER_PURGES` (default 1,000) purges one after another on
//! loopback. Three relais run in this process, a `nats-server -js` beside them;
//! each purge is `POST /purge?wait=applied`, which answers once every node said it
//! applied the purge's sequence, so its duration is the latency measured. Prints
//! p50, p90, p99 and the maximum.
//!
//! Run with `cargo bench --bench cluster_purge` (needs `nats-server` on the PATH).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::main]
async fn main() {
    let purges: usize = std::env::var("CLUSTER_PURGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let store = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let mut nats = std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string(), "-sd"])
        .arg(store.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server on the PATH");
    while tokio::net::TcpStream::connect(("127.0.0.1", nats_port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ports = [free_port(), free_port(), free_port()];
    let peers: Vec<String> = ports.iter().enumerate().map(|(i, p)| format!("n{} = \"127.0.0.1:{p}\"", i + 1)).collect();
    let (mut nodes, mut dirs) = (Vec::new(), Vec::new());
    for (i, port) in ports.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [cache]\ndisk_path = \"{}\"\n[upstreams.o]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nupstream = \"o\"\n\
             [cluster]\nnode = \"n{}\"\nsharding = \"off\"\npeers = {{ {} }}\n\
             [cluster.bus]\nurl = \"nats://127.0.0.1:{nats_port}\"\nstream = \"bench\"",
            dir.path().display(),
            i + 1,
            peers.join(", ")
        );
        let config = relais::Config::from_toml(&toml, "bench.toml").unwrap();
        nodes.push(relais::start(config).await.unwrap());
        dirs.push(dir);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let admin = nodes[0].admin_addr();
    let purge = |i: usize| {
        let req = http::Request::post(format!("http://{admin}/purge?wait=applied&timeout=5000"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(r#"{{"url": "http://site.test/p/{i}"}}"#))))
            .unwrap();
        let client = client.clone();
        async move {
            let res = client.request(req).await.unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };
    // Until every node has heard from the others.
    loop {
        let answer = purge(usize::MAX).await;
        let nodes = &answer["cluster"]["nodes"];
        if ["n1", "n2", "n3"].iter().all(|n| nodes[n] == "applied") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut took = Vec::with_capacity(purges);
    for i in 0..purges {
        let start = Instant::now();
        let answer = purge(i).await;
        took.push(start.elapsed());
        assert!(answer.get("warning").is_none(), "purge {i}: {answer}");
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "cluster purge, admin call to applied on 3 nodes, {purges} purges: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        took.last().unwrap().as_secs_f64() * 1000.0
    );
    for node in nodes {
        node.shutdown().await;
    }
    let _ = nats.kill();
    let _ = nats.wait();
}
