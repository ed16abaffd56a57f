//! relais as a library: start a proxy from a `Config` built in code, send it
//! a request twice, and shut it down.
//!
//! Run: `cargo run --example embed`
//!
//! Expect the first answer to take about 300 ms (a miss: the demo origin is
//! slow) and the second to come from the cache at once:
//!
//! ```text
//! 1st: 200 OK in 305 ms, cache-status: relais; fwd=uri-miss; ttl=59; stored
//! 2nd: 200 OK in 1 ms, cache-status: relais; hit; ttl=59
//! ```

use std::time::Instant;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The slow origin that `relais demo` uses.
    let origin = relais::demo::start_origin().await?;
    let cache = tempfile_dir();
    let config = relais::Config::from_toml(
        &format!(
            r#"
            [server]
            listen = ["127.0.0.1:0"]
            [admin]
            listen = "127.0.0.1:0"
            [cache]
            disk_path = "{}"
            [upstreams.app]
            servers = ["{origin}"]
            [[routes]]
            upstream = "app"
            "#,
            cache.display()
        ),
        "embed example",
    )?;
    let handle = relais::start(config).await?;
    let url = format!("http://{}/", handle.addrs()[0]);

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    for round in ["1st", "2nd"] {
        let started = Instant::now();
        let res = client.get(url.parse()?).await?;
        let status = res.status();
        let cache_status = res.headers().get("cache-status").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        res.into_body().collect().await?;
        println!("{round}: {status} in {} ms, cache-status: {cache_status}", started.elapsed().as_millis());
        // The entry is written as its body ends; give it a moment before asking again.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

/// A fresh directory for the disk tier.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relais-embed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
