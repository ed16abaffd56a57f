//! `GET /metrics` (Prometheus text format 0.0.4) and `GET /stats` (JSON),
//! rendered from the registry ([`crate::metrics`]) and from point-in-time
//! values (tier sizes, server health) gathered at scrape time as [`Gauges`].
//! Every metric name here starts with `relais_`; the process's own figures,
//! named as every Prometheus client names them, are [`super::process`]'s.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

use serde_json::{Value, json};

use crate::metrics::{BUCKETS, CacheOutcome, HistogramSnapshot, Metrics, RequestSeries, UpstreamFailure, word};

/// Values the caller reads at scrape time.
#[derive(Default, Clone, Debug)]
pub(super) struct Gauges {
    pub memory_bytes: u64,
    pub memory_entries: u64,
    pub memory_capacity: u64,
    pub disk_bytes: u64,
    pub disk_entries: u64,
    pub disk_capacity: u64,
    /// Keys the purge index knows (the memory tier's, and tagged ones on disk).
    pub indexed_keys: u64,
    /// Bytes of bodies being fetched to be stored (`cache.fill_memory` in use).
    pub fill_bytes: u64,
    /// Entries waiting to be written to disk from memory (the backlog had no room).
    pub disk_writes_waiting: u64,
    /// Bytes of encoded copies of cached bodies, and how many were made.
    pub encoded_bytes: u64,
    pub encoded_made: u64,
    /// Each certificate name served, with its expiry (Unix seconds).
    pub certificates: Vec<(String, u64)>,
    pub servers: Vec<ServerGauge>,
}

/// One upstream server as the balancer sees it now.
#[derive(Clone, Debug)]
pub(super) struct ServerGauge {
    pub upstream: String,
    pub address: String,
    pub up: bool,
    /// `up`, `unchecked` (no health check answered yet), `check_failed`, `ejected`
    /// or `down` (passive health, for `fail_timeout`).
    pub state: &'static str,
    /// Outlier ejections so far.
    pub ejections: u64,
    pub in_flight: u64,
    /// Idle HTTP/1.1 connections and open HTTP/2 ones.
    pub connections: u64,
    /// The moving average of its response times, with `balance = "ewma"`.
    pub ewma_ms: Option<f64>,
}

