//! The admin API, on its own listener (`admin.listen`), apart from client traffic.
//!
//! Every endpoint but `GET /health` needs `Authorization: Bearer <admin.token>`
//! (compared in constant time): 401 without it, 403 with a wrong one, and
//! refuses what a web page could make a browser send ([`browser`]). Purges
//! come as `POST /purge` with JSON, or as the `PURGE` method that nginx and
//! Varnish purge scripts send. `GET /dashboard` ([`dashboard`]) is a page
//! that asks for the token and shows the rest live.

mod browser;
mod dashboard;
mod history;
mod maintenance;
mod process;
mod render;

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cache::purge::Target;
use crate::cache::{Cache, Stored, key};
use crate::guard::Guard;
use crate::http::body::Body;
use crate::metrics::{Metrics, PurgeMode};
use crate::proxy::Pipeline;

/// What the admin endpoints reach.
pub(crate) struct Admin {
    pub shared: Arc<ArcSwap<Pipeline>>,
    pub metrics: Arc<Metrics>,
    /// Re-reads the configuration source and applies it (`POST /reload`).
    pub reload: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    /// When this process started serving.
    pub started: std::time::SystemTime,
    /// The client listeners as bound: cleartext, TLS.
    pub listen: (Vec<std::net::SocketAddr>, Vec<std::net::SocketAddr>),
    /// The cluster's purge log, when `[cluster.bus]` is configured.
    pub bus: Option<Arc<crate::bus::Bus>>,
}

/// Serves the admin API on `listener` until `stop` changes, with the client
/// listeners' connection limits and timeouts.
pub(crate) async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    conns: Arc<ArcSwap<crate::server::ConnSettings>>,
    stop: watch::Receiver<bool>,
) {
    let history = Arc::new(history::History::default());
    tokio::spawn(history::run(history.clone(), admin.metrics.clone(), stop.clone()));
    let make = move |conn: Arc<crate::proxy::Conn>| {
        let (admin, history) = (admin.clone(), history.clone());
        move |req| {
            let (admin, history, peer) = (admin.clone(), history.clone(), conn.peer.ip());
            async move { Ok::<_, Infallible>(handle(&admin, &history, peer, req).await) }
        }
    };
    crate::server::accept(listener, conns, stop, crate::server::Listener::Admin, make).await;
}

async fn handle(
    admin: &Admin,
    history: &history::History,
    peer: std::net::IpAddr,
    req: Request<Body>,
) -> Response<Body> {
    let pipeline = admin.shared.load_full();
    if pipeline.guard.admin.check(peer) == Some(crate::guard::Verdict::Deny) {
        admin.metrics.guard(crate::metrics::Reason::Access, "admin", false);
        return json_response(StatusCode::FORBIDDEN, json!({"error": "Forbidden"}));
    }
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/health" {
        return json_response(StatusCode::OK, json!({"status": "ok"}));
    }
    if let Err((status, reason)) = browser::check(&req, &pipeline.config.admin.hosts) {
        tracing::debug!(%peer, reason, "admin request refused");
        return json_response(status, json!({"error": reason}));
    }
    // The page holds no data: it asks for the token and sends it with each request.
    match (req.method(), path.as_str()) {
        (&Method::GET, "/dashboard") => return dashboard::page(),
        (&Method::GET, "/") => return dashboard::redirect(),
        _ => {}
    }
    if let Err(status) = authorize(pipeline.config.admin.token.as_deref(), req.headers()) {
        let mut res = json_response(status, json!({"error": status.canonical_reason()}));
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return res;
    }
    if let Err((status, reason)) = browser::check_body(&req) {
        return json_response(status, json!({"error": reason}));
    }
    let result = match (req.method().as_str(), path.as_str()) {
        ("POST", "/purge") => purge_json(admin, req).await,
        ("PURGE", _) => purge_method(admin, &req).await,
        ("GET", "/metrics") => {
            let mut text = render::prometheus(&admin.metrics, &gauges(&pipeline).await);
            if let Some(bus) = &admin.bus {
                render::cluster(&mut text, bus.gauges());
            }
            process::render(&mut text);
            let mut res = Response::new(Body::full(text));
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            Ok(res)
        }
        ("GET", "/stats") => {
            let mut stats = render::stats(&admin.metrics, &gauges(&pipeline).await);
            stats["relais"] = about(admin, &pipeline);
            if let Some(bus) = &admin.bus {
                stats["cluster"] = bus.stats();
            }
            if let Some(shard) = &pipeline.shard {
                stats["cluster"]["node"] = shard.node().into();
                stats["cluster"]["sharding"] = "rendezvous".into();
                stats["cluster"]["peers"] = shard.peers_json();
            }
            Ok(json_response(StatusCode::OK, stats))
        }
        ("GET", "/stats/history") => Ok(json_response(StatusCode::OK, history.json())),
        ("GET", "/cache") => cache_info(&pipeline, &req).await,
        ("GET", "/maintenance") => Ok(json_response(StatusCode::OK, json!(pipeline.maintenance.state()))),
        ("POST", "/maintenance") => maintenance::set(&pipeline, req).await,
        ("POST", "/reload") => Ok(match (admin.reload)() {
            Ok(()) => json_response(StatusCode::OK, json!({"reloaded": true})),
            Err(e) => json_response(StatusCode::UNPROCESSABLE_ENTITY, json!({"reloaded": false, "error": e})),
        }),
        _ => Err((StatusCode::NOT_FOUND, "no such admin endpoint".to_string())),
    };
    result.unwrap_or_else(|(status, reason)| json_response(status, json!({"error": reason})))
}

