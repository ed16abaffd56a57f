//! Counters and gauges for `GET /metrics` (Prometheus text format 0.0.4) and `GET /stats` (JSON).
//!
//! Hand-rolled on atomics. Labelled counters live in a `RwLock<HashMap<..>>`: recording takes the
//! read lock and does a relaxed `fetch_add`; the write lock is taken only to add a new label set.
//! No lock is held across anything but a map lookup, and nothing here awaits. Point-in-time values
//! (tier sizes, server health) are not stored here: the caller gathers them at scrape time as
//! [`Gauges`]. Every metric name starts with `relais_`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Value, json};

/// Upper bounds of the origin latency histogram, in seconds (`+Inf` is implied).
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const PURGE_KINDS: [&str; 4] = ["url", "prefix", "tag", "all"];
const TIERS: [&str; 2] = ["memory", "disk"];

/// Values the caller reads at scrape time.
#[derive(Default, Clone, Debug)]
pub struct Gauges {
    pub memory_bytes: u64,
    pub memory_entries: u64,
    pub memory_capacity: u64,
    pub disk_bytes: u64,
    pub disk_entries: u64,
    pub disk_capacity: u64,
    /// Keys the purge index knows (entries and Vary records of either tier).
    pub indexed_keys: u64,
    /// Bytes of bodies being fetched to be stored (`cache.fill_memory` in use).
    pub fill_bytes: u64,
    pub servers: Vec<ServerGauge>,
}

/// One upstream server as the balancer sees it now.
#[derive(Clone, Debug)]
pub struct ServerGauge {
    pub upstream: String,
    pub address: String,
    pub up: bool,
    pub in_flight: u64,
}

/// Request counts: route → cache outcome → status. Nested so that a lookup borrows `&str`s and
/// the hot path allocates nothing.
type RequestMap = HashMap<String, HashMap<String, HashMap<u16, AtomicU64>>>;