/// Every metric in Prometheus text format 0.0.4, with `gauges` as gauge families.
pub(super) fn prometheus(m: &Metrics, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let o = &mut out;
    let requests = m.requests();
    family(o, "build_info", "gauge", "Always 1: the version and the commit relais was built from.");
    let commit = option_env!("BUILD_GIT_COMMIT").unwrap_or("unknown");
    sample(o, "build_info", &[("version", env!("CARGO_PKG_VERSION")), ("commit", commit)], 1);
    family(o, "requests_total", "counter", "Finished requests by route, status code and cache outcome.");
    for r in &requests {
        let status = r.status.to_string();
        sample(o, "requests_total", &[("route", &r.route), ("status", &status), ("cache", word(r.cache))], r.count);
    }
    let (hits, lookups) = hits_and_lookups(&requests);
    family(o, "cache_hits_total", "counter", "Requests served from the cache (hit or stale).");
    sample(o, "cache_hits_total", &[], hits);
    family(o, "cache_lookups_total", "counter", "Requests that looked up the cache.");
    sample(o, "cache_lookups_total", &[], lookups);
    let (bytes_in, bytes_out) = m.bytes();
    family(o, "bytes_received_total", "counter", "Request body bytes received from clients.");
    sample(o, "bytes_received_total", &[], bytes_in);
    family(o, "bytes_sent_total", "counter", "Response body bytes sent to clients.");
    sample(o, "bytes_sent_total", &[], bytes_out);

    family(o, "request_duration_seconds", "histogram", "Time from a request's head to the end of its response.");
    for (route, method, cache, h) in m.durations() {
        histogram(
            o,
            "request_duration_seconds",
            &[("route", &route), ("method", method.as_str()), ("cache", word(cache))],
            &h,
        );
    }
    family(o, "upstream_response_seconds", "histogram", "Time from sending a request upstream to its response head.");
    for (upstream, server, h) in m.latency() {
        histogram(o, "upstream_response_seconds", &[("upstream", &upstream), ("server", &server)], &h);
    }

    family(
        o,
        "upstream_connections_total",
        "counter",
        "Requests sent upstream, on a reused pooled connection or a new one.",
    );
    for (upstream, new, reused) in m.connections() {
        sample(o, "upstream_connections_total", &[("upstream", &upstream), ("reused", "false")], new);
        sample(o, "upstream_connections_total", &[("upstream", &upstream), ("reused", "true")], reused);
    }

    let failures = m.upstream_failures();
    family(o, "upstream_errors_total", "counter", "Attempts to an upstream's servers that failed, by reason.");
    for (upstream, errors, _) in &failures {
        for (why, n) in UpstreamFailure::ALL.iter().zip(errors).filter(|(w, _)| **w != UpstreamFailure::Status) {
            sample(o, "upstream_errors_total", &[("upstream", upstream), ("reason", why.as_str())], n);
        }
    }
    family(o, "upstream_retries_total", "counter", "Requests sent on to the next server, by why.");
    for (upstream, _, retries) in &failures {
        for (why, n) in UpstreamFailure::ALL.iter().zip(retries).filter(|(w, _)| **w != UpstreamFailure::Timeout) {
            sample(o, "upstream_retries_total", &[("upstream", upstream), ("reason", why.as_str())], n);
        }
    }

    family(o, "cluster_forwarded_total", "counter", "Misses sent to their owner in the cluster, by result.");
    for (result, n) in m.forwards().into_iter().filter(|(f, _)| *f != crate::metrics::Forwarded::Down) {
        sample(o, "cluster_forwarded_total", &[("result", result.as_str())], n);
    }
    family(
        o,
        "cluster_owner_fallbacks_total",
        "counter",
        "Misses this node fetched itself for their owner, by reason.",
    );
    for (reason, n) in m.forwards().into_iter().filter(|(f, _)| *f != crate::metrics::Forwarded::Answered) {
        sample(o, "cluster_owner_fallbacks_total", &[("reason", reason.as_str())], n);
    }

    family(o, "upstream_server_up", "gauge", "Whether the balancer considers the server healthy (1) or not (0).");
    for s in &gauges.servers {
        sample(o, "upstream_server_up", &[("upstream", &s.upstream), ("server", &s.address)], u8::from(s.up));
    }
    family(o, "upstream_server_ejections_total", "counter", "Outlier ejections of the server.");
    for s in &gauges.servers {
        sample(o, "upstream_server_ejections_total", &[("upstream", &s.upstream), ("server", &s.address)], s.ejections);
    }
    family(o, "upstream_server_in_flight", "gauge", "Requests currently sent to the server.");
    for s in &gauges.servers {
        sample(o, "upstream_server_in_flight", &[("upstream", &s.upstream), ("server", &s.address)], s.in_flight);
    }
    family(o, "upstream_server_connections", "gauge", "Idle HTTP/1.1 and open HTTP/2 connections to the server.");
    for s in &gauges.servers {
        sample(o, "upstream_server_connections", &[("upstream", &s.upstream), ("server", &s.address)], s.connections);
    }
    for (name, help, value) in [
        ("cache_memory_bytes", "Bytes held by the memory tier.", gauges.memory_bytes),
        ("cache_memory_entries", "Entries held by the memory tier.", gauges.memory_entries),
        ("cache_memory_capacity_bytes", "Configured size of the memory tier.", gauges.memory_capacity),
        ("cache_disk_bytes", "Bytes held by the disk tier.", gauges.disk_bytes),
        ("cache_disk_entries", "Entries held by the disk tier.", gauges.disk_entries),
        ("cache_disk_capacity_bytes", "Configured size of the disk tier.", gauges.disk_capacity),
        (
            "cache_indexed_keys",
            "Keys in the purge index: the memory tier's, and tagged ones on disk.",
            gauges.indexed_keys,
        ),
        ("cache_fill_bytes", "Bytes of bodies held while being fetched to be stored.", gauges.fill_bytes),
        (
            "cache_disk_writes_waiting",
            "Entries waiting in memory for room in the disk's write backlog.",
            gauges.disk_writes_waiting,
        ),
        ("compression_copies_bytes", "Bytes of encoded copies of cached bodies.", gauges.encoded_bytes),
    ] {
        family(o, name, "gauge", help);
        sample(o, name, &[], value);
    }
    family(o, "compression_copies_made_total", "counter", "Encoded copies of cached bodies made (each once).");
    sample(o, "compression_copies_made_total", &[], gauges.encoded_made);

    family(o, "connections_open", "gauge", "Client connections open now, by listener and protocol.");
    for (listener, protocol, n) in m.connections_open() {
        sample(o, "connections_open", &[("listener", listener), ("protocol", protocol)], n);
    }

    family(o, "tls_certificate_expiry_seconds", "gauge", "When each served certificate name expires (Unix time).");
    for (name, expiry) in &gauges.certificates {
        sample(o, "tls_certificate_expiry_seconds", &[("name", name)], expiry);
    }

    family(o, "cache_evictions_total", "counter", "Entries evicted to make room, by tier.");
    for (tier, n) in m.evictions() {
        sample(o, "cache_evictions_total", &[("tier", tier.as_str())], n);
    }
    let purges = m.purges();
    family(o, "purges_total", "counter", "Purge requests by kind and softness.");
    for (kind, [hard, soft, _]) in &purges {
        sample(o, "purges_total", &[("kind", kind.as_str()), ("soft", "false")], hard);
        sample(o, "purges_total", &[("kind", kind.as_str()), ("soft", "true")], soft);
    }
    family(o, "purged_entries_total", "counter", "Entries removed or marked stale by purges, by kind.");
    for (kind, [_, _, entries]) in &purges {
        sample(o, "purged_entries_total", &[("kind", kind.as_str())], entries);
    }
    let waits = m.waits();
    family(o, "collapsed_waiters_total", "counter", "Requests that waited on another request's origin fetch.");
    sample(o, "collapsed_waiters_total", &[], waits.iter().map(|(_, n)| n).sum::<u64>());
    family(o, "collapsed_waits_total", "counter", "Waits on another request's origin fetch, by how they ended.");
    for (end, n) in &waits {
        sample(o, "collapsed_waits_total", &[("end", end.as_str())], n);
    }
    family(
        o,
        "cache_disk_writes_skipped_total",
        "counter",
        "Entries never written to disk: the disk was behind and memory dropped them first.",
    );
    sample(o, "cache_disk_writes_skipped_total", &[], m.disk_writes_skipped());
    family(
        o,
        "files_served_total",
        "counter",
        "Requests answered from a static route's directory, by the coding sent.",
    );
    for (coding, n) in m.files_served() {
        sample(o, "files_served_total", &[("coding", coding)], n);
    }
    family(
        o,
        "http3_early_requests_total",
        "counter",
        "HTTP/3 requests that came in 0-RTT: answered at once, waited for the handshake, or retried after a 425.",
    );
    for (outcome, n) in m.early_requests() {
        sample(o, "http3_early_requests_total", &[("outcome", outcome)], n);
    }
    let (reloads_ok, reloads_failed) = m.reloads();
    family(o, "reloads_total", "counter", "Configuration reloads by result.");
    sample(o, "reloads_total", &[("result", "ok")], reloads_ok);
    sample(o, "reloads_total", &[("result", "failed")], reloads_failed);
    family(
        o,
        "log_dropped_total",
        "counter",
        "Log lines dropped: the log's reader was slow or gone, or its file failed.",
    );
    sample(o, "log_dropped_total", &[], m.logs_dropped());
    let (acme_ok, acme_failed) = m.acme_orders();
    family(o, "acme_orders_total", "counter", "ACME certificate orders by result.");
    sample(o, "acme_orders_total", &[("result", "ok")], acme_ok);
    sample(o, "acme_orders_total", &[("result", "failed")], acme_failed);
    let guard = m.guard_counts();
    family(o, "guard_rejections_total", "counter", "Requests the guard refused, by reason and route.");
    for (reason, route, _, n) in guard.iter().filter(|g| !g.2) {
        sample(o, "guard_rejections_total", &[("reason", reason.as_str()), ("route", route)], n);
    }
    family(o, "guard_dry_run_total", "counter", "Requests a dry-run limit or log rule would have refused.");
    for (reason, route, _, n) in guard.iter().filter(|g| g.2) {
        sample(o, "guard_dry_run_total", &[("reason", reason.as_str()), ("route", route)], n);
    }
    family(o, "auth_total", "counter", "Authentication results by route, kind (basic, request) and result.");
    for (route, kind, result, n) in m.auth_counts() {
        sample(o, "auth_total", &[("route", &route), ("kind", kind), ("result", result)], n);
    }
    out
}

