//! The bus's tasks: the connection, the replay and the stream's deliveries, what
//! nodes report, and the outbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, stream};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::wire::{Applied, Purge};
use super::{Bus, HEARTBEAT, Peer};
use crate::cache::purge::Target;
use crate::config::{BusConfig, ConfigError};
use crate::metrics::PurgeMode;

/// A client that connects, and reconnects, in the background.
pub(super) async fn connect(config: &BusConfig, tell: watch::Sender<bool>) -> Result<async_nats::Client, ConfigError> {
    let file_error = |key: &str, file: &std::path::Path, reason: String| ConfigError::File {
        file: file.to_path_buf(),
        key: key.into(),
        reason,
    };
    let mut options = match &config.credentials_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| file_error("cluster.bus.credentials_file", path, e.to_string()))?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &config.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    let options = options
        .name("relais")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(config.publish_timeout.get())
        .reconnect_delay_callback(|attempt| Duration::from_millis((100 * attempt as u64).min(2000)))
        .event_callback(move |event| {
            let tell = tell.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("purge bus connected");
                        tell.send_replace(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("purge bus disconnected; purges apply on this node only until it is back");
                        tell.send_replace(false);
                    }
                    other => tracing::debug!(event = %other, "purge bus"),
                }
            }
        });
    let urls: Vec<async_nats::ServerAddr> = config.url.split(',').filter_map(|u| u.trim().parse().ok()).collect();
    // With retry_on_initial_connect this returns at once; errors are the options'.
    async_nats::connect_with_options(urls, options).await.map_err(|e| ConfigError::Invalid {
        source_name: "configuration".into(),
        key: "cluster.bus".into(),
        msg: e.to_string(),
    })
}

impl Bus {
    /// Starts the bus's tasks; they end when `stop` turns true.
    pub(crate) fn run(self: &Arc<Self>, tasks: &mut JoinSet<()>, stop: watch::Receiver<bool>) {
        tasks.spawn(until_stopped(stop.clone(), self.clone().follow()));
        tasks.spawn(until_stopped(stop.clone(), self.clone().listen()));
        tasks.spawn(until_stopped(stop, self.clone().flush()));
    }