type Answer = Result<Response<Body>, (StatusCode, String)>;

/// 401 without a bearer token, 403 with a wrong one. No token configured
/// means loopback-only (enforced at start) and open.
fn authorize(token: Option<&str>, headers: &http::HeaderMap) -> Result<(), StatusCode> {
    let Some(expected) = token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    if constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) { Ok(()) } else { Err(StatusCode::FORBIDDEN) }
}

/// Compares without an early exit, so timing does not reveal the prefix that matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    tags: Option<Vec<String>>,
    all: Option<bool>,
    #[serde(default)]
    soft: bool,
}

async fn purge_json(admin: &Admin, req: Request<Body>) -> Answer {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let query = || req.uri().query().unwrap_or("").split('&').filter_map(|kv| kv.split_once('='));
    let asked = query().any(|(k, v)| k == "wait" && v == "applied");
    let wait = wait_applied(admin, asked, query().find(|(k, _)| *k == "timeout").map(|(_, v)| v)).map_err(bad)?;
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| bad("body unreadable or over 64KiB".into()))?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("empty body: send {\"url\"|\"prefix\"|\"tags\"|\"all\": …}".into()));
    }
    let p: PurgeRequest = serde_json::from_slice(&body).map_err(|e| bad(format!("invalid purge request: {e}")))?;
    let given = [p.url.is_some(), p.prefix.is_some(), p.tags.is_some(), p.all.is_some()];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err(bad("give exactly one of url, prefix, tags, all".into()));
    }
    let target = if let Some(url) = p.url {
        let pipeline = admin.shared.load();
        let url = canonical(&url, &pipeline.guard).map_err(bad)?;
        Target::Urls(both_schemes(&pipeline.router.key_url(url, &http::HeaderMap::new()).0))
    } else if let Some(prefix) = p.prefix {
        Target::Prefixes(both_schemes(&canonical_prefix(&prefix, &admin.shared.load().guard).map_err(bad)?))
    } else if let Some(tags) = p.tags {
        if tags.is_empty() || tags.iter().any(|t| t.trim().is_empty()) {
            return Err(bad("tags must be non-empty strings".into()));
        }
        Target::Tags(tags)
    } else if p.all == Some(true) {
        Target::All
    } else {
        return Err(bad("\"all\" must be true".into()));
    };
    Ok(run_purge(admin, target, if p.soft { PurgeMode::Soft } else { PurgeMode::Hard }, wait).await)
}

/// `PURGE /path` with a Host header, or `PURGE http://host/path`.
async fn purge_method(admin: &Admin, req: &Request<Body>) -> Answer {
    // The URL's query is the purged object's: a header asks to wait.
    let asked = req.headers().get("x-purge-wait").is_some_and(|v| v == "applied");
    let wait = wait_applied(admin, asked, None).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    let url = if req.uri().scheme().is_some() {
        req.uri().to_string()
    } else {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or((StatusCode::BAD_REQUEST, "PURGE needs a Host header or an absolute URL".to_string()))?;
        format!("http://{host}{}", req.uri().path_and_query().map_or("/", |p| p.as_str()))
    };
    let pipeline = admin.shared.load();
    let url = canonical(&url, &pipeline.guard).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    // The PURGE's own headers choose among routes that match on headers.
    let url = pipeline.router.key_url(url, req.headers()).0;
    let soft = req.headers().get("x-purge-soft").is_some_and(|v| v == "1" || v == "true");
    let mode = if soft { PurgeMode::Soft } else { PurgeMode::Hard };
    Ok(run_purge(admin, Target::Urls(both_schemes(&url)), mode, wait).await)
}

