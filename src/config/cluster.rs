//! `[cluster]`: several relais sharing one cache. Who owns which key (sharding
//! by rendezvous hashing over `peers`), and the purge log every node replays
//! (`bus`, a NATS JetStream stream).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError, Dur, ServerAddress};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id: one of `peers`.
    pub node: String,
    /// Every node's client address (`host:port`, as an upstream server's), by id, this
    /// node included. Reloadable.
    pub peers: BTreeMap<String, ServerAddress>,
    /// Who fetches a key from the origin: its owner among the healthy peers
    /// (`rendezvous`), or every node for itself (`off`).
    #[serde(default)]
    pub sharding: Sharding,
    /// What peers prove themselves with when they forward a request to each other (the same
    /// on every node; at least 16 characters). Required with sharding on. Prefer
    /// `RELAIS_CLUSTER__SECRET` to the file.
    pub secret: Option<String>,
    /// A miss forwarded to its owner that has no response head within this comes from the
    /// origin instead. Default 2s.
    #[serde(default = "default_forward_timeout")]
    pub forward_timeout: Dur,
    /// A node keeps what its peers own for at most this long (a short-lived copy of hot
    /// objects). Default 0: it keeps nothing it does not own.
    #[serde(default)]
    pub peer_copy_ttl: Dur,
    /// The purge log. Without it, purges stay on the node that got them.
    pub bus: Option<BusConfig>,
}

/// `[cluster] sharding`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sharding {
    #[default]
    Rendezvous,
    Off,
}

/// `[cluster.bus]`: the NATS JetStream stream purges travel on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `nats://host:port` (or `tls://`), or several, comma-separated.
    pub url: String,
    /// The stream's name; created if missing. Default `relais-purge`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// How long the stream keeps purges: a node down longer than this empties its disk
    /// tier when it comes back, rather than replay. Default 24h.
    #[serde(default = "default_retention")]
    pub retention: Dur,
    /// A NATS credentials file (`.creds`), relative to the configuration file.
    pub credentials_file: Option<PathBuf>,
    /// A token, or a user and password, for the NATS server.
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// CA certificates to verify a `tls://` server with (PEM), relative to the configuration file.
    pub ca_file: Option<PathBuf>,
    /// How long a purge waits for the stream's acknowledgement before it is kept in the
    /// outbox and answered with a warning. Default 2s.
    #[serde(default = "default_publish_timeout")]
    pub publish_timeout: Dur,
    /// A purge that arrives while the bus is unreachable: applied here and kept in the
    /// outbox (`outbox`, the default), or refused with 503 and applied nowhere (`refuse`).
    #[serde(default)]
    pub when_down: WhenDown,
}

/// `[cluster.bus] when_down`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WhenDown {
    #[default]
    Outbox,
    Refuse,
}

fn default_forward_timeout() -> Dur {
    Dur::secs(2)
}

fn default_stream() -> String {
    "relais-purge".to_string()
}

fn default_retention() -> Dur {
    Dur::secs(24 * 3600)
}

fn default_publish_timeout() -> Dur {
    Dur::secs(2)
}

/// A node id: what peers, metrics and the purge log name it by.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn validate(c: &Config, bad: &dyn Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
    let Some(cluster) = &c.cluster else { return Ok(()) };
    for id in cluster.peers.keys() {
        if !valid_id(id) {
            return Err(bad(format!("cluster.peers.{id}"), "a node id is 1 to 64 letters, digits, - or _".into()));
        }
    }
    if !cluster.peers.contains_key(&cluster.node) {
        let known = cluster.peers.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(bad("cluster.node".into(), format!("{:?} is not one of cluster.peers ({known})", cluster.node)));
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (id, addr) in &cluster.peers {
        if let Some(other) = seen.insert(addr.authority().to_string(), id) {
            return Err(bad(format!("cluster.peers.{id}"), format!("{addr} is also cluster.peers.{other}")));
        }
    }
    if cluster.sharding == Sharding::Rendezvous && cluster.peers.len() > 1 {
        match &cluster.secret {
            None => {
                return Err(bad(
                    "cluster.secret".into(),
                    "needed with sharding on: peers prove with it that a forwarded request is theirs".into(),
                ));
            }
            Some(s) if s.len() < 16 => {
                return Err(bad("cluster.secret".into(), "must be at least 16 characters".into()));
            }
            Some(_) => {}
        }
    }
    if let Some(bus) = &cluster.bus {
        for url in bus.url.split(',') {
            url.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| bad("cluster.bus.url".into(), format!("{url:?} is not a NATS server address: {e}")))?;
        }
        if !valid_stream(&bus.stream) {
            return Err(bad(
                "cluster.bus.stream".into(),
                "a stream name is letters, digits, - or _ (no spaces, dots, * or >)".into(),
            ));
        }
        if bus.retention.get().is_zero() {
            return Err(bad("cluster.bus.retention".into(), "must be longer than 0".into()));
        }
        if bus.password.is_some() != bus.user.is_some() {
            return Err(bad("cluster.bus.user".into(), "user and password go together".into()));
        }
    }
    Ok(())
}

fn valid_stream(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn check(cluster: &str) -> Result<Config, String> {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n[upstreams.o]\nservers = [\"127.0.0.1:9\"]\n\
             [[routes]]\nupstream = \"o\"\n{cluster}"
        );
        Config::from_toml(&text, "relais.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_names_this_node_among_unique_peers_and_a_bus_it_can_parse() {
        let peers = "peers = { a = \"127.0.0.1:8080\", b = \"127.0.0.2:8080\" }";
        let secret = "secret = \"0123456789abcdef\"";
        let ok =
            check(&format!("[cluster]\nnode = \"a\"\n{peers}\n{secret}\nbus = {{ url = \"nats://127.0.0.1:4222\" }}"))
                .unwrap();
        let cluster = ok.cluster.unwrap();
        assert_eq!(cluster.bus.unwrap().stream, "relais-purge");
        assert_eq!(cluster.forward_timeout.get().as_secs(), 2);

        let err = check(&format!("[cluster]\nnode = \"c\"\n{peers}\n{secret}")).unwrap_err();
        assert!(err.contains("cluster.node") && err.contains("a, b"), "{err}");
        let err =
            check("[cluster]\nnode = \"a\"\npeers = { a = \"127.0.0.1:8080\", b = \"127.0.0.1:8080\" }").unwrap_err();
        assert!(err.contains("cluster.peers.b"), "{err}");
        let err = check(&format!("[cluster]\nnode = \"a\"\n{peers}")).unwrap_err();
        assert!(err.contains("cluster.secret"), "{err}");
        let err =
            check(&format!("[cluster]\nnode = \"a\"\n{peers}\nsharding = \"off\"\nbus = {{ url = \"http://x y\" }}"))
                .unwrap_err();
        assert!(err.contains("cluster.bus.url"), "{err}");
        let err = check(&format!("[cluster]\nnode = \"a\"\n{peers}\nsharding = \"maglev\"")).unwrap_err();
        assert!(err.contains("sharding"), "{err}");
    }
}
