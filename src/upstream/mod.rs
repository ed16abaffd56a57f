//! Upstream pools: keep-alive connections to a named group of origin servers,
//! a balancer to choose among them, passive health, and retry of requests that
//! never reached a server.
//!
//! Invariants: a request is retried on the next server only when the first
//! attempt failed to connect (so the origin cannot have seen it) and the
//! caller said it is safe (idempotent method, no body). A timeout is never
//! retried: the origin may be working on it. The response timeout starts once
//! the request body has been sent: a slow upload is not the origin's delay,
//! and a failed one (the client's fault) never marks a server down.

mod sent;

pub mod balance;
mod check;
mod health;
mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::UpstreamConfig;
use balance::Balancer;
use health::Health;

/// One origin server of a pool.
pub struct Server {
    pub address: Arc<str>,
    authority: Authority,
    host_value: HeaderValue,
    weight: u32,
    health: Health,
    in_flight: AtomicUsize,
    /// Reached over TLS (`https://`).
    tls: bool,
    /// Active health checks say it is down.
    checked_down: std::sync::atomic::AtomicBool,
}

impl Server {
    pub fn is_up(&self) -> bool {
        self.health.is_up() && !self.checked_down.load(Ordering::Relaxed)
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One request counted in its server's `in_flight` until dropped, so a
/// client that hangs up (its future dropped mid-request) does not leave the
/// count raised for good.
struct InFlight<'a>(&'a Server);

impl<'a> InFlight<'a> {
    fn count(server: &'a Server) -> Self {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(server)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named pool of servers sharing one connection pool.
pub struct Upstream {
    pub name: String,
    pub config: UpstreamConfig,
    servers: Vec<Server>,
    balancer: Balancer,
    budget: retry::Budget,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Why no response came back from a pool.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to {0}")]
    Connect(Arc<str>),
    #[error("no response from {0} within the response timeout")]
    Timeout(Arc<str>),
    #[error("{0} broke the protocol")]
    Protocol(Arc<str>),
    #[error("request to {server} failed: {source}")]
    Failed { server: Arc<str>, source: hyper_util::client::legacy::Error },
}

/// What to send: the parts of the request that stay the same on every attempt.
pub struct Outgoing {
    pub method: Method,
    pub path: PathAndQuery,
    pub headers: HeaderMap,
    /// Replace Host with the server's address (`pass_host = false`).
    pub server_host: bool,
    pub body: Body,
    /// Safe to send again after a connect failure.
    pub retryable: bool,
    /// The client's address (for `ip_hash` and `hash_key = "ip"`).
    pub client: std::net::IpAddr,
}

impl Upstream {
    /// Builds the pool; reads the TLS files its `https://` servers need.
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Upstream, crate::tls::TlsError> {
        let servers: Vec<Server> = config
            .servers
            .iter()
            .map(|s| Server {
                address: Arc::from(s.address().as_str()),
                authority: s.address().authority().clone(),
                host_value: s.address().host_value().clone(),
                tls: s.address().is_tls(),
                weight: s.weight(),
                health: Health::default(),
                in_flight: AtomicUsize::new(0),
                checked_down: Default::default(),
            })
            .collect();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout.get()));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.enforce_http(false);
        let tls = if servers.iter().any(|s| s.tls) {
            if config.tls.insecure_skip_verify {
                tracing::warn!(upstream = name, "tls.insecure_skip_verify: the servers' certificates are not verified");
            }
            crate::tls::client::config(&config.tls)?
        } else {
            // Never used (no https server): nothing to read.
            rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| crate::tls::TlsError { file: "upstream tls".into(), reason: e.to_string() })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let https = match &config.tls.server_name {
            Some(n) => https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                rustls_pki_types::ServerName::try_from(n.clone()).map_err(|e| crate::tls::TlsError {
                    file: format!("upstreams.{name}.tls.server_name").into(),
                    reason: e.to_string(),
                })?,
            )),
            None => https,
        };
        let connector = https.enable_http1().wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout.get())
            .pool_max_idle_per_host(config.max_idle)
            .http1_max_buf_size(256 * 1024)
            .build(connector);
        Ok(Upstream {
            name: name.to_string(),
            config: config.clone(),
            balancer: Balancer::new(config.balance, &servers.iter().map(|s| &*s.address).collect::<Vec<_>>(), &weights),
            budget: retry::Budget::new(config.retry_budget),
            servers,
            client,
            metrics,
        })
    }

    /// Starts the pool's active health checks, if it has any; they stop when it is dropped.
    pub fn start_checks(self: &Arc<Self>) {
        if let Some(check) = self.config.health.clone() {
            tokio::spawn(check::run(Arc::downgrade(self), check));
        }
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Sends `out` to a live server; returns the response head and the server's address.
    pub async fn send(&self, out: Outgoing) -> Result<(Response<Incoming>, Arc<str>), UpstreamError> {
        let order = self.order(self.affinity(&out));
        let attempts = if out.retryable { order.len() } else { 1 };
        self.budget.deposit();
        let mut retries = 0;
        // Whether an answer may go to the next server instead of the client.
        let mut retry = |attempt: usize| {
            let ok = attempt + 1 < attempts && retries < self.config.max_retries && self.budget.withdraw();
            retries += u32::from(ok);
            ok
        };
        let Outgoing { method, path, mut headers, server_host, body, .. } = out;
        let mut body = Some(body);
        let mut last = None;
        for (attempt, &i) in order.iter().take(attempts).enumerate() {
            let server = &self.servers[i];
            if server_host {
                headers.insert(header::HOST, server.host_value.clone());
            }
            let uri = Uri::builder()
                .scheme(if server.tls { Scheme::HTTPS } else { Scheme::HTTP })
                .authority(server.authority.clone())
                .path_and_query(path.clone())
                .build()
                .expect("valid parts");
            let (outgoing, body_sent) = sent::watch(body.take().unwrap_or(Body::Empty));
            let mut req = Request::new(outgoing);
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri;
            *req.version_mut() = Version::HTTP_11;
            *req.headers_mut() = if attempts > 1 { headers.clone() } else { std::mem::take(&mut headers) };

            let counted = InFlight::count(server);
            let started = std::time::Instant::now();
            let timeout = self.config.response_timeout.get();
            let result = tokio::select! {
                biased;
                r = self.client.request(req) => Ok(r),
                () = body_sent.then_sleep(timeout) => Err(()),
            };
            drop(counted);
            match result {
                Ok(Ok(res)) => {
                    self.metrics.origin_latency(&self.name, started.elapsed().as_secs_f64());
                    self.balancer.observe(i, started.elapsed());
                    server.health.success();
                    self.note_answer(server, res.status().is_server_error());
                    let code = res.status().as_u16().to_string();
                    if self.config.retry_on.contains(&code) && retry(attempt) {
                        tracing::info!(upstream = %self.name, server = %server.address, status = %code, "retrying on the next server");
                        last = Some(UpstreamError::Connect(server.address.clone()));
                        continue;
                    }
                    return Ok((res, server.address.clone()));
                }
                Ok(Err(e)) if e.is_connect() => {
                    self.mark_failed(server);
                    tracing::warn!(upstream = %self.name, server = %server.address, error = %e, "connect failed");
                    last = Some(UpstreamError::Connect(server.address.clone()));
                }
                Ok(Err(e))
                    if !sent::body_failed(&e)
                        && self.config.retry_on.iter().any(|r| r == "reset")
                        && retry(attempt) =>
                {
                    tracing::info!(upstream = %self.name, server = %server.address, error = %e, "connection broke; retrying on the next server");
                    last = Some(UpstreamError::Connect(server.address.clone()));
                }
                Ok(Err(e)) => {
                    if sent::body_failed(&e) {
                        tracing::debug!(upstream = %self.name, server = %server.address, error = %e, "request body failed");
                    } else {
                        tracing::warn!(upstream = %self.name, server = %server.address, error = %e, "upstream request failed");
                    }
                    return Err(UpstreamError::Failed { server: server.address.clone(), source: e });
                }
                Err(_) => {
                    self.mark_failed(server);
                    self.note_answer(server, true);
                    tracing::warn!(upstream = %self.name, server = %server.address, "response timeout");
                    return Err(UpstreamError::Timeout(server.address.clone()));
                }
            }
        }
        Err(last.unwrap_or_else(|| UpstreamError::Connect(Arc::from(self.name.as_str()))))
    }

    /// The request's key for `hash` and `ip_hash`; `None` goes round-robin.
    fn affinity(&self, out: &Outgoing) -> Option<u64> {
        use crate::config::{Balance, HashKey};
        let ip = || match out.client {
            std::net::IpAddr::V4(a) => balance::hash(&[&a.octets()]),
            std::net::IpAddr::V6(a) => balance::hash(&[&a.octets()]),
        };
        match (self.config.balance, &self.config.hash_key) {
            (Balance::IpHash, _) | (Balance::Hash, HashKey::Ip) => Some(ip()),
            (Balance::Hash, HashKey::Uri) => Some(balance::hash(&[out.path.as_str().as_bytes()])),
            (Balance::Hash, HashKey::Header(name)) => {
                let values: Vec<&[u8]> = out.headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
                (!values.is_empty()).then(|| balance::hash(&values))
            }
            (Balance::Hash, HashKey::Cookie(name)) => out
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| pair.trim().strip_prefix(name.as_str())?.strip_prefix('='))
                .map(|value| balance::hash(&[value.as_bytes()])),
            _ => None,
        }
    }

    /// Outlier ejection: a run of 5xx answers or timeouts ejects the server for
    /// a time that grows with each ejection, unless that would put more than
    /// `max_ejection_percent` of the pool out at once.
    fn note_answer(&self, server: &Server, bad: bool) {
        let Some(o) = &self.config.outlier else { return };
        if !server.health.answered(bad, o.consecutive_5xx) {
            return;
        }
        let out = self.servers.iter().filter(|s| s.health.is_ejected()).count() + 1;
        if out * 100 > o.max_ejection_percent as usize * self.servers.len() {
            tracing::debug!(upstream = %self.name, server = %server.address, "not ejected: too much of the pool is out");
            return;
        }
        let length = server.health.eject(o.base_ejection.get(), o.max_ejection.get());
        tracing::warn!(upstream = %self.name, server = %server.address, ?length, threshold = o.consecutive_5xx, "consecutive 5xx answers or timeouts; server ejected");
    }

    fn mark_failed(&self, server: &Server) {
        if server.health.failure(self.config.max_fails, self.config.fail_timeout.get()) {
            tracing::warn!(upstream = %self.name, server = %server.address, cooldown = ?self.config.fail_timeout.get(), "server marked down");
        }
    }

    /// Live servers in balancing order; if none is live, the one due back
    /// first, so a pool recovers as soon as its server does.
    fn order(&self, key: Option<u64>) -> Vec<usize> {
        let s = &self.servers;
        let mut order = self.balancer.candidates(s.len(), |i| s[i].in_flight(), |i| s[i].weight, key);
        order.retain(|&i| s[i].is_up());
        if order.is_empty() {
            let soonest = (0..s.len()).min_by_key(|&i| s[i].health.down_until()).unwrap_or(0);
            order.push(soonest);
        }
        order
    }
}