    /// Applies the stream: replays, then follows it; starts over after each disconnection.
    async fn follow(self: Arc<Self>) {
        self.cache.indexed().await;
        loop {
            let mut connected = self.connected.clone();
            let _ = connected.wait_for(|c| *c).await;
            if let Err(e) = self.session().await {
                tracing::warn!(error = %e, "purge bus: reading the stream stopped; starting over");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn session(&self) -> Result<(), String> {
        let mut stream = self.js.get_or_create_stream(self.stream_config()).await.map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?.state.clone();
        let applied = self.state().applied;
        // Purges this node has not applied are gone (retention), or the stream is not the
        // one it followed: what its disk holds may have been purged.
        if info.first_sequence > applied + 1 || applied > info.last_sequence {
            tracing::warn!(
                applied,
                first = info.first_sequence,
                last = info.last_sequence,
                "the purge log no longer holds the purges after this node's last; emptying the disk cache"
            );
            let purged = self.cache.purge(Target::All, PurgeMode::Hard).await;
            self.metrics.purge(Target::All.kind(), PurgeMode::Hard, purged);
            let at = info.first_sequence.saturating_sub(1);
            self.files.set_sequence(at).await;
            self.state().applied = at;
        }
        let (from, target) = {
            let mut state = self.state();
            state.last = state.last.max(info.last_sequence);
            (state.applied + 1, info.last_sequence)
        };
        self.report().await;
        self.replayed_to(target);
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: self.subject(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut connected = self.connected.clone();
        loop {
            // A purge being applied is never cut short: only the wait for the next one is.
            let message = tokio::select! {
                m = messages.next() => m.ok_or("the stream's deliveries ended")?,
                _ = connected.wait_for(|c| !*c) => return Err("disconnected".into()),
            };
            let message = message.map_err(|e| e.to_string())?;
            let (sequence, pending) =
                message.info().map(|i| (i.stream_sequence, i.pending)).map_err(|e| e.to_string())?;
            match serde_json::from_slice::<Purge>(&message.payload) {
                Ok(purge) => self.apply(purge).await,
                Err(e) => tracing::warn!(sequence, error = %e, "not a purge on the purge stream; skipped"),
            }
            self.files.set_sequence(sequence).await;
            {
                let mut state = self.state();
                state.applied = state.applied.max(sequence);
                state.last = state.last.max(sequence + pending);
            }
            self.report().await;
            self.replayed_to(target);
        }
    }

    /// Opens the disk tier for reads once this node has applied up to `target`.
    fn replayed_to(&self, target: u64) {
        let mut state = self.state();
        if !state.replayed && state.applied >= target {
            // Readable before it says so: whoever sees `replayed` finds the disk open.
            self.cache.read_disk(true);
            state.replayed = true;
            drop(state);
            tracing::info!(sequence = target, "purge log replayed; reading the disk cache");
        }
    }

    async fn apply(&self, purge: Purge) {
        {
            let mut state = self.state();
            if let Some(i) = state.sent.iter().position(|id| *id == purge.id) {
                // Applied when it was sent.
                state.sent.remove(i);
                return;
            }
            state.from_bus += 1;
        }
        let (target, mode) = (purge.target(), purge.mode());
        let kind = target.kind();
        let purged = self.cache.purge(target, mode).await;
        self.metrics.purge(kind, mode, purged);
        tracing::info!(
            kind = kind.as_str(),
            soft = mode.is_soft(),
            purged,
            from = purge.node,
            id = purge.id,
            "purge from the bus"
        );
    }

    /// Tells the other nodes (and this one's waiters) what this node applied.
    async fn report(&self) {
        let sequence = self.state().applied;
        self.changed.send_replace(());
        let said = serde_json::to_vec(&Applied { node: self.node.clone(), sequence }).unwrap_or_default();
        let subject = format!("{}.applied.{}", self.config.stream, self.node);
        if let Err(e) = self.client.publish(subject, said.into()).await {
            tracing::debug!(error = %e, "cannot report the applied purge sequence");
        }
    }

    /// Hears what the other nodes applied; repeats this node's every [`HEARTBEAT`].
    async fn listen(self: Arc<Self>) {
        let subject = format!("{}.applied.*", self.config.stream);
        let mut reports = match self.client.subscribe(subject).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot hear the other nodes' purge reports; ?wait=applied waits for this node only");
                return;
            }
        };
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = beat.tick() => if self.connected() { self.report().await },
                report = reports.next() => {
                    let Some(report) = report else { return };
                    let Ok(Applied { node, sequence }) = serde_json::from_slice(&report.payload) else { continue };
                    if node != self.node {
                        self.state().peers.insert(node, Peer { applied: sequence, heard: Instant::now() });
                        self.changed.send_replace(());
                    }
                }
            }
        }
    }

    /// Publishes what the outbox holds once the bus is back, oldest first.
    async fn flush(self: Arc<Self>) {
        loop {
            let mut connected = self.connected.clone();
            let _ = connected.wait_for(|c| *c).await;
            loop {
                let Some(purge) = self.state().outbox.first().cloned() else { break };
                match self.send(&purge).await {
                    Ok(sequence) => {
                        self.state().outbox.retain(|p| p.id != purge.id);
                        self.save_outbox().await;
                        tracing::info!(id = purge.id, sequence, "purge from the outbox published");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "purge outbox: bus not ready yet");
                        break;
                    }
                }
            }
            // Woken by a new purge in the outbox; or retried after a while.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.outbox_added.notified()).await;
        }
    }

    fn subject(&self) -> String {
        format!("{}.purge", self.config.stream)
    }

    /// What the stream is created with: fields nats-server 2.9 knows.
    fn stream_config(&self) -> stream::Config {
        let retention = self.config.retention.get();
        stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![self.subject()],
            max_age: retention,
            storage: stream::StorageType::File,
            // Publishing again what a timed-out publish sent after all is dropped (by its id).
            duplicate_window: retention.min(Duration::from_secs(120)),
            ..Default::default()
        }
    }
}

async fn until_stopped(mut stop: watch::Receiver<bool>, task: impl Future<Output = ()>) {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        () = task => {}
    }
}
