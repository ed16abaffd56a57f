//! Sharding (`[cluster] sharding = "rendezvous"`): each key's owner among the
//! healthy peers fetches it from the origin; the other nodes send their misses
//! to it, so the origin sees one fetch per object and the owner's collapsing
//! covers the cluster.
//!
//! A forwarded request is the client's, with `relais-forwarded-by` (the node)
//! and `relais-peer-auth` (a time and an HMAC-SHA256 of node, method, host,
//! path and time under `cluster.secret`). A node trusts only a signature it
//! checks, fresh within [`FRESH`]; it removes both headers from every request
//! as it arrives, so a client's claim never reaches an origin, and an
//! authenticated request is fetched where it lands, never forwarded again.
//! Each peer is a one-server upstream pool: its connections and passive
//! health are the upstream layer's. An owner down, silent past
//! `forward_timeout` or failing: this node asks the origin itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Version};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::Conn;
use crate::cache::{Answer, FromOwner};
use crate::config::{ClusterConfig, Config, ConfigError, Dur, KeyConfig, Sharding, UpstreamConfig};
use crate::http::body::Body;
use crate::metrics::{Forwarded, Metrics};
use crate::upstream::{Outgoing, Upstream, UpstreamError, rendezvous};

static FORWARDED_BY: HeaderName = HeaderName::from_static("relais-forwarded-by");
static PEER_AUTH: HeaderName = HeaderName::from_static("relais-peer-auth");
/// A peer's health check: answered 204 by relais itself, before any route.
static PEER_CHECK: HeaderName = HeaderName::from_static("relais-peer-check");

/// How far a signature's time may be from this node's clock.
const FRESH: u64 = 30;

/// In a request's extensions: a peer forwarded it (its signature checked).
#[derive(Clone, Copy, Debug)]
pub(super) struct FromPeer;

/// One node of the ring.
struct Peer {
    id: String,
    /// The way to it; None for this node.
    way: Option<Arc<Upstream>>,
}

pub(crate) struct Shard {
    config: ClusterConfig,
    peers: Vec<Peer>,
    secret: Vec<u8>,
    /// What a peer's health check carries in `relais-peer-check`.
    check: String,
    timeout: Duration,
    keep: Option<Duration>,
    metrics: Arc<Metrics>,
}

impl Shard {
    /// The ring for `config`, if it shards (kept from `previous` when the cluster did not change).
    pub(super) fn new(
        config: &Config,
        metrics: &Arc<Metrics>,
        previous: Option<&Arc<Shard>>,
    ) -> Result<Option<Arc<Shard>>, ConfigError> {
        let Some(c) = config.cluster.as_ref().filter(|c| c.sharding == Sharding::Rendezvous && c.peers.len() > 1)
        else {
            return Ok(None);
        };
        if let Some(old) = previous.filter(|old| old.config == *c) {
            return Ok(Some(old.clone()));
        }
        let secret = c.secret.as_deref().unwrap_or_default().as_bytes();
        let mut peers = Vec::new();
        for (id, addr) in &c.peers {
            let way = if *id == c.node {
                None
            } else {
                let invalid = |msg: String| ConfigError::Invalid {
                    source_name: config.source.as_ref().map_or_else(String::new, |p| p.display().to_string()),
                    key: format!("cluster.peers.{id}"),
                    msg,
                };
                let pool = peer_pool(addr.as_str(), c.forward_timeout, &check_token(secret)).map_err(invalid)?;
                let up = Upstream::new(&format!("cluster:{id}"), &pool, config.server.engine, metrics.clone())
                    .map_err(|e| invalid(format!("{}: {}", e.file.display(), e.reason)))?;
                let up = Arc::new(up);
                up.start_checks();
                Some(up)
            };
            peers.push(Peer { id: id.clone(), way });
        }
        let keep = Some(c.peer_copy_ttl.get()).filter(|d| !d.is_zero());
        Ok(Some(Arc::new(Shard {
            config: c.clone(),
            peers,
            check: check_token(secret),
            secret: secret.to_vec(),
            timeout: c.forward_timeout.get(),
            keep,
            metrics: metrics.clone(),
        })))
    }

    /// The peer to ask for `key`, or None when this node owns it. The owner is
    /// the first by rendezvous among the peers up (this node always is).
    fn owner(&self, key: &str) -> Option<&Arc<Upstream>> {
        let ids = || self.peers.iter().map(|p| p.id.as_str());
        let first = rendezvous::owner(ids(), key, |_| true)?;
        let up = |i: usize| self.peers[i].way.as_ref().is_none_or(|w| is_up(w));
        let owner = if up(first) {
            first
        } else {
            let next = rendezvous::owner(ids(), key, up)?;
            if self.peers[next].way.is_none() {
                self.metrics.forwarded(Forwarded::Down);
            }
            next
        };
        self.peers[owner].way.as_ref()
    }

