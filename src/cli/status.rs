//! `relais status` and `relais cache` as text: `/stats` and `/cache?url=`
//! laid out for a terminal, one figure a line, like `varnishstat -1`.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// One screen from `now` (the latest `/stats`), with the request rate over
/// `apart`, the time since `before`.
pub(super) fn render(now: &Value, before: &Value, apart: Duration, admin: SocketAddr) -> String {
    let mut s = String::new();
    let r = &now["relais"];
    let uptime = r["uptime_secs"].as_u64().unwrap_or(0);
    let _ = writeln!(s, "relais {}, up {} (since {})", text(&r["version"]), span(uptime), text(&r["started"]));
    let config = r["config"].as_str().unwrap_or("(not from a file)");
    let _ = writeln!(s, "config      {config}, loaded {}", text(&r["loaded"]));
    let mut listen = list(&r["listen"]);
    if r["tls_listen"].as_array().is_some_and(|a| !a.is_empty()) {
        listen.push_str(&format!(" · tls {}", list(&r["tls_listen"])));
    }
    let _ = writeln!(s, "listen      {listen} · admin {admin}");
    let total = count(&now["requests"]["total"]);
    let recent = total.saturating_sub(count(&before["requests"]["total"])) as f64 / apart.as_secs_f64().max(0.001);
    let average = if uptime == 0 { 0.0 } else { total as f64 / uptime as f64 };
    let _ = writeln!(s, "requests    {total} · {recent:.1}/s now · {average:.1}/s since start");
    let _ = writeln!(
        s,
        "hit ratio   {:.1}%  ({})",
        now["hit_ratio"].as_f64().unwrap_or(0.0) * 100.0,
        pairs(&now["requests"]["by_cache"])
    );
    let _ = writeln!(s, "status      {}", classes(&now["requests"]["by_status"]));
    let _ =
        writeln!(s, "bytes       in {} · out {}", size(count(&now["bytes"]["in"])), size(count(&now["bytes"]["out"])));
    for tier in ["memory", "disk"] {
        let t = &now["cache"][tier];
        let (bytes, capacity) = (count(&t["bytes"]), count(&t["capacity"]));
        let used = if capacity == 0 { 0.0 } else { bytes as f64 * 100.0 / capacity as f64 };
        let _ = writeln!(
            s,
            "{tier:<11} {} entries · {} of {} ({used:.0}%)",
            count(&t["entries"]),
            size(bytes),
            size(capacity)
        );
    }
    let reloads = &now["reloads"];
    let _ = writeln!(s, "reloads     {} ok · {} refused", count(&reloads["ok"]), count(&reloads["failed"]));
    if now["cluster"].is_object() {
        s.push_str(&cluster(&now["cluster"]));
    }
    let _ = writeln!(s, "upstreams");
    for u in now["upstreams"].as_array().into_iter().flatten() {
        let mean = u["origin_latency_mean_seconds"].as_f64().unwrap_or(0.0) * 1000.0;
        let _ =
            writeln!(s, "  {:<12} {} responses · {mean:.1} ms mean", text(&u["name"]), count(&u["origin_responses"]));
        for server in u["servers"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                "    {:<24} {:<12} {} in flight · {} connections · {} ejections",
                text(&server["address"]),
                text(&server["state"]),
                count(&server["in_flight"]),
                count(&server["connections"]),
                count(&server["ejections"]),
            );
        }
    }
    s
}

/// What `/cache?url=` found, one entry a line.
pub(super) fn entries(v: &Value) -> String {
    let mut s = format!("{}\n", text(&v["url"]));
    if let Some(key) = v["cache_key"].as_str() {
        // The route's cache.key: what else each entry's key was made of.
        let _ = writeln!(s, "  keyed as {key}");
    }
    let found = v["entries"].as_array().map_or(&[][..], Vec::as_slice);
    if found.is_empty() {
        s.push_str("  not cached\n");
    }
    for e in found {
        if e["kind"] == "vary" {
            let _ = writeln!(s, "  {} · varies on {} · key {}", text(&e["tier"]), list(&e["vary"]), text(&e["key"]));
            continue;
        }
        let ttl = e["ttl"].as_u64().map_or("expired".to_string(), |t| format!("ttl {}", span(t)));
        let tags = e["tags"]
            .as_array()
            .filter(|t| !t.is_empty())
            .map_or(String::new(), |_| format!(" · tags {}", list(&e["tags"])));
        let vary = e["vary"].as_str().map_or(String::new(), |v| format!(" · vary {v}"));
        let _ = writeln!(
            s,
            "  {} · {} · {} · age {} · {ttl}{tags}{vary} · stored {} · key {}",
            text(&e["tier"]),
            count(&e["status"]),
            size(count(&e["bytes"])),
            span(count(&e["age"])),
            text(&e["stored_at"]),
            text(&e["key"]),
        );
    }
    s
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), Into::into)
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// `{"hit": 3, "miss": 1}` as "hit 3 · miss 1".
fn pairs(v: &Value) -> String {
    let items: Vec<String> = v.as_object().into_iter().flatten().map(|(k, n)| format!("{k} {n}")).collect();
    if items.is_empty() { "no requests yet".into() } else { items.join(" · ") }
}

/// The purge bus in one line: "cluster     node a · bus connected · applied 41 of 41 · outbox 0 · 2 of 3 nodes live".
fn cluster(c: &Value) -> String {
    let bus = &c["bus"];
    let state = if bus["connected"] == true { "connected" } else { "DISCONNECTED" };
    let all = c["nodes"].as_object().map_or(0, |n| n.len());
    let live = c["nodes"].as_object().map_or(0, |n| n.values().filter(|v| v["live"] == true).count());
    let replaying = if bus["replayed"] == true { "" } else { " (replaying: disk tier not read yet)" };
    format!(
        "cluster     node {} · bus {state} · applied {} of {}{replaying} · outbox {} · {live} of {all} nodes live\n",
        text(&c["node"]),
        count(&bus["applied"]),
        count(&bus["last"]),
        count(&bus["outbox"]),
    )
}

/// Status codes summed by class: "2xx 10 · 4xx 1".
fn classes(v: &Value) -> String {
    let mut by_class = [0u64; 6];
    for (code, n) in v.as_object().into_iter().flatten() {
        let class = code.parse::<usize>().map_or(0, |c| c / 100).min(5);
        by_class[class] += count(n);
    }
    let items: Vec<String> = (1..6).filter(|&c| by_class[c] > 0).map(|c| format!("{c}xx {}", by_class[c])).collect();
    if items.is_empty() { "none".into() } else { items.join(" · ") }
}

fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let (mut value, mut unit) = (bytes as f64 / 1024.0, 0);
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(256 << 20), "256.0 MiB");
        assert_eq!(span(59), "59s");
        assert_eq!(span(3 * 3600 + 120), "3h 2m");
        assert_eq!(classes(&serde_json::json!({"200": 3, "204": 1, "404": 2})), "2xx 4 · 4xx 2");
        let c = serde_json::json!({"node": "a", "bus": {"connected": true, "replayed": true, "applied": 41, "last": 41,
            "outbox": 0}, "nodes": {"a": {"live": true}, "b": {"live": true}, "c": {"live": false}}});
        assert_eq!(
            cluster(&c),
            "cluster     node a · bus connected · applied 41 of 41 · outbox 0 · 2 of 3 nodes live\n"
        );
    }
}