/// Refusals by reason (dry runs apart).
fn guard_json(m: &Metrics) -> Value {
    let (mut refused, mut dry) = (BTreeMap::new(), BTreeMap::new());
    for (reason, _, dry_run, n) in m.guard_counts() {
        *(if dry_run { &mut dry } else { &mut refused }).entry(reason.as_str()).or_insert(0u64) += n;
    }
    json!({"by_reason": refused, "dry_run": dry})
}

/// The same numbers as compact JSON for `/stats`.
pub(super) fn stats(m: &Metrics, gauges: &Gauges) -> Value {
    let requests = m.requests();
    let (mut by_cache, mut by_status, mut by_route) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for r in &requests {
        *by_cache.entry(word(r.cache)).or_insert(0u64) += r.count;
        *by_status.entry(r.status).or_insert(0u64) += r.count;
        *by_route.entry(r.route.as_str()).or_insert(0u64) += r.count;
    }
    let (hits, lookups) = hits_and_lookups(&requests);
    let hit_ratio = if lookups == 0 { 0.0 } else { hits as f64 / lookups as f64 };
    let tier =
        |bytes: u64, entries: u64, capacity: u64| json!({"bytes": bytes, "entries": entries, "capacity": capacity});
    let latency = m.latency();
    let purges: serde_json::Map<String, Value> = m
        .purges()
        .into_iter()
        .map(|(kind, [hard, soft, entries])| {
            (kind.as_str().into(), json!({"hard": hard, "soft": soft, "entries": entries}))
        })
        .collect();
    let evictions: BTreeMap<&str, u64> = m.evictions().into_iter().map(|(t, n)| (t.as_str(), n)).collect();
    let waits: BTreeMap<&str, u64> = m.waits().into_iter().map(|(w, n)| (w.as_str(), n)).collect();
    let (bytes_in, bytes_out) = m.bytes();
    let (reloads_ok, reloads_failed) = m.reloads();
    json!({
        "requests": {
            "total": requests.iter().map(|r| r.count).sum::<u64>(),
            "by_cache": by_cache,
            "by_status": by_status,
            "by_route": by_route,
            "hits": hits,
            "lookups": lookups,
        },
        "latency": latency_json(m),
        "bytes": {"in": bytes_in, "out": bytes_out},
        "hit_ratio": hit_ratio,
        "cache": {
            "memory": tier(gauges.memory_bytes, gauges.memory_entries, gauges.memory_capacity),
            "disk": tier(gauges.disk_bytes, gauges.disk_entries, gauges.disk_capacity),
            "indexed_keys": gauges.indexed_keys,
            "fill_bytes": gauges.fill_bytes,
            "disk_writes_waiting": gauges.disk_writes_waiting,
        },
        "upstreams": upstreams_json(&gauges.servers, &latency),
        "purges": purges,
        "collapsed_waiters": waits.values().sum::<u64>(),
        "collapsed_waits": waits,
        "reloads": {"ok": reloads_ok, "failed": reloads_failed},
        "evictions": evictions,
        "disk_writes_skipped": m.disk_writes_skipped(),
        "log_dropped": m.logs_dropped(),
        "guard_rejections": guard_json(m),
        "tls_certificates": certificates_json(&gauges.certificates),
        "connections_open": connections_json(m),
    })
}