    /// Sends a miss to its owner, if another node owns it. None: this node asks
    /// the origin (it owns the key, or its owner is down, slow or failing).
    /// `key`: the route's `cache.key`, so that the requests one key URL
    /// serves have one owner.
    pub(super) async fn ask_owner(
        &self,
        host: Option<&HeaderValue>,
        conn: &Conn,
        req: &Parts,
        key: Option<&KeyConfig>,
    ) -> Option<Answer> {
        let path = req.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let host_str = host.and_then(|h| h.to_str().ok()).unwrap_or("");
        let owned = match key {
            // The scheme does not choose the owner: shaped with one, then cut.
            Some(rules) => crate::cache::key::shape_url(rules, format!("http://{host_str}{path}")).split_off(7),
            None => format!("{host_str}{path}"),
        };
        let owner = self.owner(&owned)?;
        let mut headers = req.headers.clone();
        match host {
            Some(h) => headers.insert(header::HOST, h.clone()),
            None => headers.remove(header::HOST),
        };
        // Who the client is, as an origin would be told: the owner's `real_ip` may trust it.
        match &conn.forwarded_for {
            Some(chain) => {
                headers.insert(crate::http::names::X_FORWARDED_FOR.clone(), chain.clone());
                super::headers::add_forwarded(&mut headers, None, conn.proto, host);
            }
            None => super::headers::add_forwarded(&mut headers, Some(conn.client), conn.proto, host),
        }
        self.sign(&mut headers, &req.method, host_str, path.as_str());
        let out = Outgoing {
            method: req.method.clone(),
            path,
            headers,
            server_host: false,
            body: Body::empty(),
            retryable: true,
            client: conn.client,
            interim: None,
        };
        // The pool's own timeouts are `forward_timeout` (so passive health counts a slow
        // owner); this one only bounds a connect and a head that each took nearly as long.
        let (result, answer) = match tokio::time::timeout(self.timeout * 2, owner.send(out)).await {
            Ok(Ok((res, server))) => {
                let (mut parts, body) = res.into_parts();
                super::headers::strip_hop_by_hop(&mut parts.headers);
                parts.version = Version::HTTP_11;
                parts.extensions.insert(FromOwner { keep: self.keep });
                let response = http::Response::from_parts(parts, body);
                (Forwarded::Answered, Some(Answer { response, upstream: Some(server), cache: None }))
            }
            Ok(Err(e @ UpstreamError::Timeout(_))) => {
                tracing::warn!(error = %e, "no answer from the key's owner in time; asking the origin");
                (Forwarded::Timeout, None)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the key's owner failed; asking the origin");
                (Forwarded::Error, None)
            }
            Err(_) => {
                tracing::warn!(peer = owner.name, "no answer from the key's owner in time; asking the origin");
                (Forwarded::Timeout, None)
            }
        };
        self.metrics.forwarded(result);
        answer
    }

