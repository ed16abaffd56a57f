//! Servers given by DNS name: each name is looked up when the pool starts and
//! again when its answer expires (its TTL, within 1 s and `resolve_interval`),
//! and every address it gives is a server of its own (nginx's `server … resolve`).
//! A failed or empty lookup keeps the addresses the last good one gave, so a
//! resolver outage does not empty the pool. Until a name has been resolved
//! once it is a single server looked up at each connect. A name keeps at most
//! 64 addresses.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;

use super::Upstream;

/// A name giving more addresses than this (a hostile or broken zone) has its
/// first ones kept: each address costs a server, its pool and health checks.
const MAX_ADDRESSES: usize = 64;

/// Looks the pool's named servers up again whenever their answers expire,
/// until the pool is dropped; a changed answer changes the servers.
pub(super) async fn run(upstream: Weak<Upstream>) {
    let Some(up) = upstream.upgrade() else { return };
    let names: Vec<Option<String>> = up
        .config
        .servers
        .iter()
        .map(|e| {
            let a = e.address();
            let literal = a.unix_path().is_some() || a.host().parse::<IpAddr>().is_ok();
            (!literal).then(|| a.host().to_string())
        })
        .collect();
    let longest = up.config.resolve_interval.get();
    if names.iter().all(Option::is_none) || longest.is_zero() {
        return;
    }
    let resolver = match Resolver::new(&up.config.resolver) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(upstream = %up.name, error = %e, "no resolver; names are looked up at each connect");
            return;
        }
    };
    let pool = up.name.clone();
    drop(up);
    let mut resolved: Vec<Option<Vec<IpAddr>>> = vec![None; names.len()];
    loop {
        let mut next = longest;
        let mut changed = false;
        for (name, known) in names.iter().zip(resolved.iter_mut()) {
            let Some(name) = name else { continue };
            match resolver.lookup(name).await {
                Ok((ips, ttl)) => {
                    next = next.min(ttl.max(Duration::from_secs(1)));
                    if known.as_ref() != Some(&ips) {
                        tracing::info!(upstream = %pool, name, addresses = ?ips, ?ttl, "name resolved");
                        *known = Some(ips);
                        changed = true;
                    }
                }
                Err(e) => {
                    // Asked again soon; meanwhile the last answer stands.
                    next = next.min(Duration::from_secs(5));
                    tracing::warn!(upstream = %pool, name, error = %e, "lookup failed; keeping the last addresses");
                }
            }
        }
        if changed {
            let Some(up) = upstream.upgrade() else { return };
            up.members.store(Arc::new(up.members_for(&resolved)));
            // New servers are checked at once, not at the next interval.
            up.checks_due.notify_one();
        }
        tokio::time::sleep(next).await;
        if upstream.strong_count() == 0 {
            return;
        }
    }
}

pub(super) struct Resolver(TokioResolver);

impl Resolver {
    /// Asks `servers`, or those of the system's `/etc/resolv.conf` when empty.
    pub(super) fn new(servers: &[SocketAddr]) -> Result<Resolver, String> {
        let provider = TokioConnectionProvider::default();
        let builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| format!("system resolver: {e}"))?
        } else {
            let mut group = NameServerConfigGroup::new();
            for s in servers {
                group.merge(NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true));
            }
            TokioResolver::builder_with_config(ResolverConfig::from_parts(None, vec![], group), provider)
        };
        let mut opts = ResolverOpts::default();
        // relais keeps the last answer itself, and re-asks when it expires.
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        Ok(Resolver(builder.with_options(opts).build()))
    }

    /// The addresses of `host`, sorted, and how long they are valid.
    pub(super) async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        let answer = self.0.lookup_ip(host).await.map_err(|e| e.to_string())?;
        let ttl = answer.valid_until().saturating_duration_since(std::time::Instant::now());
        let mut ips: Vec<IpAddr> = answer.iter().collect();
        ips.sort();
        ips.dedup();
        if ips.len() > MAX_ADDRESSES {
            tracing::warn!(host, addresses = ips.len(), kept = MAX_ADDRESSES, "name gives too many addresses");
            ips.truncate(MAX_ADDRESSES);
        }
        if ips.is_empty() {
            return Err("no addresses".into());
        }
        Ok((ips, ttl))
    }
}