/// All counters of one proxy, shared as `Arc<Metrics>` across reloads.
pub struct Metrics {
    requests: RwLock<RequestMap>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency: Labelled<Histogram>,
    purges: Labelled<PurgeCounts>,
    evictions: Labelled<AtomicU64>,
    collapsed_waiters: AtomicU64,
    disk_writes_skipped: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: RwLock::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            latency: Labelled::new(&[]),
            purges: Labelled::new(&PURGE_KINDS),
            evictions: Labelled::new(&TIERS),
            collapsed_waiters: AtomicU64::new(0),
            disk_writes_skipped: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }

    /// One finished request. `route` is a `routes[3]` style label or `none`, `cache` the outcome
    /// word (`hit`, `uri-miss`, `bypass`, `-` …), `bytes_in`/`bytes_out` body bytes.
    pub fn request(&self, route: &str, status: u16, cache: &str, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        if let Some(count) = read(&self.requests).get(route).and_then(|m| m.get(cache)).and_then(|m| m.get(&status)) {
            count.fetch_add(1, Relaxed);
            return;
        }
        let mut map = write(&self.requests);
        let by_status = map.entry(route.to_owned()).or_default().entry(cache.to_owned()).or_default();
        by_status.entry(status).or_default().fetch_add(1, Relaxed);
    }

    /// Time from sending a request to `upstream` until its response head arrived.
    pub fn origin_latency(&self, upstream: &str, seconds: f64) {
        self.latency.with(upstream, |h| h.observe(seconds));
    }

    /// One purge of `kind` (`url`, `prefix`, `tag`, `all`) that removed or marked `entries`.
    pub fn purge(&self, kind: &str, soft: bool, entries: u64) {
        self.purges.with(kind, |p| {
            let count = if soft { &p.soft } else { &p.hard };
            count.fetch_add(1, Relaxed);
            p.entries.fetch_add(entries, Relaxed);
        });
    }

    /// A request that waited on another request's origin fetch instead of making its own.
    pub fn collapsed_waiter(&self) {
        self.collapsed_waiters.fetch_add(1, Relaxed);
    }

    /// An entry kept in memory only because the disk was `disk_write_backlog` behind.
    pub fn disk_write_skipped(&self) {
        self.disk_writes_skipped.fetch_add(1, Relaxed);
    }

    pub fn reload(&self, ok: bool) {
        let count = if ok { &self.reloads_ok } else { &self.reloads_failed };
        count.fetch_add(1, Relaxed);
    }

    /// One entry evicted from `tier` (`memory` or `disk`) to make room.
    pub fn eviction(&self, tier: &str) {
        self.evictions.with(tier, |c| {
            c.fetch_add(1, Relaxed);
        });
    }

    /// Every metric in Prometheus text format 0.0.4, with `gauges` as gauge families.
    pub fn render_prometheus(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let o = &mut out;
        let requests = self.request_series();
        family(o, "requests_total", "counter", "Finished requests by route, status code and cache outcome.");
        for r in &requests {
            let status = r.status.to_string();
            sample(o, "requests_total", &[("route", &r.route), ("status", &status), ("cache", &r.cache)], r.count);
        }
        let (hits, lookups) = hits_and_lookups(&requests);
        family(o, "cache_hits_total", "counter", "Requests served from the cache (hit or stale).");
        sample(o, "cache_hits_total", &[], hits);
        family(o, "cache_lookups_total", "counter", "Requests that looked up the cache.");
        sample(o, "cache_lookups_total", &[], lookups);
        family(o, "bytes_received_total", "counter", "Request body bytes received from clients.");
        sample(o, "bytes_received_total", &[], self.bytes_in.load(Relaxed));
        family(o, "bytes_sent_total", "counter", "Response body bytes sent to clients.");
        sample(o, "bytes_sent_total", &[], self.bytes_out.load(Relaxed));

        family(o, "origin_latency_seconds", "histogram", "Time from sending a request upstream to its response head.");
        for (upstream, h) in self.latency.snapshot(Histogram::snapshot) {
            let les = BUCKETS.iter().map(|le| le.to_string()).chain(["+Inf".to_owned()]);
            for (le, count) in les.zip(h.cumulative) {
                sample(o, "origin_latency_seconds_bucket", &[("upstream", &upstream), ("le", &le)], count);
            }
            sample(o, "origin_latency_seconds_sum", &[("upstream", &upstream)], h.sum);
            sample(o, "origin_latency_seconds_count", &[("upstream", &upstream)], h.count());
        }

        family(o, "upstream_server_up", "gauge", "Whether the balancer considers the server healthy (1) or not (0).");
        for s in &gauges.servers {
            sample(o, "upstream_server_up", &[("upstream", &s.upstream), ("server", &s.address)], u8::from(s.up));
        }
        family(o, "upstream_server_in_flight", "gauge", "Requests currently sent to the server.");
        for s in &gauges.servers {
            sample(o, "upstream_server_in_flight", &[("upstream", &s.upstream), ("server", &s.address)], s.in_flight);
        }
        for (name, help, value) in [
            ("cache_memory_bytes", "Bytes held by the memory tier.", gauges.memory_bytes),
            ("cache_memory_entries", "Entries held by the memory tier.", gauges.memory_entries),
            ("cache_memory_capacity_bytes", "Configured size of the memory tier.", gauges.memory_capacity),
            ("cache_disk_bytes", "Bytes held by the disk tier.", gauges.disk_bytes),
            ("cache_disk_entries", "Entries held by the disk tier.", gauges.disk_entries),
            ("cache_disk_capacity_bytes", "Configured size of the disk tier.", gauges.disk_capacity),
            ("cache_indexed_keys", "Keys in the purge index (either tier).", gauges.indexed_keys),
            ("cache_fill_bytes", "Bytes of bodies held while being fetched to be stored.", gauges.fill_bytes),
        ] {
            family(o, name, "gauge", help);
            sample(o, name, &[], value);
        }

        family(o, "cache_evictions_total", "counter", "Entries evicted to make room, by tier.");
        for (tier, n) in self.evictions.snapshot(|c| c.load(Relaxed)) {
            sample(o, "cache_evictions_total", &[("tier", &tier)], n);
        }
        let purges = self.purges.snapshot(PurgeCounts::load);
        family(o, "purges_total", "counter", "Purge requests by kind and softness.");
        for (kind, [hard, soft, _]) in &purges {
            sample(o, "purges_total", &[("kind", kind), ("soft", "false")], hard);
            sample(o, "purges_total", &[("kind", kind), ("soft", "true")], soft);
        }
        family(o, "purged_entries_total", "counter", "Entries removed or marked stale by purges, by kind.");
        for (kind, [_, _, entries]) in &purges {
            sample(o, "purged_entries_total", &[("kind", kind)], entries);
        }
        family(o, "collapsed_waiters_total", "counter", "Requests that waited on another request's origin fetch.");
        sample(o, "collapsed_waiters_total", &[], self.collapsed_waiters.load(Relaxed));
        family(o, "cache_disk_writes_skipped_total", "counter", "Entries kept in memory only: the disk was behind.");
        sample(o, "cache_disk_writes_skipped_total", &[], self.disk_writes_skipped.load(Relaxed));
        family(o, "reloads_total", "counter", "Configuration reloads by result.");
        sample(o, "reloads_total", &[("result", "ok")], self.reloads_ok.load(Relaxed));
        sample(o, "reloads_total", &[("result", "failed")], self.reloads_failed.load(Relaxed));
        out
    }

    /// The same numbers as compact JSON for `/stats`.
    pub fn stats_json(&self, gauges: &Gauges) -> Value {
        let requests = self.request_series();
        let (mut by_cache, mut by_status, mut by_route) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for r in &requests {
            *by_cache.entry(r.cache.as_str()).or_insert(0u64) += r.count;
            *by_status.entry(r.status).or_insert(0u64) += r.count;
            *by_route.entry(r.route.as_str()).or_insert(0u64) += r.count;
        }
        let (hits, lookups) = hits_and_lookups(&requests);
        let hit_ratio = if lookups == 0 { 0.0 } else { hits as f64 / lookups as f64 };
        let tier =
            |bytes: u64, entries: u64, capacity: u64| json!({"bytes": bytes, "entries": entries, "capacity": capacity});

        let latency = self.latency.snapshot(Histogram::snapshot);
        let purges: serde_json::Map<String, Value> = self
            .purges
            .snapshot(PurgeCounts::load)
            .into_iter()
            .map(|(kind, [hard, soft, entries])| (kind, json!({"hard": hard, "soft": soft, "entries": entries})))
            .collect();
        let evictions: BTreeMap<String, u64> = self.evictions.snapshot(|c| c.load(Relaxed)).into_iter().collect();
        json!({
            "requests": {
                "total": requests.iter().map(|r| r.count).sum::<u64>(),
                "by_cache": by_cache,
                "by_status": by_status,
                "by_route": by_route,
            },
            "bytes": {"in": self.bytes_in.load(Relaxed), "out": self.bytes_out.load(Relaxed)},
            "hit_ratio": hit_ratio,
            "cache": {
                "memory": tier(gauges.memory_bytes, gauges.memory_entries, gauges.memory_capacity),
                "disk": tier(gauges.disk_bytes, gauges.disk_entries, gauges.disk_capacity),
                "indexed_keys": gauges.indexed_keys,
            },
            "upstreams": upstreams_json(&gauges.servers, &latency),
            "purges": purges,
            "collapsed_waiters": self.collapsed_waiters.load(Relaxed),
            "reloads": {"ok": self.reloads_ok.load(Relaxed), "failed": self.reloads_failed.load(Relaxed)},
            "evictions": evictions,
            "disk_writes_skipped": self.disk_writes_skipped.load(Relaxed),
        })
    }

    /// Every request series, sorted so the output is stable between scrapes.
    fn request_series(&self) -> Vec<RequestSeries> {
        let mut series = Vec::new();
        for (route, by_cache) in read(&self.requests).iter() {
            for (cache, by_status) in by_cache {
                for (status, count) in by_status {
                    let count = count.load(Relaxed);
                    series.push(RequestSeries { route: route.clone(), status: *status, cache: cache.clone(), count });
                }
            }
        }
        series.sort_unstable_by(|a, b| (&a.route, a.status, &a.cache).cmp(&(&b.route, b.status, &b.cache)));
        series
    }
}

