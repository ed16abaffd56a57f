//! relais: a caching reverse proxy.
//!
//! The library starts a proxy from a [`Config`] and hands back a [`Handle`]
//! with the bound addresses, a way to swap in a new configuration, and a
//! graceful shutdown. The binary (`src/main.rs`) is a thin CLI over it; the
//! integration tests and examples use it directly.
//!
//! ```no_run
//! # async fn run() -> Result<(), relais::StartError> {
//! let config = relais::Config::from_toml(r#"
//!     [server]
//!     listen = ["127.0.0.1:0"]
//!     [upstreams.app]
//!     servers = ["127.0.0.1:3000"]
//!     [[routes]]
//!     upstream = "app"
//! "#, "inline").expect("valid config");
//! let handle = relais::start(config).await?;
//! println!("listening on {:?}", handle.addrs());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

// What an embedder uses: the configuration, `start` and its `Handle`, the
// logs' set-up, the demo, and their errors (below). The rest is the crate's own.
mod admin;
mod auth;
mod bus;
mod cache;
mod compress;
pub mod config;
pub mod demo;
mod files;
mod guard;
mod http;
pub mod logs;
mod metrics;
mod proxy;
mod server;
mod service;
mod tls;
mod upgrade;
mod upstream;

#[doc(hidden)]
pub mod internals;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use cache::disk::DiskError;
pub use config::{Config, ConfigError};
use proxy::Pipeline;
pub use tls::CertInfo;
pub use upgrade::{Successor, UpgradeError};

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `cache.disk_path` is another process's.
    #[error("cache.disk_path: {0}")]
    Cache(#[from] cache::disk::DiskError),
    /// A new process of a binary upgrade could not take over.
    #[error("binary upgrade: {0}")]
    Upgrade(String),
}

/// A running proxy.
pub struct Handle {
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    shared: Arc<ArcSwap<Pipeline>>,
    /// What the listeners read of the configuration in force, swapped with `shared`.
    conns: Arc<ArcSwap<server::ConnSettings>>,
    metrics: Arc<metrics::Metrics>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Copies of the listening sockets, for a binary upgrade to hand over.
    sockets: Vec<upgrade::Passed>,
}

/// Binds `addrs`, or adopts the sockets a binary upgrade handed over for them;
/// keeps a copy of each in `kept`.
fn listen(
    addrs: &[SocketAddr],
    kind: upgrade::Kind,
    successor: &mut Option<Successor>,
    kept: &mut Vec<upgrade::Passed>,
) -> Result<Vec<tokio::net::TcpListener>, StartError> {
    let one = |addr: SocketAddr, successor: &mut Option<Successor>| -> std::io::Result<tokio::net::TcpListener> {
        let Some(fd) = successor.as_mut().and_then(|s| s.take(kind, addr)) else { return server::bind(addr) };
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l)
    };
    let mut listeners = Vec::new();
    for &addr in addrs {
        let l = one(addr, successor).map_err(|source| StartError::Bind { addr, source })?;
        let fd = l.as_fd().try_clone_to_owned().map_err(|source| StartError::Bind { addr, source })?;
        kept.push(upgrade::Passed { kind, configured: addr, fd });
        listeners.push(l);
    }
    Ok(listeners)
}

/// Binds a UDP socket for QUIC at each TLS listener's address (its port as
/// bound). The new process of a binary upgrade, whose predecessor still holds
/// them, serves without HTTP/3 until its next start.
fn bind_quic(tls_addrs: &[SocketAddr], upgrading: bool) -> Result<Vec<(SocketAddr, std::net::UdpSocket)>, StartError> {
    let mut sockets = Vec::new();
    for &addr in tls_addrs {
        match server::quic::bind(addr) {
            Ok(socket) => sockets.push((addr, socket)),
            Err(e) if upgrading => tracing::warn!(%addr, error = %e, "no HTTP/3 on this address until the next start"),
            Err(source) => return Err(StartError::Bind { addr, source }),
        }
    }
    Ok(sockets)
}

/// What `relais check` verifies beyond the configuration's own validity:
/// the log files can be opened, `server.user` exists, and every certificate
/// and key it names can be used (and is valid now). Returns the listeners'
/// certificates.
pub fn check(config: &Config) -> Result<Vec<CertInfo>, String> {
    logs::check(&config.log).map_err(|e| e.to_string())?;
    if let Some(name) = &config.server.user {
        service::lookup(name).map_err(|msg| user_error(config, msg).to_string())?;
    }
    tls::check(config).map_err(|e| config.file_error(e.file, e.reason).to_string())
}

