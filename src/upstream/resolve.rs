//! Servers given by DNS name: each name is looked up when the pool starts and
//! again when its answer expires (its TTL, within 1 s and `resolve_interval`),
//! and every address it gives is a server of its own (nginx's `server … resolve`).
//! A failed or empty lookup keeps the addresses the last good one gave, so a
//! resolver outage does not empty the pool. Until a name has been resolved
//! once it is a single server looked up at each connect. A name keeps at most
//! 64 addresses.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;

/// A name giving more addresses than this (a hostile or broken zone) has its
/// first ones kept: each address costs a server, its pool and health checks.
const MAX_ADDRESSES: usize = 64;

pub struct Resolver(TokioResolver);

impl Resolver {
    /// Asks `servers`, or those of the system's `/etc/resolv.conf` when empty.
    pub fn new(servers: &[SocketAddr]) -> Result<Resolver, String> {
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
    pub async fn lookup(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
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