struct RequestSeries {
    route: String,
    status: u16,
    cache: String,
    count: u64,
}

/// Hit-ratio inputs: hits are served from storage, lookups are requests that consulted it at all.
fn hits_and_lookups(requests: &[RequestSeries]) -> (u64, u64) {
    let hits = requests.iter().filter(|r| matches!(r.cache.as_str(), "hit" | "stale")).map(|r| r.count).sum();
    let lookups = requests
        .iter()
        .filter(|r| !matches!(r.cache.as_str(), "bypass" | "method" | "upgrade" | "-"))
        .map(|r| r.count)
        .sum();
    (hits, lookups)
}

/// One `/stats` entry per upstream that has servers or has seen a response.
fn upstreams_json(servers: &[ServerGauge], latency: &[(String, HistogramSnapshot)]) -> Vec<Value> {
    let mut names: Vec<&str> = servers.iter().map(|s| s.upstream.as_str()).collect();
    names.extend(latency.iter().map(|(n, _)| n.as_str()));
    names.sort_unstable();
    names.dedup();
    let upstream = |name: &str| {
        let own: Vec<Value> = servers
            .iter()
            .filter(|s| s.upstream == name)
            .map(|s| json!({"address": s.address, "up": s.up, "in_flight": s.in_flight}))
            .collect();
        let (count, sum) = latency.iter().find(|(n, _)| n == name).map_or((0, 0.0), |(_, h)| (h.count(), h.sum));
        let mean = if count == 0 { 0.0 } else { sum / count as f64 };
        json!({"name": name, "servers": own, "origin_responses": count, "origin_latency_mean_seconds": mean})
    };
    names.into_iter().map(upstream).collect()
}