/// Open client connections: listener → protocol → count.
fn connections_json(m: &Metrics) -> Value {
    let mut all: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (listener, protocol, n) in m.connections_open() {
        all.entry(listener).or_default().insert(protocol, n);
    }
    json!(all)
}

/// Percentiles of every request's duration since start, in seconds.
fn latency_json(m: &Metrics) -> Value {
    let (mut all, mut sum) = ([0; BUCKETS.len() + 1], 0.0);
    for (_, _, _, h) in m.durations() {
        all.iter_mut().zip(h.cumulative).for_each(|(a, n)| *a += n);
        sum += h.sum;
    }
    let count = all[BUCKETS.len()];
    let q = |q| super::history::quantile(&all, q);
    json!({"count": count, "mean": (count > 0).then(|| sum / count as f64), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99)})
}

/// Each served certificate name, when it expires and the whole days left.
fn certificates_json(certificates: &[(String, u64)]) -> Vec<Value> {
    let epoch = std::time::UNIX_EPOCH;
    let now = epoch.elapsed().map_or(0, |d| d.as_secs());
    let expires = |at: u64| httpdate::fmt_http_date(epoch + std::time::Duration::from_secs(at));
    certificates
        .iter()
        .map(|(name, at)| json!({"name": name, "expires": expires(*at), "days_left": at.saturating_sub(now) / 86_400}))
        .collect()
}

