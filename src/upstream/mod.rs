//! Upstream pools: keep-alive connections to a named group of origin servers,
//! a balancer to choose among them, passive health, and retry of requests that
//! never reached a server.
//!
//! Invariants: a request is retried on the next server only when the first
//! attempt failed to connect (so the origin cannot have seen it) and the
//! caller said it is safe (idempotent method, no body). A timeout is never
//! retried: the origin may be working on it. The response timeout starts once
//! the request body has been sent: a slow upload is not the origin's delay,
//! and a failed one (the client's fault) never marks a server down. It holds
//! again between the pieces of the response body ([`silence`]).

mod sent;
mod silence;

pub(crate) mod balance;
mod check;
mod connect;
mod h1;
mod health;
mod pool;
pub(crate) mod rendezvous;
mod resolve;
mod retry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};

use crate::http::body::Body;
use crate::metrics::UpstreamFailure as Failure;
use arc_swap::ArcSwap;

use crate::config::{Engine, Protocol, ServerAddress, ServerEntry, UpstreamConfig};
use balance::Balancer;
use check::Checked;
use connect::{Connector, Endpoint};
use health::Health;
pub(crate) use pool::RequestError;
use pool::{Pool, SendError};

/// One origin server of a pool.
pub(crate) struct Server {
    pub address: Arc<str>,
    authority: Authority,
    host_value: HeaderValue,
    weight: u32,
    health: Health,
    in_flight: AtomicUsize,
    /// Reached over TLS (`https://`).
    tls: bool,
    /// What active health checks say (`Unchecked` until the first answers).
    checked: check::CheckState,
    /// Active checks failed and passed in a row.
    check_streak: std::sync::Mutex<(u32, u32)>,
    /// While it ramps up after coming back (`slow_start`): the share of picks
    /// it has earned, in thousandths; it keeps a pick once that reaches one.
    ramp_credit: AtomicUsize,
    endpoint: Endpoint,
    pool: Arc<Pool>,
}

impl Server {
    /// The server for `entry`, at `ip` when its name has been resolved.
    fn new(
        entry: &ServerEntry,
        ip: Option<std::net::IpAddr>,
        tls_name: Option<&rustls_pki_types::ServerName<'static>>,
        settings: &Arc<pool::Settings>,
        checked: bool,
    ) -> Server {
        let a = entry.address();
        let mut endpoint = endpoint(a, tls_name);
        if let (Some(ip), Endpoint::Tcp { host, .. }) = (ip, &mut endpoint) {
            *host = Arc::from(ip.to_string());
        }
        Server {
            address: Server::label(entry, ip),
            authority: a.authority().clone(),
            host_value: a.host_value().clone(),
            tls: a.is_tls(),
            weight: entry.weight(),
            health: Health::default(),
            in_flight: AtomicUsize::new(0),
            checked: check::CheckState::new(checked),
            check_streak: Default::default(),
            ramp_credit: AtomicUsize::new(0),
            endpoint,
            pool: Pool::new(settings.clone()),
        }
    }