/// Values keyed by one label. The write lock is taken only to add a key.
struct Labelled<V>(RwLock<HashMap<String, V>>);

impl<V: Default> Labelled<V> {
    /// Starts with `keys` present, so their series show up at zero before the first event.
    fn new(keys: &[&str]) -> Self {
        Labelled(RwLock::new(keys.iter().map(|k| ((*k).to_owned(), V::default())).collect()))
    }

    fn with(&self, key: &str, f: impl FnOnce(&V)) {
        if let Some(v) = read(&self.0).get(key) {
            return f(v);
        }
        f(write(&self.0).entry(key.to_owned()).or_default());
    }

    fn snapshot<T>(&self, f: impl Fn(&V) -> T) -> Vec<(String, T)> {
        let mut all: Vec<(String, T)> = read(&self.0).iter().map(|(k, v)| (k.clone(), f(v))).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[derive(Default)]
struct PurgeCounts {
    hard: AtomicU64,
    soft: AtomicU64,
    entries: AtomicU64,
}

impl PurgeCounts {
    fn load(&self) -> [u64; 3] {
        [self.hard.load(Relaxed), self.soft.load(Relaxed), self.entries.load(Relaxed)]
    }
}

/// One slot per bucket plus `+Inf`, each counting only its own range; the count is their sum, so
/// the `+Inf` bucket and `_count` always agree even when read during an update.
#[derive(Default)]
struct Histogram {
    slots: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

struct HistogramSnapshot {
    cumulative: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl HistogramSnapshot {
    fn count(&self) -> u64 {
        self.cumulative[BUCKETS.len()]
    }
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        let slot = BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(BUCKETS.len());
        self.slots[slot].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add((seconds * 1e9).round() as u64, Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BUCKETS.len() + 1];
        let mut running = 0;
        for (c, slot) in cumulative.iter_mut().zip(&self.slots) {
            running += slot.load(Relaxed);
            *c = running;
        }
        HistogramSnapshot { cumulative, sum: self.sum_nanos.load(Relaxed) as f64 / 1e9 }
    }
}

// The maps hold only atomics, so a panic elsewhere cannot leave them half-updated: ignore poison.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP relais_{name} {help}\n# TYPE relais_{name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    let labels: Vec<String> = labels.iter().map(|(key, value)| format!("{key}=\"{}\"", escape(value))).collect();
    let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
    let _ = writeln!(out, "relais_{name}{labels} {value}");
}

/// Label values escape backslash, double quote and newline, as text format 0.0.4 asks.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series written exactly as `series` (name and labels).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_move() {
        let m = Metrics::new();
        let series = r#"relais_requests_total{route="routes[0]",status="200",cache="hit"}"#;
        let before = m.render_prometheus(&Gauges::default());
        assert_eq!(value(&before, series), None);
        assert_eq!(value(&before, "relais_bytes_sent_total"), Some(0.0));
        // Pre-registered label sets show up before their first event.
        for kind in PURGE_KINDS {
            assert_eq!(value(&before, &format!(r#"relais_purges_total{{kind="{kind}",soft="false"}}"#)), Some(0.0));
            assert_eq!(value(&before, &format!(r#"relais_purged_entries_total{{kind="{kind}"}}"#)), Some(0.0));
        }
        assert_eq!(value(&before, r#"relais_reloads_total{result="ok"}"#), Some(0.0));
        assert_eq!(value(&before, r#"relais_reloads_total{result="failed"}"#), Some(0.0));
        assert_eq!(value(&before, r#"relais_cache_evictions_total{tier="disk"}"#), Some(0.0));
        m.request("routes[0]", 200, "hit", 10, 500);
        m.request("routes[0]", 200, "hit", 0, 300);
        m.eviction("disk");
        m.collapsed_waiter();
        m.reload(false);
        m.purge("tag", true, 7);
        let after = m.render_prometheus(&Gauges::default());
        assert_eq!(value(&after, series), Some(2.0));
        assert_eq!(value(&after, "relais_bytes_received_total"), Some(10.0));
        assert_eq!(value(&after, "relais_bytes_sent_total"), Some(800.0));
        assert_eq!(value(&after, r#"relais_cache_evictions_total{tier="disk"}"#), Some(1.0));
        assert_eq!(value(&after, "relais_collapsed_waiters_total"), Some(1.0));
        assert_eq!(value(&after, r#"relais_reloads_total{result="failed"}"#), Some(1.0));
        assert_eq!(value(&after, r#"relais_purges_total{kind="tag",soft="true"}"#), Some(1.0));
        assert_eq!(value(&after, r#"relais_purged_entries_total{kind="tag"}"#), Some(7.0));
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new();
        for s in [0.003, 0.005, 0.03, 0.3, 30.0] {
            m.origin_latency("app", s);
        }
        let text = m.render_prometheus(&Gauges::default());
        let bucket =
            |le: &str| value(&text, &format!(r#"relais_origin_latency_seconds_bucket{{upstream="app",le="{le}"}}"#));
        let les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
        let expected = [2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0, 5.0];
        for (le, n) in les.into_iter().zip(expected) {
            assert_eq!(bucket(le), Some(n), "le={le}");
        }
        assert_eq!(value(&text, r#"relais_origin_latency_seconds_count{upstream="app"}"#), Some(5.0));
        let sum = value(&text, r#"relais_origin_latency_seconds_sum{upstream="app"}"#).unwrap();
        assert!((sum - 30.338).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.request("a\"b\\c\nd", 404, "-", 0, 0);
        let text = m.render_prometheus(&Gauges::default());
        assert_eq!(value(&text, r#"relais_requests_total{route="a\"b\\c\nd",status="404",cache="-"}"#), Some(1.0));
    }

    #[test]
    fn hit_ratio_counts_hits_over_lookups() {
        let m = Metrics::new();
        let words =
            [("hit", 3), ("stale", 1), ("uri-miss", 2), ("revalidated", 2), ("bypass", 5), ("method", 1), ("-", 1)];
        for (cache, n) in words {
            for _ in 0..n {
                m.request("routes[0]", 200, cache, 0, 0);
            }
        }
        let text = m.render_prometheus(&Gauges::default());
        assert_eq!(value(&text, "relais_cache_hits_total"), Some(4.0));
        assert_eq!(value(&text, "relais_cache_lookups_total"), Some(8.0));
        let stats = m.stats_json(&Gauges::default());
        assert_eq!(stats["hit_ratio"], 0.5);
        assert_eq!(stats["requests"]["total"], 15);
        assert_eq!(stats["requests"]["by_cache"]["bypass"], 5);
        assert_eq!(stats["requests"]["by_status"]["200"], 15);
        assert_eq!(Metrics::new().stats_json(&Gauges::default())["hit_ratio"], 0.0);
    }

    #[test]
    fn text_format_is_well_formed() {
        let m = Metrics::new();
        m.request("routes[1]", 503, "bypass", 1, 2);
        m.origin_latency("app", 0.2);
        m.eviction("memory");
        let server = ServerGauge { upstream: "app".into(), address: "10.0.0.1:80".into(), up: true, in_flight: 3 };
        let gauges = Gauges { memory_bytes: 5, servers: vec![server], ..Gauges::default() };
        let text = m.render_prometheus(&gauges);
        assert!(text.ends_with('\n'));

        let mut help = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                *help.entry(rest.split(' ').next().unwrap().to_owned()).or_insert(0) += 1;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert_eq!(types.insert(name.to_owned(), kind.to_owned()), None, "TYPE twice: {line}");
                continue;
            }
            let (series, v) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            v.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    assert!(labels.ends_with('}'), "{line}");
                    name
                }
                None => series,
            };
            assert!(name.starts_with("relais_"), "{line}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(types.contains_key(name) || types.get(base).is_some_and(|k| k == "histogram"), "no TYPE: {line}");
        }
        assert_eq!(help.len(), types.len());
        assert!(help.values().all(|&n| n == 1));
        assert!(types.keys().all(|t| help.contains_key(t)));
        assert_eq!(value(&text, r#"relais_upstream_server_up{upstream="app",server="10.0.0.1:80"}"#), Some(1.0));
        assert_eq!(value(&text, r#"relais_upstream_server_in_flight{upstream="app",server="10.0.0.1:80"}"#), Some(3.0));
        assert_eq!(value(&text, "relais_cache_memory_bytes"), Some(5.0));

        let stats = m.stats_json(&gauges);
        assert_eq!(stats["upstreams"][0]["name"], "app");
        assert_eq!(stats["upstreams"][0]["servers"][0]["in_flight"], 3);
        assert_eq!(stats["upstreams"][0]["origin_responses"], 1);
        assert_eq!(stats["evictions"]["memory"], 1);
        assert_eq!(stats["purges"]["all"]["soft"], 0);
    }

    #[test]
    fn concurrent_requests_are_all_counted() {
        let m = Metrics::new();
        std::thread::scope(|scope| {
            for t in 0..8 {
                let m = &m;
                // Threads share some label sets and race to insert others.
                scope.spawn(move || {
                    for i in 0..10_000u16 {
                        m.request(&format!("routes[{}]", t % 3), 200 + i % 4, "hit", 1, 2);
                    }
                });
            }
        });
        let stats = m.stats_json(&Gauges::default());
        assert_eq!(stats["requests"]["total"], 80_000);
        assert_eq!(stats["bytes"]["out"], 160_000);
        assert_eq!(stats["requests"]["by_route"]["routes[0]"], 30_000);
    }
}