/// `[cluster]` as `relais check` prints it: the nodes, which is this one, the
/// sharding mode and each node's share of keys; None without a cluster.
pub fn ring(config: &Config) -> Option<String> {
    config.cluster.as_ref().map(upstream::rendezvous::describe)
}

/// From now on, tell systemd (`NOTIFY_SOCKET`, sd_notify(3)) when relais is
/// ready, reloading and stopping. What `relais run` calls; an embedder that
/// does not is never heard by systemd.
pub fn notify_systemd() -> std::io::Result<()> {
    service::notify_from_env()
}

/// `server.user`'s error, naming the file the configuration came from.
fn user_error(config: &Config, msg: String) -> ConfigError {
    let source_name = config.source.as_ref().map_or("configuration".into(), |p| p.display().to_string());
    ConfigError::Invalid { source_name, key: "server.user".into(), msg }
}

/// Binds every `server.listen` and `server.tls.listen` address and the admin
/// listener, reads the certificates, opens the cache, becomes `server.user`
/// if one is set, and starts serving.
pub async fn start(config: Config) -> Result<Handle, StartError> {
    start_with(config, None).await
}

impl Successor {
    /// [`start`] for the new process of a binary upgrade: adopts the old
    /// process's listeners for the addresses `config` names (binds the
    /// others), checks the files it names, and only then has the old process
    /// let go of the disk cache and stop accepting (see `upgrade.rs`). A
    /// failure before that leaves the old process serving.
    pub async fn start(self, config: Config) -> Result<Handle, StartError> {
        start_with(config, Some(self)).await
    }
}

async fn start_with(config: Config, mut successor: Option<Successor>) -> Result<Handle, StartError> {
    // A Config built in code has not been through `Config::load`.
    config.validate("configuration")?;
    let run_as = match &config.server.user {
        Some(name) => {
            Some(service::lookup(name).and_then(|u| u.allowed().map(|()| u)).map_err(|msg| user_error(&config, msg))?)
        }
        None => None,
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let admin_listen = config.admin.listen;
    let mut sockets = Vec::new();
    let s = &mut successor;
    let listeners = listen(&config.server.listen, upgrade::Kind::Plain, s, &mut sockets)?;
    let tls_listen = config.server.tls.as_ref().map_or(&[][..], |t| &t.listen);
    let tls_listeners = listen(tls_listen, upgrade::Kind::Tls, s, &mut sockets)?;
    let mut admin = listen(&[admin_listen], upgrade::Kind::Admin, s, &mut sockets)?;
    let admin_listener = admin.pop().expect("one admin listener");
    if let Some(successor) = &mut successor {
        // What could still fail is checked while the old process serves on.
        check(&config).map_err(StartError::Upgrade)?;
        successor.ready().map_err(|e| StartError::Upgrade(format!("cannot tell the old process: {e}")))?;
        successor.wait_free().await;
    }
    let admin_addr = admin_listener.local_addr().unwrap_or(admin_listen);
    let addrs: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let tls_addrs: Vec<SocketAddr> = tls_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let quic_sockets = match config.server.tls.as_ref().is_some_and(|t| t.http3) {
        true => bind_quic(&tls_addrs, successor.is_some())?,
        false => Vec::new(),
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let issued = Arc::new(tls::Issued::default());
    let acme = config.acme.clone();
    let cache = open_cache(&config.cache, &metrics, successor.is_some()).await?;
    let https_port = tls_addrs.first().map(SocketAddr::port);
    let lasting = proxy::Lasting {
        cache: cache.clone(),
        metrics: metrics.clone(),
        issued: issued.clone(),
        https_port,
        quic_port: quic_sockets.first().map(|(addr, _)| addr.port()),
        temp_files: Default::default(),
        copies: Arc::new(compress::Encodings::new(0)),
        memory: Default::default(),
        maintenance: Arc::new(proxy::maintenance::Maintenance::open(config.cache.disk_path.join("maintenance.json"))),
    };
    let (cluster, disk_path) = (config.cluster.clone(), config.cache.disk_path.clone());
    let pipeline = Pipeline::new(config, &lasting, None)?;
    cache.index_disk();
    let bus = match cluster.as_ref().and_then(|c| Some((c, c.bus.as_ref()?))) {
        Some((c, b)) => Some(bus::Bus::start(c, b, &disk_path, cache.clone(), metrics.clone()).await?),
        None => None,
    };
    let conns = Arc::new(ArcSwap::from_pointee(conn_settings(&pipeline)));
    let shared = Arc::new(ArcSwap::from_pointee(pipeline));
    let (stop, stopped) = watch::channel(false);
    // Stored certificates are in place before the first handshake.
    let acme = acme.map(|acme| {
        let names = tls::acme::names(&acme, &shared.load().config);
        tls::acme::install_stored(&acme, &names, &issued);
        (acme, names)
    });
    // Everything root may be needed for is open: listeners, cache, log files, certificates.
    if let Some(to) = &run_as {
        service::drop_privileges(to)
            .map_err(|e| user_error(&shared.load().config, format!("cannot become it: {e}")))?;
    }
    let mut tasks = JoinSet::new();
    if let Some(bus) = &bus {
        bus.run(&mut tasks, stopped.clone());
    }
    for l in listeners {
        tasks.spawn(server::serve(l, shared.clone(), conns.clone(), stopped.clone(), server::Listener::Plain));
    }
    for l in tls_listeners {
        tasks.spawn(server::serve(l, shared.clone(), conns.clone(), stopped.clone(), server::Listener::Tls));
    }
    for (addr, socket) in quic_sockets {
        let endpoint =
            server::quic::endpoint(socket, &conns.load()).map_err(|source| StartError::Bind { addr, source })?;
        tasks.spawn(server::quic::serve(endpoint, shared.clone(), conns.clone(), stopped.clone()));
    }
    // The configured files, which an operator replaces (ACME renews its own and logs its failures).
    let configured = {
        let shared = shared.clone();
        move || shared.load().tls.as_ref().map_or_else(Vec::new, |t| t.certificates.clone())
    };
    tasks.spawn(tls::watch_expiry(configured, stopped.clone()));
    if let Some((acme, names)) = acme {
        tasks.spawn(tls::acme::run(acme, names, issued, metrics.clone(), stopped.clone()));
    }
    let reload = {
        let (shared, conns, metrics) = (shared.clone(), conns.clone(), metrics.clone());
        Box::new(move || reload_from_source(&shared, &conns, &metrics))
    };
    let admin = Arc::new(admin::Admin {
        shared: shared.clone(),
        metrics: metrics.clone(),
        reload,
        started: std::time::SystemTime::now(),
        listen: (addrs.clone(), tls_addrs.clone()),
        bus,
    });
    tasks.spawn(admin::serve(admin_listener, admin, conns.clone(), stopped));
    let serving: Vec<String> = addrs.iter().chain(&tls_addrs).map(ToString::to_string).collect();
    match successor {
        // The old process tells systemd, whose main process it still is.
        Some(successor) => successor.serving(),
        None => service::ready(&format!("serving on {}", serving.join(", "))),
    }
    Ok(Handle { addrs, tls_addrs, admin_addr, shared, conns, metrics, stop, tasks, sockets })
}

/// Opens the cache. A binary upgrade's new process waits for the old one's
/// disk writes in flight, which hold the directory's lock until they end.
async fn open_cache(
    config: &config::CacheConfig,
    metrics: &Arc<metrics::Metrics>,
    after_upgrade: bool,
) -> Result<Arc<cache::Cache>, StartError> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match cache::Cache::open(config, metrics.clone()).await {
            Err(DiskError::Locked { .. }) if after_upgrade && std::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            opened => return Ok(opened?),
        }
    }
}

