//! The purge log: every purge an operator sends to any node goes on a NATS
//! JetStream stream (`[cluster.bus]`), and every node applies what the stream
//! holds, in order, and remembers how far it got ([`files`]).
//!
//! - The node an operator purges applies the purge at once, then publishes it
//!   and answers once the stream acknowledged it. It skips its own purge when the
//!   stream delivers it back (applying it twice would be harmless, only slower).
//! - Each node says which sequence it applied on `<stream>.applied.<node>` (core
//!   NATS, not kept), at once and every second: `?wait=applied` waits on these, and
//!   a node not heard from for [`LIVE`] counts as down.
//! - Until a node has replayed the stream up to where it stood when the node
//!   connected, nothing is read from its disk tier; if the stream no longer holds
//!   the sequence after its last, it empties the disk tier instead.
//! - A purge the stream did not acknowledge within `publish_timeout` (or sent while
//!   the bus is down) is kept in the outbox and published when the bus is back.
//!   Purges commute (each only removes or marks stale), so the order they reach
//!   other nodes in does not matter.

mod files;
mod run;
mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cache::Cache;
use crate::cache::purge::Target;
use crate::config::{BusConfig, ClusterConfig, ConfigError};
use crate::metrics::{Metrics, PurgeMode};
use wire::Purge;

/// A peer not heard from for this long is not waited for.
const LIVE: Duration = Duration::from_secs(3);
/// How often a node repeats what it applied, so its peers know it is up.
const HEARTBEAT: Duration = Duration::from_secs(1);

pub(crate) struct Bus {
    node: String,
    peers: Vec<String>,
    config: BusConfig,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    files: files::Files,
    state: Mutex<State>,
    /// Bumped whenever a node reports, or the connection comes or goes.
    changed: watch::Sender<()>,
    connected: watch::Receiver<bool>,
    /// The outbox has something to publish.
    outbox_added: tokio::sync::Notify,
    /// One outbox writer at a time.
    outbox_file: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The last stream sequence this node applied.
    applied: u64,
    /// The highest sequence this node knows the stream holds.
    last: u64,
    /// True once the stream was replayed up to where it stood at connection.
    replayed: bool,
    peers: BTreeMap<String, Peer>,
    outbox: Vec<Purge>,
    /// Ids of purges this process applied as it sent them, until the stream delivers them.
    sent: VecDeque<String>,
    /// Purges applied as the stream delivered them.
    from_bus: u64,
}

struct Peer {
    applied: u64,
    heard: Instant,
}

