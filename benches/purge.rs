//! Purge latency with 100,000 cached entries (both tiers): a URL purge, and a
//! tag purge matching 1,000 entries. Run with `cargo bench --bench purge`.
//! Setup (filling the cache, re-storing what a purge removed, waiting for the
//! disk deletions a purge leaves running in the background) is not timed.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cache_policy::{Policy, Rules};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Request, Response, StatusCode, header};
use relais::config::{CacheConfig, Size};
use relais::internals::PurgeMode;
use relais::internals::Target;
use relais::internals::{Cache, Entry, Stored, key};

const ENTRIES: usize = 100_000;
const PER_TAG: usize = 1_000;

fn entry(i: usize, policy: &Policy) -> (String, Stored) {
    let url = key::url("http", "shop.test", &format!("/p/{i}"));
    let e = Entry {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from(format!("body {i}")),
        file: None,
        policy: policy.clone(),
        url: url.clone(),
        tags: vec![format!("tag-{}", i / PER_TAG)],
        stored_at: SystemTime::now(),
    };
    (key::primary(&url), Stored::Entry(e))
}

fn purge(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        disk_path: dir.path().to_path_buf(),
        memory_capacity: Size::mib(512),
        disk_capacity: Size::mib(4096),
        ..CacheConfig::default()
    };
    let now = SystemTime::now();
    let (req, ()) = Request::get("http://shop.test/").body(()).unwrap().into_parts();
    let (res, ()) = Response::builder().header(header::CACHE_CONTROL, "max-age=3600").body(()).unwrap().into_parts();
    let policy = Policy::new(&req, &res, &Rules::default(), now, now).unwrap();
    let cache = rt.block_on(async {
        let cache = Cache::open(&config, std::sync::Arc::new(relais::internals::Metrics::new())).await.unwrap();
        for i in 0..ENTRIES {
            let (k, v) = entry(i, &policy);
            cache.put(k, v).await;
        }
        cache
    });
    let refill = |range: std::ops::Range<usize>| {
        rt.block_on(async {
            cache.flush().await; // earlier purges' disk deletions, untimed
            for i in range {
                let (k, v) = entry(i, &policy);
                cache.put(k, v).await;
            }
        })
    };

    let mut group = c.benchmark_group("purge, 100k entries");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("url", |b| {
        b.iter_batched(
            || refill(42..43),
            |()| rt.block_on(cache.purge(Target::Urls(vec!["http://shop.test/p/42".into()]), PurgeMode::Hard)),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("tag matching 1,000 entries", |b| {
        b.iter_batched(
            || refill(7 * PER_TAG..8 * PER_TAG),
            |()| {
                let n = rt.block_on(cache.purge(Target::Tags(vec!["tag-7".into()]), PurgeMode::Hard));
                assert_eq!(n, PER_TAG as u64);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("soft tag matching 1,000 entries", |b| {
        b.iter(|| rt.block_on(cache.purge(Target::Tags(vec!["tag-9".into()]), PurgeMode::Soft)))
    });
    group.finish();
}

criterion_group!(benches, purge);
criterion_main!(benches);
