//! `relais top`: every second, which routes and upstreams are busiest, from
//! the difference between two `/stats` (like `varnishtop`, by route rather
//! than by path: relais counts no client-chosen value).

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// One screen: the rates between `before` and `now`, `apart` from each other.
pub(super) fn frame(now: &Value, before: &Value, apart: Duration, admin: SocketAddr) -> String {
    let secs = apart.as_secs_f64().max(0.001);
    let rate = |path: &[&str], key: &str| {
        let at = |v: &Value| path.iter().fold(v, |v, p| &v[p])[key].as_u64().unwrap_or(0);
        at(now).saturating_sub(at(before)) as f64 / secs
    };
    let mut s = String::new();
    let total = rate(&["requests"], "total");
    let by_cache: Vec<String> = busiest(now, &["requests", "by_cache"], &rate)
        .into_iter()
        .filter(|(_, r)| *r > 0.0)
        .map(|(k, r)| format!("{k} {r:.1}"))
        .collect();
    let _ = writeln!(s, "relais at {admin} · {total:.1} requests/s · {}", by_cache.join(" · "));
    let _ = writeln!(s, "\n{:>10}  route", "req/s");
    for (route, r) in busiest(now, &["requests", "by_route"], &rate).into_iter().take(20) {
        let _ = writeln!(s, "{r:>10.1}  {route}");
    }
    let _ = writeln!(s, "\n{:>10} {:>10} {:>10}  upstream", "resp/s", "mean ms", "in flight");
    let mut upstreams: Vec<(f64, String)> = Vec::new();
    for u in now["upstreams"].as_array().into_iter().flatten() {
        let name = u["name"].as_str().unwrap_or("?");
        let old = before["upstreams"].as_array().into_iter().flatten().find(|o| o["name"] == name);
        let figures = |u: &Value| {
            let n = u["origin_responses"].as_u64().unwrap_or(0);
            (n, n as f64 * u["origin_latency_mean_seconds"].as_f64().unwrap_or(0.0))
        };
        let ((n, sum), (n0, sum0)) = (figures(u), old.map_or((0, 0.0), figures));
        let answered = n.saturating_sub(n0);
        let mean = if answered == 0 { 0.0 } else { (sum - sum0) * 1000.0 / answered as f64 };
        let in_flight: u64 =
            u["servers"].as_array().into_iter().flatten().filter_map(|s| s["in_flight"].as_u64()).sum();
        upstreams.push((answered as f64 / secs, format!("{mean:>10.1} {in_flight:>10}  {name}")));
    }
    upstreams.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (r, line) in upstreams {
        let _ = writeln!(s, "{r:>10.1} {line}");
    }
    s
}

/// The keys of the object at `path` with their rates, busiest first.
fn busiest(now: &Value, path: &[&str], rate: &dyn Fn(&[&str], &str) -> f64) -> Vec<(String, f64)> {
    let object = path.iter().fold(now, |v, p| &v[p]);
    let mut rows: Vec<(String, f64)> =
        object.as_object().into_iter().flatten().map(|(k, _)| (k.clone(), rate(path, k))).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_between_two_looks() {
        let before = json!({"requests": {"total": 10, "by_route": {"api": 5, "web": 5}, "by_cache": {"hit": 10}},
            "upstreams": [{"name": "app", "origin_responses": 4, "origin_latency_mean_seconds": 0.1, "servers": []}]});
        let now = json!({"requests": {"total": 40, "by_route": {"api": 30, "web": 10}, "by_cache": {"hit": 40}},
            "upstreams": [{"name": "app", "origin_responses": 6, "origin_latency_mean_seconds": 0.2,
                "servers": [{"in_flight": 3}]}]});
        let text = frame(&now, &before, Duration::from_secs(1), "127.0.0.1:9090".parse().unwrap());
        assert!(text.contains("30.0 requests/s · hit 30.0"), "{text}");
        let api = text.find("25.0  api").expect(&text);
        assert!(api < text.find("5.0  web").expect(&text), "{text}");
        // (6 × 0.2 − 4 × 0.1) s over 2 responses: 400 ms each.
        assert!(text.contains("2.0      400.0          3  app"), "{text}");
    }
}