/// Hit-ratio inputs: hits are served from storage, lookups are requests that consulted it at all.
pub(super) fn hits_and_lookups(requests: &[RequestSeries]) -> (u64, u64) {
    use CacheOutcome::{Bypass, Hit, Method, Stale};
    let hits = requests.iter().filter(|r| matches!(r.cache, Some(Hit | Stale))).map(|r| r.count).sum();
    let lookups = requests.iter().filter(|r| !matches!(r.cache, None | Some(Bypass | Method))).map(|r| r.count).sum();
    (hits, lookups)
}

/// One `/stats` entry per upstream that has servers or has seen a response.
fn upstreams_json(servers: &[ServerGauge], latency: &[(String, String, HistogramSnapshot)]) -> Vec<Value> {
    let mut names: Vec<&str> = servers.iter().map(|s| s.upstream.as_str()).collect();
    names.extend(latency.iter().map(|(n, _, _)| n.as_str()));
    names.sort_unstable();
    names.dedup();
    let upstream = |name: &str| {
        let own: Vec<Value> = servers
            .iter()
            .filter(|s| s.upstream == name)
            .map(|s| {
                json!({
                    "address": s.address,
                    "up": s.up,
                    "state": s.state,
                    "ejections": s.ejections,
                    "in_flight": s.in_flight,
                    "connections": s.connections,
                    "ewma_ms": s.ewma_ms,
                })
            })
            .collect();
        let own_latency = latency.iter().filter(|(n, _, _)| n == name);
        let (count, sum) = own_latency.fold((0, 0.0), |(c, s), (_, _, h)| (c + h.count(), s + h.sum));
        let mean = if count == 0 { 0.0 } else { sum / count as f64 };
        json!({"name": name, "servers": own, "origin_responses": count, "origin_latency_mean_seconds": mean})
    };
    names.into_iter().map(upstream).collect()
}

/// A histogram's `_bucket`, `_sum` and `_count` series.
fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
    let les = BUCKETS.iter().map(|le| le.to_string()).chain(["+Inf".to_owned()]);
    for (le, count) in les.zip(h.cumulative) {
        let mut with_le = labels.to_vec();
        with_le.push(("le", &le));
        sample(out, &format!("{name}_bucket"), &with_le, count);
    }
    sample(out, &format!("{name}_sum"), labels, h.sum);
    sample(out, &format!("{name}_count"), labels, h.count());
}