    fn sign(&self, headers: &mut HeaderMap, method: &Method, host: &str, path: &str) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mac = hex::encode(self.mac(&self.config.node, method, host, path, now).finalize().into_bytes());
        if let Ok(node) = HeaderValue::try_from(self.config.node.as_str()) {
            headers.insert(FORWARDED_BY.clone(), node);
        }
        if let Ok(auth) = HeaderValue::try_from(format!("{now}:{mac}")) {
            headers.insert(PEER_AUTH.clone(), auth);
        }
    }

    /// Removes the peer headers from an arriving request; true when they were
    /// a peer's, signed and fresh.
    pub(super) fn signed_by_peer(&self, headers: &mut HeaderMap, method: &Method, host: &str, path: &str) -> bool {
        let by = headers.remove(&FORWARDED_BY);
        let auth = headers.remove(&PEER_AUTH);
        let (Some(by), Some(auth)) = (by, auth) else { return false };
        let (Ok(node), Ok(auth)) = (by.to_str(), auth.to_str()) else { return false };
        let Some((time, mac)) = auth.split_once(':') else { return false };
        let Ok(time) = time.parse::<u64>() else { return false };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let known = node != self.config.node && self.peers.iter().any(|p| p.id == node);
        let valid = known
            && now.abs_diff(time) <= FRESH
            && hex::decode(mac).is_ok_and(|mac| self.mac(node, method, host, path, time).verify_slice(&mac).is_ok());
        if !valid {
            tracing::debug!(node, "a peer header that is not a peer's; ignored");
        }
        valid
    }

    /// Whether the request is a peer's health check (its header is removed either way).
    pub(super) fn is_check(&self, headers: &mut HeaderMap) -> bool {
        headers.remove(&PEER_CHECK).is_some_and(|v| v.as_bytes().ct_eq(self.check.as_bytes()).into())
    }

    /// The signature of a forwarded request: node, method, host, path and time, one per line.
    /// HMAC-SHA256 of what a signature covers; its check (`verify_slice`) takes constant time.
    fn mac(&self, node: &str, method: &Method, host: &str, path: &str, time: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        for p in [node, method.as_str(), host, path, &time.to_string()] {
            mac.update(p.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// This node, the mode, and each peer with its state (`/stats`, `relais check`).
    pub(crate) fn peers(&self) -> Vec<(String, String, &'static str)> {
        self.peers
            .iter()
            .map(|p| {
                let addr = self.config.peers.get(&p.id).map(|a| a.as_str().to_string()).unwrap_or_default();
                let state = match &p.way {
                    None => "self",
                    Some(w) => w.members().servers.first().map_or("down", |s| s.state()),
                };
                (p.id.clone(), addr, state)
            })
            .collect()
    }

    /// Each peer, its address and state (`self`, `up`, `down`, ...), and the
    /// misses this node sent to owners by result (`/stats`).
    pub(crate) fn peers_json(&self) -> serde_json::Value {
        let peers: serde_json::Map<String, serde_json::Value> = self
            .peers()
            .into_iter()
            .map(|(id, address, state)| (id, serde_json::json!({"address": address, "state": state})))
            .collect();
        let forwarded: serde_json::Map<String, serde_json::Value> =
            self.metrics.forwards().into_iter().map(|(f, n)| (f.as_str().to_string(), n.into())).collect();
        serde_json::json!({"nodes": peers, "forwarded": forwarded})
    }

    pub(crate) fn node(&self) -> &str {
        &self.config.node
    }
}

fn is_up(way: &Upstream) -> bool {
    way.members().servers.first().is_some_and(|s| s.is_up())
}

/// A peer as an upstream pool of one server: nothing retried, its answer due
/// within `timeout`; a failure takes it out for 10s (passive health), and a
/// check every second (two failed in a row take it out, one passed brings it back).
fn peer_pool(addr: &str, timeout: Dur, token: &str) -> Result<UpstreamConfig, String> {
    let toml = format!(
        "servers = [{addr:?}]\nmax_retries = 0\nmax_fails = 1\nfail_timeout = \"10s\"\n\
         health = {{ path = \"/\", interval = \"1s\", fails = 2, passes = 1, expect_status = \"204\", \
         headers = {{ {PEER_CHECK} = {token:?} }} }}"
    );
    let mut pool: UpstreamConfig =
        figment::Figment::from(<figment::providers::Toml as figment::providers::Format>::string(&toml))
            .extract()
            .map_err(|e| e.to_string())?;
    pool.connect_timeout = timeout;
    pool.response_timeout = timeout;
    if let Some(health) = &mut pool.health {
        health.timeout = timeout;
    }
    Ok(pool)
}

/// What health checks between peers carry: it proves nothing but knowledge of
/// the secret, and earns nothing but a 204.
fn check_token(secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(b"relais peer check");
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(node: &str) -> Arc<Shard> {
        let text = format!(
            "[upstreams.o]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nupstream = \"o\"\n[cluster]\nnode = \"{node}\"\n\
             peers = {{ a = \"127.0.0.1:1\", b = \"127.0.0.1:2\" }}\nsecret = \"0123456789abcdef\""
        );
        let config = Config::from_toml(&text, "relais.toml").unwrap();
        let metrics = Arc::new(Metrics::new());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { Shard::new(&config, &metrics, None).unwrap().unwrap() })
    }

    #[test]
    fn a_peer_signature_is_checked() {
        let (a, b) = (shard("a"), shard("b"));
        let mut h = HeaderMap::new();
        a.sign(&mut h, &Method::GET, "example.com", "/x");
        let signed = h.clone();
        assert!(b.signed_by_peer(&mut h, &Method::GET, "example.com", "/x"));
        assert!(h.is_empty(), "the peer headers are removed");
        // Another path, another method, this node's own name, or a forged mac: not a peer.
        assert!(!b.signed_by_peer(&mut signed.clone(), &Method::GET, "example.com", "/y"));
        assert!(!b.signed_by_peer(&mut signed.clone(), &Method::HEAD, "example.com", "/x"));
        assert!(!a.signed_by_peer(&mut signed.clone(), &Method::GET, "example.com", "/x"));
        let mut forged = signed.clone();
        forged.insert(PEER_AUTH.clone(), HeaderValue::from_static("1:00"));
        assert!(!b.signed_by_peer(&mut forged, &Method::GET, "example.com", "/x"));
        assert!(forged.is_empty());
        let mut stale = signed;
        let old = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 120;
        let mac = hex::encode(a.mac("a", &Method::GET, "example.com", "/x", old).finalize().into_bytes());
        stale.insert(PEER_AUTH.clone(), HeaderValue::try_from(format!("{old}:{mac}")).unwrap());
        assert!(!b.signed_by_peer(&mut stale, &Method::GET, "example.com", "/x"));
    }
}
