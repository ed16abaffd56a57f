//! What the tiers cost per object, and how a restart copes with a full disk
//! tier: fills `SCALE_ENTRIES` (default 1,000,000) small entries into the disk
//! tier through the library (no HTTP), then reports the fill rate, RSS and RAM
//! per disk-only entry, the time for the cache to open again after a restart
//! (when relais can listen) and the time until its disk index is loaded;
//! first, in a fresh process, the RAM per entry of the memory tier for
//! `SCALE_MEMORY_ENTRIES` (default 100,000). `SCALE_DIR` puts the disk tier somewhere else than a temp dir.
//!
//! `SCALE_CONCURRENCY` (default 64) stores run at once, as many fills do in relais.
//!
//! Run with `cargo bench --bench scale` (`SCALE_ENTRIES=20000` for a quick look).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use cache_policy::{Policy, Rules};
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode, header};
use relais::config::{CacheConfig, Size};
use relais::internals::{Cache, Entry, Stored, key};
use relais::internals::{Metrics, PurgeMode, Target};

// The allocator relais runs with, so RSS means the same as in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kib.unwrap_or(0) * 1024
}

fn entry(i: usize, policy: &Policy) -> (String, Stored) {
    let url = key::url("http", "shop.test", &format!("/p/{i}"));
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    let e = Entry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(format!("body {i}")),
        file: None,
        policy: policy.clone(),
        url: url.clone(),
        tags: Vec::new(),
        stored_at: SystemTime::now(),
    };
    (key::primary(&url), Stored::Entry(e))
}

async fn open(config: &CacheConfig) -> Arc<Cache> {
    Cache::open(config, Arc::new(Metrics::new())).await.unwrap()
}

fn main() {
    // Each phase in a process of its own, so RSS is not what an earlier phase left.
    let phase = std::env::var("SCALE_PHASE").unwrap_or_default();
    if phase.is_empty() {
        for phase in ["memory", "disk"] {
            let exe = std::env::current_exe().unwrap();
            let ok = std::process::Command::new(exe).env("SCALE_PHASE", phase).status().unwrap().success();
            assert!(ok, "the {phase} phase failed");
        }
        return;
    }
    let entries = env("SCALE_ENTRIES", 1_000_000);
    let memory_entries = env("SCALE_MEMORY_ENTRIES", 100_000);
    let temp = tempfile::tempdir().unwrap();
    let dir = std::env::var("SCALE_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| temp.path().to_path_buf());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let now = SystemTime::now();
    let (req, ()) = Request::get("http://shop.test/").body(()).unwrap().into_parts();
    let (res, ()) = Response::builder().header(header::CACHE_CONTROL, "max-age=86400").body(()).unwrap().into_parts();
    let policy = Policy::new(&req, &res, &Rules::default(), now, now).unwrap();
    // A memory tier too small to hold anything for long: entries live on disk.
    let disk_only = CacheConfig {
        disk_path: dir.clone(),
        memory_capacity: Size::mib(1),
        disk_capacity: Size::mib(64 * 1024),
        ..CacheConfig::default()
    };

    if phase == "memory" {
        rt.block_on(memory_phase(memory_entries, &policy));
        return;
    }
    rt.block_on(async {
        let before = rss_bytes();
        let cache = open(&disk_only).await;
        let started = Instant::now();
        // Stores come from many fills at once in relais, as here.
        let concurrency = env("SCALE_CONCURRENCY", 64);
        futures_util::stream::iter(0..entries)
            .for_each_concurrent(concurrency, |i| {
                let (k, v) = entry(i, &policy);
                let cache = cache.clone();
                async move { cache.put(k, v).await }
            })
            .await;
        cache.flush().await;
        let fill = started.elapsed();
        let rss = rss_bytes();
        println!(
            "disk fill: {entries} entries in {:.1} s = {:.0} entries/s ({concurrency} stores at a time)",
            fill.as_secs_f64(),
            entries as f64 / fill.as_secs_f64()
        );
        println!(
            "disk-only RSS: {:.1} MB ({:.0} B per entry, beside a {:.1} MB start)",
            rss as f64 / 1e6,
            rss.saturating_sub(before) as f64 / entries as f64,
            before as f64 / 1e6
        );
        cache.close();
        drop(cache);
    });
    // A restart: a new runtime, the same directory.
    drop(rt);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let before = rss_bytes();
        let started = Instant::now();
        let cache = open(&disk_only).await;
        let opened = started.elapsed();
        cache.index_disk();
        let first = cache.get(&entry(entries / 2, &policy).0).await;
        assert!(first.is_some(), "an entry stored before the restart is served");
        let first_hit = started.elapsed();
        let disk = cache.disk().expect("a disk tier").clone();
        disk.loaded().await;
        let loaded = started.elapsed();
        cache.indexed().await;
        println!(
            "restart: cache open (relais can listen) after {:.3} s, first hit after {:.3} s; \
             disk map of {} entries loaded after {:.2} s, purge index after {:.2} s",
            opened.as_secs_f64(),
            first_hit.as_secs_f64(),
            disk.entries(),
            loaded.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        // A prefix no entry has: the cost of reading the disk's index for one.
        let started = Instant::now();
        let purged = cache.purge(Target::Prefixes(vec!["http://shop.test/none/".into()]), PurgeMode::Hard).await;
        println!(
            "purge by prefix (the disk's index read through): {:.2} s for {purged} of {} entries",
            started.elapsed().as_secs_f64(),
            disk.entries()
        );
        let started = Instant::now();
        let url = key::url("http", "shop.test", &format!("/p/{}", entries / 3));
        let purged = cache.purge(Target::Urls(vec![url]), PurgeMode::Hard).await;
        println!("purge by URL (its label): {:.3} ms for {purged} entry", started.elapsed().as_secs_f64() * 1e3);
        let rss = rss_bytes();
        println!(
            "after restart and load RSS: {:.1} MB ({:.0} B per entry over the {:.1} MB before the restart)",
            rss as f64 / 1e6,
            rss.saturating_sub(before) as f64 / entries as f64,
            before as f64 / 1e6
        );
    });
    drop(rt);
}

/// RAM per entry held in the memory tier (its disk copies are written too).
async fn memory_phase(entries: usize, policy: &Policy) {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        disk_path: dir.path().to_path_buf(),
        memory_capacity: Size::mib(4096),
        disk_capacity: Size::mib(64 * 1024),
        ..CacheConfig::default()
    };
    let cache = open(&config).await;
    cache.flush().await;
    let before = rss_bytes();
    for i in 0..entries {
        let (k, v) = entry(i, policy);
        cache.put(k, v).await;
    }
    cache.flush().await;
    let per = rss_bytes().saturating_sub(before) as f64 / entries as f64;
    println!(
        "memory tier: {entries} entries of ~10 B body + 1 header, {per:.0} B of RSS per entry (disk copies included)"
    );
}
