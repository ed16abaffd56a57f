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

pub mod body;
pub mod cache;
pub mod config;
pub mod demo;
pub mod proxy;
pub mod server;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::{Config, ConfigError};
use proxy::Pipeline;

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running proxy.
pub struct Handle {
    addrs: Vec<SocketAddr>,
    shared: Arc<ArcSwap<Pipeline>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Binds every `server.listen` address and starts serving.
pub async fn start(config: Config) -> Result<Handle, StartError> {
    let mut listeners = Vec::new();
    for &addr in &config.server.listen {
        let l = server::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
        listeners.push(l);
    }
    let addrs = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    let cache = cache::Cache::open(&config.cache).await;
    let shared = Arc::new(ArcSwap::from_pointee(Pipeline::new(config, cache, None)));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for l in listeners {
        tasks.spawn(server::serve(l, shared.clone(), stopped.clone(), "http"));
    }
    Ok(Handle { addrs, shared, stop, tasks })
}

impl Handle {
    /// The client-facing addresses actually bound (port 0 resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Applies a new, already validated configuration to new requests.
    /// Listener addresses are fixed at start; a change to them is logged and ignored.
    pub fn reload(&self, config: Config) {
        let current = self.shared.load();
        if config.server.listen != current.config.server.listen {
            tracing::warn!("server.listen changed: restart relais to apply it");
        }
        if config.cache != current.config.cache {
            tracing::warn!("[cache] changed: restart relais to apply it");
        }
        let next = Pipeline::new(config, current.cache.clone(), Some(&current));
        self.shared.store(Arc::new(next));
        tracing::info!("configuration reloaded");
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
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
