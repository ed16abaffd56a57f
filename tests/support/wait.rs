//! Waiting for what relais does in the background (a store after a body ends,
//! a purge index rebuilt from disk, a health check's verdict) by watching what
//! it shows, rather than by sleeping for a guess: a fixed sleep is too short on
//! a loaded machine and too long everywhere else.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Relais;

/// How long a condition may take before the test fails: far more than any
/// should need, so that only a real fault reaches it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 10 ms until it holds; panics naming `what` after [`DEADLINE`].
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "still waiting after {DEADLINE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A pause for asserting that something does *not* happen: a store that
/// should be refused would have been written by now. What should happen is
/// waited for with [`until`] or [`Relais::stored`] instead.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

impl Relais {
    /// `GET /stats` as JSON.
    pub async fn stats(&self) -> Value {
        serde_json::from_slice(&self.admin("GET", "/stats", "").await.body).expect("/stats is JSON")
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.admin("GET", "/metrics", "").await.text()
    }

    /// What the admin `/cache` view lists for `url` (a path is on this proxy's address).
    pub async fn cached(&self, url: &str) -> Vec<Value> {
        let url = if url.starts_with('/') { self.url(url) } else { url.to_string() };
        let view = self.admin("GET", &format!("/cache?url={}", escape(&url)), "").await;
        let view: Value = serde_json::from_slice(&view.body).expect("/cache is JSON");
        let entries = view["entries"].as_array().cloned().unwrap_or_default();
        entries.into_iter().filter(|e| e["kind"] == "entry").collect()
    }

    /// Seconds of freshness left to the first response stored for `url` (negative once stale).
    pub async fn ttl(&self, url: &str) -> Option<i64> {
        self.cached(url).await.first()?["ttl"].as_i64()
    }

    /// Waits until `url` (or a path on this proxy) has a stored response.
    pub async fn stored(&self, url: &str) {
        self.stored_n(url, 1).await;
    }

    /// Waits until `url` (or a path on this proxy) has `n` stored responses (its variants).
    pub async fn stored_n(&self, url: &str, n: usize) {
        until(&format!("{n} stored response(s) for {url}"), || async { self.cached(url).await.len() >= n }).await;
    }

    /// Waits until the disk tier holds `n` entries (Vary records count too).
    pub async fn on_disk(&self, n: u64) {
        until(&format!("{n} entries on disk"), || async {
            self.stats().await["cache"]["disk"]["entries"].as_u64() >= Some(n)
        })
        .await;
    }
}

/// `url` as a query parameter's value.
fn escape(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