/// What the listeners read of a pipeline's configuration.
fn conn_settings(p: &Pipeline) -> server::ConnSettings {
    server::ConnSettings::new(&p.config, p.tls.clone(), p.metrics.clone())
}

/// Swaps in a new, validated configuration for new requests; refused (and the
/// running one kept) when a file it names cannot be used.
fn apply(
    shared: &ArcSwap<Pipeline>,
    conns: &ArcSwap<server::ConnSettings>,
    metrics: &Arc<metrics::Metrics>,
    config: Config,
) -> Result<(), ConfigError> {
    let current = shared.load();
    let tls_listen = |c: &Config| c.server.tls.as_ref().map(|t| t.listen.clone());
    if config.server.listen != current.config.server.listen || tls_listen(&config) != tls_listen(&current.config) {
        tracing::warn!("server.listen or server.tls.listen changed: restart relais to apply it");
    }
    if config.admin.listen != current.config.admin.listen {
        tracing::warn!("admin.listen changed: restart relais to apply it");
    }
    if config.cache != current.config.cache {
        tracing::warn!("[cache] changed: restart relais to apply it");
    }
    if config.cluster.as_ref().map(|c| &c.bus) != current.config.cluster.as_ref().map(|c| &c.bus) {
        tracing::warn!("[cluster.bus] changed: restart relais to apply it");
    }
    if config.acme != current.config.acme {
        tracing::warn!("[acme] changed: restart relais to apply it");
    }
    if config.server.user != current.config.server.user {
        tracing::warn!("server.user changed: restart relais to apply it");
    }
    let fixed = |c: &Config| {
        let tls = c.server.tls.as_ref().map(|t| (t.max_handshakes, t.max_handshakes_per_source));
        (c.workers(), c.server.max_connections, tls)
    };
    if fixed(&config) != fixed(&current.config) {
        tracing::warn!(
            "server.workers, server.max_connections or server.tls.max_handshakes(_per_source) changed: restart relais to apply it"
        );
    }
    let warnings = config.warnings();
    // New log files are opened first: one that cannot be refuses the reload.
    let logs = logs::prepare(&config.log);
    let next = logs.and_then(|logs| Ok((logs, Pipeline::new(config, &current.lasting(), Some(&current))?)));
    let (logs, next) = match next {
        Ok(next) => next,
        Err(e) => {
            metrics.reload(false);
            tracing::error!("reload rejected, keeping the running configuration: {e}");
            return Err(e);
        }
    };
    logs.commit();
    conns.store(Arc::new(conn_settings(&next)));
    shared.store(Arc::new(next));
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    metrics.reload(true);
    tracing::info!("configuration reloaded");
    Ok(())
}