    /// How it is named in logs, metrics and `/stats`: as configured, with the address a name resolved to.
    fn label(entry: &ServerEntry, ip: Option<std::net::IpAddr>) -> Arc<str> {
        let a = entry.address();
        match ip {
            Some(ip) if a.unix_path().is_none() => Arc::from(format!("{a}@{ip}")),
            _ => Arc::from(a.as_str()),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.health.is_up() && self.checked.get() == Checked::Up
    }
    /// Why it is out, if it is: `unchecked` (no health check answered yet),
    /// `check_failed`, `ejected`, `down` (passive health); else `up`.
    pub(crate) fn state(&self) -> &'static str {
        if self.checked.get() == Checked::Unchecked {
            "unchecked"
        } else if self.checked.get() == Checked::Failed {
            "check_failed"
        } else if self.health.is_ejected() {
            "ejected"
        } else if !self.health.is_up() {
            "down"
        } else {
            "up"
        }
    }
    pub(crate) fn ejections(&self) -> u64 {
        self.health.ejections().into()
    }
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    pub(crate) fn open_connections(&self) -> usize {
        self.pool.open_connections()
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

/// A pool's servers as they are now and the balancer over them, replaced
/// whole when a name resolves to other addresses.
#[derive(Default)]
pub(crate) struct Members {
    pub servers: Vec<Arc<Server>>,
    balancer: Balancer,
}

impl Members {
    /// Server `i`'s moving average of response times (`balance = "ewma"`).
    pub(crate) fn ewma(&self, i: usize) -> Option<std::time::Duration> {
        self.balancer.average(i)
    }
}

/// How long the server took from the request to its response head (nginx's
/// `$upstream_header_time`), carried in the response's extensions for the access log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadTime(pub std::time::Duration);

/// A named pool of servers.
pub(crate) struct Upstream {
    pub name: String,
    pub config: UpstreamConfig,
    members: ArcSwap<Members>,
    settings: Arc<pool::Settings>,
    /// `tls.server_name`: the name every `https://` server is verified as.
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    budget: retry::Budget,
    connector: Connector,
    metrics: Arc<crate::metrics::Metrics>,
    /// Told of each health check's result (requests waiting for a first one).
    checked: tokio::sync::Notify,
    /// Wakes the health checks when the members change (a name resolved anew).
    checks_due: Arc<tokio::sync::Notify>,
    /// No server is up and requests go to any (logged once, until one is up again).
    none_up: std::sync::atomic::AtomicBool,
}

/// Why no response came back from a pool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("could not connect to {0}")]
    Connect(Arc<str>),
    #[error("no response from {0} within the response timeout")]
    Timeout(Arc<str>),
    #[error("{0} broke the protocol")]
    Protocol(Arc<str>),
    #[error("request to {server} failed: {source}")]
    Failed { server: Arc<str>, source: RequestError },
}

/// What to send: the parts of the request that stay the same on every attempt.
pub(crate) struct Outgoing {
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
    /// Where informational responses (103) go, when the client can take them.
    pub interim: Option<crate::http::interim::Interim>,
}

impl Upstream {
    /// Builds the pool; reads the TLS files its `https://` servers need.
    /// `engine` is `server.engine`: whose HTTP/1.1 code its connections run.
    pub(crate) fn new(
        name: &str,
        config: &UpstreamConfig,
        engine: Engine,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Upstream, crate::tls::TlsError> {
        let settings = Arc::new(pool::Settings {
            h2: config.protocol == Protocol::H2c,
            max_idle: config.max_idle,
            idle_timeout: config.idle_timeout.get(),
            max_streams: config.max_streams,
            engine,
        });
        let server_name = config.tls.server_name.as_ref().map(|n| n.0.clone());
        let tls = if config.servers.iter().any(|s| s.address().is_tls()) {
            if config.tls.insecure_skip_verify {
                tracing::warn!(upstream = name, "tls.insecure_skip_verify: the servers' certificates are not verified");
            }
            let mut tls = crate::tls::client::config(&config.tls)?;
            tls.alpn_protocols = match config.protocol {
                Protocol::H2c => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                Protocol::Http1 => vec![b"http/1.1".to_vec()],
            };
            Some(Arc::new(tls))
        } else {
            None
        };
        let up = Upstream {
            name: name.to_string(),
            config: config.clone(),
            members: ArcSwap::from_pointee(Members::default()),
            settings,
            server_name,
            budget: retry::Budget::new(config.retry_budget),
            connector: Connector::new(tls, config.connect_timeout.get()),
            metrics,
            checked: tokio::sync::Notify::new(),
            checks_due: Arc::new(tokio::sync::Notify::new()),
            none_up: Default::default(),
        };
        let unresolved = vec![None; config.servers.len()];
        up.members.store(Arc::new(up.members_for(&unresolved)));
        Ok(up)
    }

    /// The servers for the configured entries, `resolved[i]` the addresses of
    /// entry `i` when it is a name already resolved. Servers still there are
    /// kept (their health, counts and connections with them).
    fn members_for(&self, resolved: &[Option<Vec<std::net::IpAddr>>]) -> Members {
        let current = self.members.load();
        let (mut servers, mut kept_at) = (Vec::new(), Vec::new());
        for (entry, ips) in self.config.servers.iter().zip(resolved) {
            let ips: Vec<Option<std::net::IpAddr>> = match ips {
                Some(ips) => ips.iter().copied().map(Some).collect(),
                None => vec![None],
            };
            for ip in ips {
                let label = Server::label(entry, ip);
                let kept = current.servers.iter().position(|s| s.address == label);
                servers.push(match kept {
                    Some(j) => current.servers[j].clone(),
                    None => Arc::new(Server::new(
                        entry,
                        ip,
                        self.server_name.as_ref(),
                        &self.settings,
                        self.config.health.is_some(),
                    )),
                });
                kept_at.push(kept);
            }
        }
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        let addresses: Vec<&str> = servers.iter().map(|s| &*s.address).collect();
        let balancer =
            Balancer::new(self.config.balance, &addresses, &weights).bounded(self.config.hash_balance_factor);
        for (i, j) in kept_at.into_iter().enumerate() {
            if let Some(j) = j {
                balancer.carry(i, &current.balancer, j);
            }
        }
        Members { servers, balancer }
    }

    /// Starts the pool's active health checks, if it has any; they stop when it is dropped.
    pub(crate) fn start_checks(self: &Arc<Self>) {
        if let Some(check) = self.config.health.clone() {
            tokio::spawn(check::run(Arc::downgrade(self), check));
        }
        tokio::spawn(sweep(Arc::downgrade(self)));
        tokio::spawn(resolve::run(Arc::downgrade(self)));
    }

    /// Sends `req` as it is to `server`, without retries or accounting (health checks).
    async fn request_on(&self, server: &Server, req: Request<Body>) -> Result<Response<Body>, String> {
        let req = self.for_server(server, req);
        match server.pool.send(&self.connector, &server.endpoint, server.tls, req).await {
            Ok((res, reused)) => {
                self.metrics.upstream_connection(&self.name, reused);
                Ok(res)
            }
            Err(SendError::Connect(e)) => Err(format!("connect: {e}")),
            Err(SendError::Request(e)) => Err(e.to_string()),
        }
    }

    /// The request line in the form the server's protocol wants: origin-form for
    /// HTTP/1.1; for HTTP/2 an absolute URI whose authority is the Host sent.
    fn for_server(&self, server: &Server, mut req: Request<Body>) -> Request<Body> {
        let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        if self.config.protocol == Protocol::H2c {
            let host = req.headers_mut().remove(header::HOST);
            let authority =
                host.and_then(|h| Authority::try_from(h.as_bytes()).ok()).unwrap_or_else(|| server.authority.clone());
            *req.uri_mut() = Uri::builder()
                .scheme(if server.tls { Scheme::HTTPS } else { Scheme::HTTP })
                .authority(authority)
                .path_and_query(path)
                .build()
                .expect("valid parts");
            *req.version_mut() = Version::HTTP_2;
        } else {
            *req.uri_mut() = Uri::from(path);
            *req.version_mut() = Version::HTTP_11;
        }
        req
    }

    /// Whose HTTP/1.1 code its connections run.
    pub(crate) fn engine(&self) -> Engine {
        self.settings.engine
    }

    /// The servers as they are now.
    pub(crate) fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// A pool whose servers have not answered a health check yet (just built, or
    /// every server new): waits until one is in service or every first check has
    /// answered, at most the check's `timeout`, so that no client request goes
    /// to a server before its check says it may.
    async fn first_checks(&self, members: &Members) {
        let Some(h) = &self.config.health else { return };
        let deadline = tokio::time::Instant::now() + h.timeout.get();
        loop {
            let answered = self.checked.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            let s = &members.servers;
            if s.iter().any(|s| s.is_up()) || s.iter().all(|s| s.checked.get() != Checked::Unchecked) {
                return;
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                return;
            }
        }
    }

    /// Sends `out` to a live server; returns the response head (with its
    /// [`HeadTime`]) and the server's address.
    pub(crate) async fn send(&self, out: Outgoing) -> Result<(Response<Body>, Arc<str>), UpstreamError> {
        let members = self.members.load_full();
        if self.config.health.is_some() && !members.servers.iter().any(|s| s.is_up()) {
            self.first_checks(&members).await;
        }
        let (mut order, any_up) = order(&members, self.affinity(&out));
        if !any_up && !self.none_up.swap(true, Ordering::Relaxed) {
            tracing::warn!(upstream = %self.name, "no server is up (health checks, passive health); trying them anyway");
        } else if any_up && self.none_up.load(Ordering::Relaxed) {
            self.none_up.store(false, Ordering::Relaxed);
            tracing::info!(upstream = %self.name, "a server is up again");
        }
        self.slow_start(&members, &mut order);
        let attempts = if out.retryable { order.len() } else { 1 };
        self.budget.deposit();
        let mut retries = 0;
        // Whether an answer may go to the next server instead of the client.
        let mut retry = |attempt: usize| {
            let ok = attempt + 1 < attempts && retries < self.config.max_retries && self.budget.withdraw();
            retries += u32::from(ok);
            ok
        };
        let Outgoing { method, path, mut headers, server_host, body, interim, .. } = out;
        let mut body = Some(body);
        let mut last = None;
        for (attempt, &i) in order.iter().take(attempts).enumerate() {
            let server = &*members.servers[i];
            if server_host {
                headers.insert(header::HOST, server.host_value.clone());
            }
            let (outgoing, body_sent) = sent::watch(body.take().unwrap_or(Body::Empty));
            let mut req = Request::new(outgoing);
            *req.method_mut() = method.clone();
            *req.uri_mut() = Uri::from(path.clone());
            *req.headers_mut() = if attempts > 1 { headers.clone() } else { std::mem::take(&mut headers) };
            if let Some(interim) = &interim {
                req.extensions_mut().insert(interim.clone());
            }
            let req = self.for_server(server, req);

            let counted = InFlight::count(server);
            let started = std::time::Instant::now();
            let timeout = self.config.response_timeout.get();
            let result = tokio::select! {
                biased;
                r = server.pool.send(&self.connector, &server.endpoint, server.tls, req) => Ok(r),
                () = body_sent.then_sleep(timeout) => Err(()),
            };
            drop(counted);
            match result {
                Ok(Ok((res, reused))) => {
                    self.metrics.upstream_connection(&self.name, reused);
                    self.metrics.upstream_response(&self.name, &server.address, started.elapsed().as_secs_f64());
                    members.balancer.observe(i, started.elapsed());
                    if server.health.success() {
                        tracing::info!(upstream = %self.name, server = %server.address, "server answered again; back up");
                    }
                    self.note_answer(&members, server, res.status().is_server_error());
                    if self.config.retries_status(res.status()) && retry(attempt) {
                        let code = res.status().as_u16();
                        self.metrics.upstream_failure(&self.name, Failure::Status, true);
                        tracing::info!(upstream = %self.name, server = %server.address, status = %code, "retrying on the next server");
                        last = Some(UpstreamError::Connect(server.address.clone()));
                        continue;
                    }
                    let mut res = res.map(|body| silence::limit(body, timeout, server.address.clone()));
                    res.extensions_mut().insert(HeadTime(started.elapsed()));
                    return Ok((res, server.address.clone()));
                }
                Ok(Err(SendError::Connect(e))) => {
                    self.mark_failed(server);
                    self.metrics.upstream_failure(&self.name, Failure::Connect, false);
                    if attempt + 1 < attempts {
                        self.metrics.upstream_failure(&self.name, Failure::Connect, true);
                    }
                    tracing::warn!(upstream = %self.name, server = %server.address, error = %e, "connect failed");
                    last = Some(UpstreamError::Connect(server.address.clone()));
                }
                Ok(Err(SendError::Request(e)))
                    if !sent::body_failed(&e) && self.config.retries_reset() && retry(attempt) =>
                {
                    self.metrics.upstream_failure(&self.name, Failure::Reset, false);
                    self.metrics.upstream_failure(&self.name, Failure::Reset, true);
                    tracing::info!(upstream = %self.name, server = %server.address, error = %e, "connection broke; retrying on the next server");
                    last = Some(UpstreamError::Connect(server.address.clone()));
                }
                Ok(Err(SendError::Request(e))) => {
                    if sent::body_failed(&e) {
                        tracing::debug!(upstream = %self.name, server = %server.address, error = %e, "request body failed");
                    } else {
                        self.metrics.upstream_failure(&self.name, Failure::Reset, false);
                        tracing::warn!(upstream = %self.name, server = %server.address, error = %e, "upstream request failed");
                    }
                    return Err(UpstreamError::Failed { server: server.address.clone(), source: e });
                }
                Err(_) => {
                    self.mark_failed(server);
                    self.note_answer(&members, server, true);
                    self.metrics.upstream_failure(&self.name, Failure::Timeout, false);
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

    /// A server picked first while it ramps up after coming back keeps the
    /// pick in proportion to the weight it has regained, else yields it to the
    /// next (its place in a retry order stays). Not with `hash` and `ip_hash`,
    /// as in nginx: it would move keys.
    fn slow_start(&self, members: &Members, order: &mut [usize]) {
        use crate::config::Balance;
        let slow = self.config.slow_start.get();
        if slow.is_zero() || order.len() < 2 || matches!(self.config.balance, Balance::Hash | Balance::IpHash) {
            return;
        }
        let first = &members.servers[order[0]];
        let share = first.health.ramp(slow);
        if share >= 1.0 {
            return;
        }
        let add = (share * 1000.0) as usize;
        let earned = first.ramp_credit.fetch_add(add, Ordering::Relaxed) + add;
        if earned >= 1000 {
            first.ramp_credit.fetch_sub(1000, Ordering::Relaxed);
        } else {
            order.swap(0, 1);
        }
    }

    /// Outlier ejection: a run of 5xx answers or timeouts ejects the server for
    /// a time that grows with each ejection, unless that would put more than
    /// `max_ejection_percent` of the pool out at once.
    fn note_answer(&self, members: &Members, server: &Server, bad: bool) {
        let Some(o) = &self.config.outlier else { return };
        if !server.health.answered(bad, o.consecutive_5xx) {
            return;
        }
        let out = members.servers.iter().filter(|s| s.health.is_ejected()).count() + 1;
        if out * 100 > o.max_ejection_percent as usize * members.servers.len() {
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
}

/// Live servers in balancing order, and whether there are any. If none is
/// live (every server failing or yet to pass its health check, or down), the
/// servers passive health lets through, checked or not; if none, the one due
/// back first, so a pool recovers as soon as its server does.
fn order(m: &Members, key: Option<u64>) -> (Vec<usize>, bool) {
    let s = &m.servers;
    let mut order = m.balancer.candidates(s.len(), |i| s[i].in_flight(), |i| s[i].weight, key);
    if order.iter().any(|&i| s[i].is_up()) {
        order.retain(|&i| s[i].is_up());
        return (order, true);
    }
    order.retain(|&i| s[i].health.is_up());
    if order.is_empty() {
        let soonest = (0..s.len()).min_by_key(|&i| s[i].health.down_until()).unwrap_or(0);
        order.push(soonest);
    }
    (order, false)
}

/// Where `address` is reached. A name is resolved at each connect. The TLS
/// name is `tls.server_name`, else the host's own (validation saw that a
/// `https://` server has one).
fn endpoint(address: &ServerAddress, server_name: Option<&rustls_pki_types::ServerName<'static>>) -> Endpoint {
    if let Some(path) = address.unix_path() {
        return Endpoint::Unix(path.to_path_buf());
    }
    let name = server_name.or(address.tls_name()).cloned();
    Endpoint::Tcp { host: Arc::from(address.host()), port: address.port(), name }
}

/// Closes each server's idle connections past `idle_timeout` or closed by the server, until the pool is dropped.
async fn sweep(upstream: std::sync::Weak<Upstream>) {
    let every = match upstream.upgrade() {
        Some(u) => (u.config.idle_timeout.get() / 2).clamp(Duration::from_secs(1), Duration::from_secs(30)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(up) = upstream.upgrade() else { return };
        for server in &up.members.load().servers {
            server.pool.sweep();
        }
    }
}