/// How long a purge waits for every live node to apply it, when asked to
/// (`?wait=applied`, or `X-Purge-Wait: applied` on a `PURGE`): `timeout` milliseconds,
/// by default the bus's `publish_timeout`.
fn wait_applied(admin: &Admin, asked: bool, timeout: Option<&str>) -> Result<Option<std::time::Duration>, String> {
    if !asked {
        return Ok(None);
    }
    let timeout = match timeout {
        Some(ms) => std::time::Duration::from_millis(
            ms.parse::<u64>().ok().filter(|&ms| ms <= 60_000).ok_or("timeout is milliseconds, at most 60000")?,
        ),
        None => admin
            .shared
            .load()
            .config
            .cluster
            .as_ref()
            .and_then(|c| c.bus.as_ref())
            .map_or(std::time::Duration::from_secs(2), |b| b.publish_timeout.get()),
    };
    Ok(Some(timeout))
}

/// Applies a purge here, then (with a bus) publishes it for the other nodes.
async fn run_purge(
    admin: &Admin,
    target: Target,
    mode: PurgeMode,
    wait: Option<std::time::Duration>,
) -> Response<Body> {
    let kind = target.kind();
    let pipeline = admin.shared.load_full();
    let refuse = pipeline.config.cluster.as_ref().and_then(|c| c.bus.as_ref()).map(|b| b.when_down)
        == Some(crate::config::WhenDown::Refuse);
    if refuse && admin.bus.as_ref().is_some_and(|bus| !bus.connected()) {
        tracing::warn!(
            kind = kind.as_str(),
            "purge refused: the purge bus is unreachable (cluster.bus.when_down = \"refuse\")"
        );
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the purge bus is unreachable; nothing was purged (cluster.bus.when_down = \"refuse\")"}),
        );
    }
    let purged = pipeline.cache.purge(target.clone(), mode).await;
    admin.metrics.purge(kind, mode, purged);
    let (kind_name, soft) = (kind.as_str(), mode.is_soft());
    tracing::info!(kind = kind_name, soft, purged, "purge");
    let mut answer = json!({"purged": purged, "kind": kind_name, "soft": soft});
    if let Some(bus) = &admin.bus {
        let published = bus.publish(&target, mode, wait).await;
        if let Some(warning) = published.get("warning") {
            answer["warning"] = warning.clone();
        }
        answer["cluster"] = published;
    }
    json_response(StatusCode::OK, answer)
}

/// The canonical form of an absolute http(s) URL, as cache keys use it.
/// The key URL of `url`: host as `target.rs` reads it, path normalised as the
/// guard normalises requests (so `/a/../b` names what `/b` stored).
fn canonical(url: &str, guard: &Guard) -> Result<String, String> {
    let uri: http::Uri = url.trim().parse().map_err(|_| format!("malformed URL {url:?}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} is not an absolute http(s) URL")),
    }
    let uri = match guard.target(&uri) {
        Ok(normal) => normal.unwrap_or(uri),
        Err(_) => return Err(format!("{url:?} has a path no request could have")),
    };
    key::url_of(&uri).ok_or_else(|| format!("{url:?} has no host"))
}

/// A prefix keeps what follows the host as given ("…/path/" must not gain a "/").
fn canonical_prefix(prefix: &str, guard: &Guard) -> Result<String, String> {
    let full = canonical(prefix, guard)?;
    let given_path = prefix.trim().splitn(4, '/').nth(3).map_or(String::new(), |p| format!("/{p}"));
    let base = full.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    Ok(format!("{base}{given_path}"))
}

/// relais keys by the scheme it served; a purge names the page as users see it,
/// often `https://` in front of a TLS terminator. Both are purged.
fn both_schemes(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    vec![format!("http://{rest}"), format!("https://{rest}")]
}

/// What `relais status` heads its screen with, as `nginx -V` would.
fn about(admin: &Admin, pipeline: &Pipeline) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "started": httpdate::fmt_http_date(admin.started),
        "uptime_secs": admin.started.elapsed().map_or(0, |d| d.as_secs()),
        "config": pipeline.config.source.as_ref().map(|p| std::path::absolute(p).unwrap_or(p.clone()).display().to_string()),
        "loaded": httpdate::fmt_http_date(pipeline.loaded),
        "listen": admin.listen.0,
        "tls_listen": admin.listen.1,
    })
}