/// Re-reads the file the running configuration came from; a bad file is
/// rejected and the running configuration stays.
fn reload_from_source(
    shared: &ArcSwap<Pipeline>,
    conns: &ArcSwap<server::ConnSettings>,
    metrics: &Arc<metrics::Metrics>,
) -> Result<(), String> {
    service::reloading();
    let result = read_and_apply(shared, conns, metrics);
    service::reloaded(&result);
    result
}

fn read_and_apply(
    shared: &ArcSwap<Pipeline>,
    conns: &ArcSwap<server::ConnSettings>,
    metrics: &Arc<metrics::Metrics>,
) -> Result<(), String> {
    let Some(path) = shared.load().config.source.clone() else {
        metrics.reload(false);
        return Err("the running configuration was not read from a file".into());
    };
    match Config::load(&path) {
        Ok(config) => apply(shared, conns, metrics, config).map_err(|e| e.to_string()),
        Err(e) => {
            metrics.reload(false);
            tracing::error!("reload rejected, keeping the running configuration: {e}");
            Err(e.to_string())
        }
    }
}

impl Handle {
    /// The client-facing addresses actually bound (port 0 resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The TLS addresses actually bound (`server.tls.listen`).
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Applies a new configuration to new requests; an invalid one is refused
    /// and the running one stays. Listener addresses and `[cache]` are fixed at
    /// start; a change to them is logged and ignored.
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        service::reloading();
        let result = config
            .validate("configuration")
            .inspect_err(|_| self.metrics.reload(false))
            .and_then(|()| apply(&self.shared, &self.conns, &self.metrics, config));
        service::reloaded(&result);
        result
    }

    /// Re-reads the configuration file (what SIGHUP and `POST /reload` do).
    pub fn reload_from_source(&self) -> Result<(), String> {
        reload_from_source(&self.shared, &self.conns, &self.metrics)
    }

    /// The cache shared by every configuration this proxy runs.
    pub fn cache(&self) -> Arc<cache::Cache> {
        self.shared.load().cache.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.shared.load().config.clone()
    }

    /// Stops accepting, lets in-flight requests finish within
    /// `server.grace_period`, and returns when every listener is done.
    pub async fn shutdown(self) {
        service::stopping();
        self.stop_serving().await;
    }

    /// Starts `program` (this binary, by the path it was started from) with
    /// `args` as the new process of a binary upgrade, hands it the listening
    /// sockets, and lets go of the disk cache once it is ready (from then on
    /// this process caches in memory only). Returns its pid once it serves;
    /// then [`Handle::hand_over`] ends this one. On an error this process
    /// serves on (see `upgrade.rs`).
    pub fn upgrade(
        &self,
        program: PathBuf,
        args: Vec<OsString>,
    ) -> impl Future<Output = Result<u32, UpgradeError>> + Send + 'static {
        let sockets = upgrade::copies(&self.sockets);
        let cache = self.cache();
        async move {
            let release = async move {
                cache.flush().await;
                cache.close();
            };
            upgrade::hand_over(program, args, sockets.map_err(UpgradeError::Pass)?, release).await
        }
    }

    /// After a binary upgrade: tells systemd that `pid` is its main process
    /// now, stops accepting and drains within `server.grace_period`.
    pub async fn hand_over(self, pid: u32) {
        service::handed_over(pid);
        self.stop_serving().await;
    }

    async fn stop_serving(mut self) {
        // The copies would keep the sockets listening, queueing connections no one takes.
        self.sockets.clear();
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let cache = self.shared.load().cache.clone();
        cache.flush().await;
        cache.close();
    }
}