/// The purge bus's families (`[cluster.bus]`): connected, outbox, applied, lag by node.
pub(super) fn cluster(o: &mut String, (connected, outbox, from_bus, lag): (bool, u64, u64, Vec<(String, u64)>)) {
    family(o, "cluster_bus_connected", "gauge", "1 while the purge bus (NATS JetStream) is connected.");
    sample(o, "cluster_bus_connected", &[], u8::from(connected));
    family(o, "cluster_outbox_purges", "gauge", "Purges applied here that wait in the outbox for the bus.");
    sample(o, "cluster_outbox_purges", &[], outbox);
    family(o, "cluster_purges_applied_total", "counter", "Purges other nodes sent, applied from the bus.");
    sample(o, "cluster_purges_applied_total", &[], from_bus);
    family(o, "cluster_purge_lag", "gauge", "Purges on the stream a node has not applied yet, by node.");
    for (node, behind) in &lag {
        sample(o, "cluster_purge_lag", &[("node", node)], behind);
    }
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
    use crate::metrics::{PurgeKind, PurgeMode, Tier, WaitEnd};
    use std::collections::HashMap;

    /// The value of the series written exactly as `series` (name and labels).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counters_move() {
        let m = Metrics::new();
        let series = r#"relais_requests_total{route="api",status="200",cache="hit"}"#;
        let before = prometheus(&m, &Gauges::default());
        assert_eq!(value(&before, series), None);
        assert_eq!(value(&before, "relais_bytes_sent_total"), Some(0.0));
        let build = format!(r#"relais_build_info{{version="{}",commit=""#, env!("CARGO_PKG_VERSION"));
        assert!(before.lines().any(|l| l.starts_with(&build) && l.ends_with("\"} 1")), "{before}");
        // Pre-registered label sets show up before their first event.
        for kind in PurgeKind::ALL.map(PurgeKind::as_str) {
            assert_eq!(value(&before, &format!(r#"relais_purges_total{{kind="{kind}",soft="false"}}"#)), Some(0.0));
            assert_eq!(value(&before, &format!(r#"relais_purged_entries_total{{kind="{kind}"}}"#)), Some(0.0));
        }
        assert_eq!(value(&before, r#"relais_reloads_total{result="ok"}"#), Some(0.0));
        assert_eq!(value(&before, r#"relais_reloads_total{result="failed"}"#), Some(0.0));
        assert_eq!(value(&before, r#"relais_cache_evictions_total{tier="disk"}"#), Some(0.0));
        m.request("api", 200, Some(CacheOutcome::Hit), 10, 500);
        m.request("api", 200, Some(CacheOutcome::Hit), 0, 300);
        m.eviction(Tier::Disk);
        m.collapsed_wait(WaitEnd::TimedOut);
        m.reload(false);
        m.purge(PurgeKind::Tag, PurgeMode::Soft, 7);
        let after = prometheus(&m, &Gauges::default());
        assert_eq!(value(&after, series), Some(2.0));
        assert_eq!(value(&after, "relais_bytes_received_total"), Some(10.0));
        assert_eq!(value(&after, "relais_bytes_sent_total"), Some(800.0));
        assert_eq!(value(&after, r#"relais_cache_evictions_total{tier="disk"}"#), Some(1.0));
        assert_eq!(value(&after, "relais_collapsed_waiters_total"), Some(1.0));
        assert_eq!(value(&after, r#"relais_collapsed_waits_total{end="timed-out"}"#), Some(1.0));
        assert_eq!(value(&after, r#"relais_collapsed_waits_total{end="abandoned"}"#), Some(0.0));
        assert_eq!(value(&after, r#"relais_reloads_total{result="failed"}"#), Some(1.0));
        assert_eq!(value(&after, r#"relais_purges_total{kind="tag",soft="true"}"#), Some(1.0));
        assert_eq!(value(&after, r#"relais_purged_entries_total{kind="tag"}"#), Some(7.0));
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new();
        for s in [0.003, 0.005, 0.03, 0.3, 30.0] {
            m.upstream_response("app", "10.0.0.1:80", s);
        }
        let text = prometheus(&m, &Gauges::default());
        let series = r#"relais_upstream_response_seconds_bucket{upstream="app",server="10.0.0.1:80""#;
        let bucket = |le: &str| value(&text, &format!(r#"{series},le="{le}"}}"#));
        let les = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5"];
        let les = les.into_iter().chain(["5", "10", "+Inf"]);
        let expected = [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0, 5.0];
        for (le, n) in les.zip(expected) {
            assert_eq!(bucket(le), Some(n), "le={le}");
        }
        let labels = r#"{upstream="app",server="10.0.0.1:80"}"#;
        assert_eq!(value(&text, &format!("relais_upstream_response_seconds_count{labels}")), Some(5.0));
        let sum = value(&text, &format!("relais_upstream_response_seconds_sum{labels}")).unwrap();
        assert!((sum - 30.338).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.request("a\"b\\c\nd", 404, None, 0, 0);
        let text = prometheus(&m, &Gauges::default());
        assert_eq!(value(&text, r#"relais_requests_total{route="a\"b\\c\nd",status="404",cache="-"}"#), Some(1.0));
    }

    #[test]
    fn hit_ratio_counts_hits_over_lookups() {
        let m = Metrics::new();
        use CacheOutcome::*;
        let words = [
            (Some(Hit), 3),
            (Some(Stale), 1),
            (Some(UriMiss), 2),
            (Some(Revalidated), 2),
            (Some(Bypass), 5),
            (Some(Method), 1),
            (None, 1),
        ];
        for (cache, n) in words {
            for _ in 0..n {
                m.request("routes[0]", 200, cache, 0, 0);
            }
        }
        let text = prometheus(&m, &Gauges::default());
        assert_eq!(value(&text, "relais_cache_hits_total"), Some(4.0));
        assert_eq!(value(&text, "relais_cache_lookups_total"), Some(8.0));
        let json = stats(&m, &Gauges::default());
        assert_eq!(json["hit_ratio"], 0.5);
        assert_eq!(json["requests"]["total"], 15);
        assert_eq!(json["requests"]["by_cache"]["bypass"], 5);
        assert_eq!(json["requests"]["by_status"]["200"], 15);
        assert_eq!(stats(&Metrics::new(), &Gauges::default())["hit_ratio"], 0.0);
    }

    #[test]
    fn text_format_is_well_formed() {
        let m = Metrics::new();
        m.request("routes[1]", 503, Some(CacheOutcome::Bypass), 1, 2);
        m.upstream_response("app", "10.0.0.1:80", 0.2);
        m.request_duration("api", crate::metrics::MethodClass::Get, Some(CacheOutcome::Hit), 0.0007);
        m.eviction(Tier::Memory);
        let server = ServerGauge {
            upstream: "app".into(),
            address: "10.0.0.1:80".into(),
            up: true,
            state: "up",
            ejections: 1,
            in_flight: 3,
            connections: 2,
            ewma_ms: Some(1.5),
        };
        let gauges = Gauges { memory_bytes: 5, servers: vec![server], ..Gauges::default() };
        let text = prometheus(&m, &gauges);
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
        let hit = r#"route="api",method="GET",cache="hit""#;
        assert_eq!(value(&text, &format!(r#"relais_request_duration_seconds_bucket{{{hit},le="0.0005"}}"#)), Some(0.0));
        assert_eq!(value(&text, &format!(r#"relais_request_duration_seconds_bucket{{{hit},le="0.001"}}"#)), Some(1.0));

        let json = stats(&m, &gauges);
        assert_eq!(json["upstreams"][0]["name"], "app");
        assert_eq!(json["upstreams"][0]["servers"][0]["in_flight"], 3);
        assert_eq!(json["upstreams"][0]["servers"][0]["ewma_ms"], 1.5);
        assert_eq!(json["latency"]["count"], 1);
        let p99 = json["latency"]["p99"].as_f64().unwrap();
        assert!((0.0005..=0.001).contains(&p99), "within the bucket of 0.0007: {p99}");
        assert_eq!(json["upstreams"][0]["origin_responses"], 1);
        assert_eq!(json["evictions"]["memory"], 1);
        assert_eq!(json["purges"]["all"]["soft"], 0);
    }
}