impl Bus {
    /// Connects in the background (a bus down at start is retried) and stops
    /// reads from the disk tier until the purge log is replayed. Tasks: [`Bus::run`].
    pub(crate) async fn start(
        cluster: &ClusterConfig,
        config: &BusConfig,
        disk_path: &Path,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Bus>, ConfigError> {
        cache.read_disk(false);
        let files = files::Files::new(disk_path);
        let (tell, connected) = watch::channel(false);
        let client = run::connect(config, tell).await?;
        let outbox = files.outbox();
        if !outbox.is_empty() {
            tracing::warn!(
                purges = outbox.len(),
                "purges in the outbox from before; publishing them once the bus is up"
            );
        }
        let state = State { applied: files.sequence(), outbox, ..Default::default() };
        Ok(Arc::new(Bus {
            node: cluster.node.clone(),
            peers: cluster.peers.keys().cloned().collect(),
            config: config.clone(),
            js: async_nats::jetstream::new(client.clone()),
            client,
            cache,
            metrics,
            files,
            state: Mutex::new(state),
            changed: watch::Sender::new(()),
            connected,
            outbox_added: Default::default(),
            outbox_file: Default::default(),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Publishes a purge this node has applied; with `wait`, then waits up to that long
    /// for every live node to apply it. What the admin answer adds.
    pub(crate) async fn publish(&self, target: &Target, mode: PurgeMode, wait: Option<Duration>) -> Value {
        let purge = Purge::new(&self.node, target, mode);
        {
            let mut state = self.state();
            state.sent.push_back(purge.id.clone());
            if state.sent.len() > 4096 {
                state.sent.pop_front();
            }
        }
        let sequence = match self.send(&purge).await {
            Ok(sequence) => sequence,
            Err(e) => {
                tracing::warn!(id = purge.id, error = %e, "purge bus unreachable: purge applied here only, kept in the outbox");
                self.keep(purge).await;
                return json!({"warning": format!("applied on this node only: the purge bus is unreachable ({e}); kept in the outbox and sent when it is back")});
            }
        };
        let mut answer = json!({"sequence": sequence});
        if let Some(wait) = wait {
            let nodes = self.wait_applied(sequence, wait).await;
            let late: Vec<&str> = nodes.iter().filter(|(_, s)| **s == "pending").map(|(n, _)| n.as_str()).collect();
            if !late.is_empty() {
                answer["warning"] = json!(format!("not applied within {}ms by {}", wait.as_millis(), late.join(", ")));
            }
            answer["nodes"] = json!(nodes);
        }
        answer
    }

    /// Publishes and waits for the stream's acknowledgement; its sequence.
    async fn send(&self, purge: &Purge) -> Result<u64, String> {
        if !self.connected() {
            return Err("not connected".into());
        }
        let payload = serde_json::to_vec(purge).map_err(|e| e.to_string())?;
        let message =
            async_nats::jetstream::message::PublishMessage::build().payload(payload.into()).message_id(&purge.id);
        let subject = format!("{}.purge", self.config.stream);
        let acked = async {
            let ack = self.js.send_publish(subject, message).await.map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        let ack = tokio::time::timeout(self.config.publish_timeout.get(), acked)
            .await
            .map_err(|_| format!("no acknowledgement within {}ms", self.config.publish_timeout.get().as_millis()))??;
        let mut state = self.state();
        state.last = state.last.max(ack.sequence);
        Ok(ack.sequence)
    }

    async fn keep(&self, purge: Purge) {
        self.state().outbox.push(purge);
        self.save_outbox().await;
        self.outbox_added.notify_one();
    }

    async fn save_outbox(&self) {
        let _one = self.outbox_file.lock().await;
        let outbox = self.state().outbox.clone();
        self.files.set_outbox(&outbox).await;
    }

    /// Each node's answer for `sequence`: "applied", "pending", or "down" (not heard
    /// from lately, so not waited for).
    async fn wait_applied(&self, sequence: u64, wait: Duration) -> BTreeMap<String, &'static str> {
        let until = tokio::time::Instant::now() + wait;
        let mut changed = self.changed.subscribe();
        loop {
            changed.mark_unchanged();
            let nodes = self.progress(sequence);
            if !nodes.values().any(|s| *s == "pending")
                || tokio::time::timeout_at(until, changed.changed()).await.is_err()
            {
                return nodes;
            }
        }
    }

    fn progress(&self, sequence: u64) -> BTreeMap<String, &'static str> {
        let state = self.state();
        let now = Instant::now();
        let of = |applied: u64| if applied >= sequence { "applied" } else { "pending" };
        self.peers
            .iter()
            .map(|id| {
                let said = match state.peers.get(id) {
                    _ if *id == self.node => of(state.applied),
                    Some(p) if now.duration_since(p.heard) < LIVE => of(p.applied),
                    _ => "down",
                };
                (id.clone(), said)
            })
            .collect()
    }

    /// The `cluster` object of `/stats`.
    pub(crate) fn stats(&self) -> Value {
        let state = self.state();
        let now = Instant::now();
        let mut nodes = BTreeMap::new();
        for id in &self.peers {
            let (applied, heard) = match state.peers.get(id) {
                _ if *id == self.node => (Some(state.applied), Some(0.0)),
                Some(p) => (Some(p.applied), Some(now.duration_since(p.heard).as_secs_f64())),
                None => (None, None),
            };
            let live = heard.is_some_and(|h| h < LIVE.as_secs_f64());
            nodes.insert(
                id.clone(),
                json!({"applied": applied, "lag": applied.map(|a| state.last.saturating_sub(a)), "heard_secs_ago": heard, "live": live}),
            );
        }
        json!({
            "node": self.node,
            "bus": {
                "url": self.config.url,
                "stream": self.config.stream,
                "connected": self.connected(),
                "replayed": state.replayed,
                "applied": state.applied,
                "last": state.last,
                "outbox": state.outbox.len(),
                "applied_from_bus": state.from_bus,
            },
            "nodes": nodes,
        })
    }

    /// What `/metrics` shows: (connected, outbox length, purges applied from the bus,
    /// lag by node for the nodes heard from).
    pub(crate) fn gauges(&self) -> (bool, u64, u64, Vec<(String, u64)>) {
        let state = self.state();
        let mut lag = vec![(self.node.clone(), state.last.saturating_sub(state.applied))];
        for (id, p) in &state.peers {
            if *id != self.node {
                lag.push((id.clone(), state.last.saturating_sub(p.applied)));
            }
        }
        (self.connected(), state.outbox.len() as u64, state.from_bus, lag)
    }
}