/// `GET /cache?url=…`: what is stored for a URL, for debugging.
async fn cache_info(pipeline: &Pipeline, req: &Request<Body>) -> Answer {
    let query = req.uri().query().unwrap_or("");
    let url = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("url="))
        .map(percent_decode)
        .ok_or((StatusCode::BAD_REQUEST, "give ?url=…".to_string()))?;
    let url = canonical(&url, &pipeline.guard).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    let (url, rules) = pipeline.router.key_url(url, &http::HeaderMap::new());
    let mut described = describe(&pipeline.cache, &url).await;
    if let Some(rules) = rules {
        // What each entry's key was hashed from (the named values differ between them).
        described["cache_key"] = Value::from(key::shown(rules, &url));
    }
    Ok(json_response(StatusCode::OK, described))
}

/// What is stored for a canonical URL, without changing what is stored.
async fn describe(cache: &Cache, url: &str) -> Value {
    let now = std::time::SystemTime::now();
    let mut found = Vec::new();
    for k in cache.keys_of_url(url) {
        let Some((tier, stored, bytes)) = cache.peek(&k).await else { continue };
        let tier = tier.as_str();
        found.push(match &*stored {
            Stored::Vary(v) => json!({
                "key": k, "kind": "vary", "tier": tier,
                "vary": v.names.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            }),
            Stored::Entry(e) => json!({
                "key": k, "kind": "entry", "tier": tier, "status": e.status.as_u16(),
                "bytes": bytes, "age": e.policy.age(now).as_secs(), "ttl": e.policy.ttl_secs(now),
                "tags": e.tags,
                "stored_at": httpdate::fmt_http_date(e.stored_at),
                "vary": e.headers.get(http::header::VARY).and_then(|v| v.to_str().ok()),
            }),
        });
    }
    json!({ "url": url, "entries": found })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn gauges(pipeline: &Pipeline) -> render::Gauges {
    let cache = &pipeline.cache;
    let mut g = render::Gauges {
        memory_bytes: cache.memory_bytes().await,
        memory_entries: cache.memory_entries(),
        memory_capacity: pipeline.config.cache.memory_capacity.bytes(),
        disk_capacity: pipeline.config.cache.disk_capacity.bytes(),
        indexed_keys: cache.indexed_keys() as u64,
        fill_bytes: cache.fill_bytes(),
        disk_writes_waiting: cache.disk_writes_waiting() as u64,
        encoded_bytes: pipeline.compression.copies.bytes(),
        encoded_made: pipeline.compression.copies.made(),
        ..Default::default()
    };
    let configured = pipeline.tls.iter().flat_map(|t| t.certificates.iter().cloned());
    for cert in configured.chain(pipeline.issued.infos()) {
        let expiry = cert.not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for name in cert.names {
            g.certificates.push((name, expiry));
        }
    }
    if let Some(d) = cache.disk() {
        g.disk_bytes = d.used_bytes();
        g.disk_entries = d.entries() as u64;
    }
    for (name, up) in &pipeline.upstreams {
        let members = up.members();
        for (i, s) in members.servers.iter().enumerate() {
            g.servers.push(render::ServerGauge {
                upstream: name.clone(),
                address: s.address.to_string(),
                up: s.is_up(),
                state: s.state(),
                ejections: s.ejections(),
                in_flight: s.in_flight() as u64,
                connections: s.open_connections() as u64,
                ewma_ms: members.ewma(i).map(|d| d.as_secs_f64() * 1000.0),
            });
        }
    }
    g
}

fn json_response(status: StatusCode, value: Value) -> Response<Body> {
    let mut res = Response::new(Body::full(Bytes::from(value.to_string() + "\n")));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let mut h = http::HeaderMap::new();
        assert_eq!(authorize(Some("s3cret"), &h), Err(StatusCode::UNAUTHORIZED));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert_eq!(authorize(Some("s3cret"), &h), Err(StatusCode::FORBIDDEN));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(authorize(Some("s3cret"), &h), Ok(()));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn urls() {
        let config = crate::config::Config::from_toml("", "test.toml").unwrap();
        let guard = Guard::new(&config, None).unwrap();
        assert_eq!(canonical("http://Shop.Test:80/a?b", &guard).unwrap(), "http://shop.test/a?b");
        assert_eq!(canonical("http://shop.test/x/..//%70rivate?q", &guard).unwrap(), "http://shop.test/private?q");
        assert!(canonical("http://shop.test/a%2Fb", &guard).is_err());
        assert!(canonical("/relative", &guard).is_err());
        assert!(canonical("ftp://x/", &guard).is_err());
        assert_eq!(canonical_prefix("http://shop.test/static/", &guard).unwrap(), "http://shop.test/static/");
        assert_eq!(canonical_prefix("http://shop.test", &guard).unwrap(), "http://shop.test");
        assert_eq!(percent_decode("http%3A%2F%2Fa%2Fb"), "http://a/b");
    }
}
