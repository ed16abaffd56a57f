//! The HTTP cache, one layer: [`HttpCache`] (in `phase.rs`) over [`Cache`],
//! the two-tier store.
//!
//! `HttpCache` owns the HTTP side: a lookup returns a [`Phase`]; a miss goes
//! to the origin through the key's shared fill (`collapse.rs`, `fill.rs`), with
//! a ticket (`ticket.rs`) that carries it to the decision to store and to the
//! commit; revalidation, stale-if-error, part completion and a HEAD sent as HEAD are in
//! `revalidate.rs`. The origin itself is the proxy's, handed in as an
//! [`Origin`]; nothing here knows a route or a connection.
//!
//! `Cache` is memory (moka) in front of disk (cacache). Lookup order is
//! memory, then disk (a disk hit is promoted into memory); a store goes to
//! both. The tiers hold the same keys and values; the disk tier survives
//! restarts. Any disk failure is logged and treated as a miss: the proxy keeps
//! serving from memory and the origin.

mod collapse;
pub(crate) mod disk;
mod entry;
pub(crate) mod fill;
mod hidden;
mod index;
mod journal;
pub mod key;
mod memory;
mod origin;
mod phase;
pub(crate) mod purge;
mod revalidate;
mod spill;
pub(crate) mod tee;
mod ticket;
mod unwritten;

use std::sync::Arc;
use std::time::Duration;

use crate::config::CacheConfig;
use crate::metrics::{Metrics, Tier};
pub(crate) use collapse::Role;
use disk::{DiskError, DiskTier};
pub(crate) use entry::VaryRecord;
pub use entry::{Entry, Stored};
use memory::MemoryTier;
pub(crate) use origin::{Answer, FromOwner, Origin};
pub(crate) use phase::{Asked, Hit, HttpCache, Miss, Phase, fill_head, fill_head_of};
pub(crate) use revalidate::upstream_request;

pub struct Cache {
    memory: MemoryTier,
    disk: Option<Arc<DiskTier>>,
    /// Larger bodies are streamed through and not stored.
    max_object_size: u64,
    /// Bytes of bodies being stored, at most (`cache.fill_memory`).
    fill_budget: Arc<tee::Budget>,
    /// Fetches in flight, for request collapsing.
    fills: fill::Fills,
    /// How long a collapsed request waits for another's fetch before going itself.
    lock_timeout: Duration,
    /// Keys whose last response was uncacheable: not collapsed for a while.
    pass: collapse::Pass,
    /// Which keys hold which URLs and tags.
    index: Arc<index::PurgeIndex>,
    /// Recent purges, so a fill that started before one is not stored after it.
    purges: purge::Log,
    /// Keys purged from memory whose disk copies are still being deleted (never
    /// read from disk), and the disk writes in flight.
    hidden: Arc<hidden::Hidden>,
    /// Disk deletions still running after purges; [`Cache::flush`] waits for them.
    deletions: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Body bytes being written to disk may not exceed its permits (`cache.disk_write_backlog`).
    disk_backlog: tokio::sync::Semaphore,
    disk_backlog_bytes: u32,
    /// Keys the backlog had no room for, written from memory later.
    unwritten: Arc<unwritten::Unwritten>,
    metrics: Arc<Metrics>,
    /// Disk deletions owed by purges, kept across a crash.
    journal: Arc<journal::Journal>,
    /// False while the disk tier may hold what a purge this node has not seen yet
    /// removed: nothing is read from disk (see `bus`).
    disk_readable: std::sync::atomic::AtomicBool,
    /// True once the purge index holds what the disk tier held at start.
    indexed: tokio::sync::watch::Sender<bool>,
}

impl Cache {
    /// Opens both tiers. A disk tier that cannot be opened is logged, and relais
    /// runs with memory only; but a directory another process has open is an
    /// error ([`DiskError::Locked`]): two processes must not share one.
    pub async fn open(config: &CacheConfig, metrics: Arc<Metrics>) -> Result<Arc<Cache>, DiskError> {
        let disk = match DiskTier::open(config.disk_path.clone(), config.disk_capacity.bytes()).await {
            Ok(d) => {
                d.schedule_sweeps(config.sweep_interval.get(), config.sweep_after_writes);
                Some(d)
            }
            Err(e @ DiskError::Locked { .. }) => return Err(e),
            Err(e) => {
                tracing::error!(path = %config.disk_path.display(), error = %e, "disk cache unavailable; caching in memory only");
                None
            }
        };
        let (journal, left) = journal::Journal::open(disk.as_ref().map(|_| config.disk_path.clone())).await;
        let backlog = u32::try_from(config.disk_write_backlog.bytes()).unwrap_or(u32::MAX).max(1);
        // A key leaves the purge index once neither tier holds it. (A key whose disk write
        // is still running is not "held" yet: `put` puts it back when the write ends.)
        let index = Arc::new(index::PurgeIndex::default());
        let memory = {
            let (index, disk, metrics) = (index.clone(), disk.clone(), metrics.clone());
            MemoryTier::new(config.memory_capacity.bytes(), move |key, for_room| {
                if for_room {
                    metrics.eviction(Tier::Memory);
                }
                let hex = key.hex();
                match disk.as_ref().is_some_and(|d| d.contains(&hex)) {
                    true => index.remove_untagged(&hex),
                    false => index.remove(&hex),
                }
            })
        };
        if let Some(d) = &disk {
            let (index, memory, metrics) = (index.clone(), memory.clone(), metrics.clone());
            d.on_evict(move |key| {
                metrics.eviction(Tier::Disk);
                if !memory.contains(key) {
                    index.remove(key);
                }
            });
        }
        let cache = Arc::new(Cache {
            memory,
            disk,
            max_object_size: config.max_object_size.bytes(),
            fill_budget: Arc::new(tee::Budget::new(config.fill_memory.bytes())),
            fills: fill::Fills::default(),
            lock_timeout: config.lock_timeout.get(),
            pass: collapse::Pass::default(),
            index,
            purges: purge::Log::default(),
            hidden: Default::default(),
            deletions: Default::default(),
            disk_backlog: tokio::sync::Semaphore::new(backlog as usize),
            disk_backlog_bytes: backlog,
            unwritten: Default::default(),
            metrics,
            journal,
            disk_readable: std::sync::atomic::AtomicBool::new(true),
            indexed: tokio::sync::watch::Sender::new(false),
        });
        if cache.disk.is_some() {
            tokio::spawn(unwritten::catch_up(Arc::downgrade(&cache)));
        }
        if !left.is_empty() {
            // A previous process purged these but was stopped before deleting them.
            tracing::info!(entries = left.len(), "finishing the disk deletions of an interrupted purge");
            for key in &left {
                cache.hidden.doom(key);
            }
            cache.delete_behind(left);
        }
        Ok(cache)
    }

    /// Rebuilds the purge index from the disk tier, in the background.
    pub fn index_disk(self: &Arc<Self>) {
        let Some(disk) = self.disk.clone() else {
            self.indexed.send_replace(true);
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            disk.loaded().await;
            // Only tagged keys (the disk tier lists them without reading its whole
            // index): the others are found by their URL's label.
            let tagged = |key, meta| Stored::listing(meta).filter(|l| !l.tags.is_empty()).map(|l| (key, l));
            match disk.listed_with(tagged).await {
                Ok(entries) => {
                    for (key, l) in entries {
                        if cache.hidden.is_doomed(&key) {
                            continue;
                        }
                        let held = if l.vary { index::Held::Vary } else { index::Held::Entry };
                        cache.index.insert(&key, &l.url, &l.tags, held);
                    }
                    tracing::info!(entries = cache.index.len(), "tagged keys indexed from disk");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the disk cache; purge by prefix or tag sees new entries only")
                }
            }
            cache.indexed.send_replace(true);
        });
    }

    /// Waits until the purge index knows the disk tier's entries, so a purge by
    /// prefix or tag reaches them.
    pub async fn indexed(&self) {
        let _ = self.indexed.subscribe().wait_for(|done| *done).await;
    }

    /// Stops (false) or resumes (true) reads from the disk tier; writes go on.
    pub(crate) fn read_disk(&self, readable: bool) {
        self.disk_readable.store(readable, std::sync::atomic::Ordering::SeqCst);
    }

    /// Memory, then disk. A disk hit is promoted into memory.
    pub async fn get(&self, key: &str) -> Option<Arc<Stored>> {
        if let Some(v) = self.memory.get(key).await {
            return Some(v);
        }
        // Boxed: the disk read's state would otherwise enlarge every request's future.
        Box::pin(self.get_from_disk(key)).await
    }

    async fn get_from_disk(&self, key: &str) -> Option<Arc<Stored>> {
        let disk = self.disk.as_ref()?;
        if !self.disk_readable.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        if self.hidden.is_doomed(key) {
            return None;
        }
        let epoch = self.purge_epoch();
        let (meta, body) = match disk.get_up_to(key, spill::STREAM_ABOVE).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(key, error = %e, "disk cache read failed");
                return None;
            }
        };
        let Some(stored) = Stored::from_disk_body(meta, body) else {
            tracing::warn!(key, "unreadable disk cache entry removed");
            let _ = disk.remove(key).await;
            return None;
        };
        let stored = Arc::new(stored);
        if stored.in_file() {
            // Served from its file every time: never promoted.
            return (!self.hidden.is_doomed(key) && !self.purged(epoch, &stored)).then_some(stored);
        }
        self.memory.insert(key, stored.clone()).await;
        // A purge during the read: it either doomed the key before this check or
        // removes it from memory after this insert, or it is in the log since `epoch`.
        if self.hidden.is_doomed(key) || self.purged(epoch, &stored) {
            self.memory.remove(key).await;
            return None;
        }
        Some(stored)
    }

    /// Stores in both tiers (disk last; its failure only costs the disk copy).
    ///
    /// While the disk is more than `disk_write_backlog` behind, the entry is kept in
    /// memory only and an older disk copy is removed: the disk may lack an entry but
    /// never serves one older than what memory replaced.
    pub async fn put(&self, key: String, value: Stored) {
        self.put_all(self.purge_epoch(), vec![(key, value)]).await;
    }

    /// Stores several values fetched since purge `epoch`, all in memory before
    /// any goes to disk: a variant and its URL's new Vary record are put in that
    /// order, so a lookup that finds the record finds the variant too, whatever
    /// the disk is doing. Nothing a purge since `epoch` covers stays stored.
    pub(crate) async fn put_all(&self, epoch: u64, values: Vec<(String, Stored)>) {
        self.put_all_telling(epoch, values, &tee::Remembered::default()).await;
    }

    /// [`Cache::put_all`], telling `in_memory` once the values are in memory
    /// (before the disk writes).
    pub(crate) async fn put_all_telling(&self, epoch: u64, values: Vec<(String, Stored)>, in_memory: &tee::Remembered) {
        if self.disk.is_some() {
            // Before anything is visible: a purge from now on dooms the disk copies to come.
            values.iter().for_each(|(key, _)| self.hidden.writing(key));
        }
        let mut remembered = Vec::with_capacity(values.len());
        for (key, value) in values {
            let (value, meta, body) = self.remember(&key, value).await;
            remembered.push((key, value, meta, body));
        }
        // A purge that came before the values were indexed did not see them.
        if remembered.iter().any(|(_, value, _, _)| self.purged(epoch, value)) {
            for (key, ..) in remembered {
                self.index.remove(&key);
                self.memory.remove(&key).await;
                if self.disk.is_some() {
                    self.hidden.written(&key, true);
                }
            }
            return;
        }
        in_memory.done();
        for (key, value, meta, body) in remembered {
            self.persist(epoch, key, value, meta, body).await;
        }
    }

    fn purged(&self, epoch: u64, value: &Stored) -> bool {
        self.purged_since(epoch, value.url(), value.tags())
    }

    /// The disk half of a put, whose write [`hidden::Hidden::writing`] has counted.
    async fn persist(&self, epoch: u64, key: String, value: Arc<Stored>, meta: serde_json::Value, body: bytes::Bytes) {
        let Some(disk) = &self.disk else { return };
        let clean = self.write(disk, epoch, &key, value, meta, body).await;
        self.hidden.written(&key, clean);
    }

    /// Writes to disk, or removes an older copy; true if the disk then holds
    /// nothing a purge since `epoch` covers.
    async fn write(
        &self,
        disk: &DiskTier,
        epoch: u64,
        key: &str,
        value: Arc<Stored>,
        meta: serde_json::Value,
        body: bytes::Bytes,
    ) -> bool {
        let Ok(writing) = self.disk_backlog.try_acquire_many(self.backlog_need(body.len())) else {
            tracing::debug!(key, "disk write backlog full; entry written from memory later");
            // Only an older copy on disk needs removing (a new key has none): a
            // flood of new keys queues no disk work. Nothing is held while it runs.
            drop((value, meta, body));
            if (!disk.is_loaded() || disk.contains(key))
                && let Err(e) = disk.remove(key).await
            {
                tracing::warn!(key, error = %e, "disk cache remove failed");
                return false;
            }
            if !self.unwritten.push(key) {
                self.metrics.disk_write_skipped();
            }
            return true;
        };
        self.write_now(disk, epoch, key, value, meta, body, writing).await
    }

    /// Backlog permits a write of `body_len` bytes takes. A body larger than the
    /// whole backlog needs all of it free. Each write counts its body and 12KiB:
    /// what waits with it (its metadata as a JSON tree, its task, the entry it
    /// keeps alive) measured about that (`benches/flood.sh`).
    fn backlog_need(&self, body_len: usize) -> u32 {
        u32::try_from(body_len).unwrap_or(u32::MAX).saturating_add(12 * 1024).min(self.disk_backlog_bytes)
    }

    /// Writes an entry the backlog had no room for, from memory, once it has:
    /// unless memory dropped it meanwhile (or a purge did).
    async fn write_later(&self, key: String) {
        let Some(disk) = &self.disk else { return };
        let epoch = self.purge_epoch();
        // Before the entry is read: a purge from now on dooms the write to come.
        self.hidden.writing(&key);
        let Some(value) = self.memory.get(&key).await else {
            self.hidden.written(&key, true);
            self.metrics.disk_write_skipped();
            return;
        };
        let (meta, body) = value.to_disk();
        let Ok(writing) = self.disk_backlog.acquire_many(self.backlog_need(body.len())).await else {
            self.hidden.written(&key, true);
            return;
        };
        let clean = self.write_now(disk, epoch, &key, value, meta, body, writing).await;
        self.hidden.written(&key, clean);
    }

    /// The write itself, with its share of the backlog.
    #[allow(clippy::too_many_arguments)]
    async fn write_now(
        &self,
        disk: &DiskTier,
        epoch: u64,
        key: &str,
        value: Arc<Stored>,
        meta: serde_json::Value,
        body: bytes::Bytes,
        _writing: tokio::sync::SemaphorePermit<'_>,
    ) -> bool {
        let tagged = !value.tags().is_empty();
        match disk.put_labelled(key, index::url_label(value.url()), tagged, meta, body).await {
            Ok(()) => {}
            // Let go for a binary upgrade: the new process writes from now on.
            Err(DiskError::Closed) => return false,
            Err(e) => {
                tracing::warn!(key, error = %e, "disk cache write failed");
                return false;
            }
        }
        // A purge may have come while the write ran (the key is doomed meanwhile):
        // the copy goes. Or memory dropped the key, and the index with it: a tagged
        // copy must stay findable by its tags.
        if self.purged(epoch, &value) {
            return disk.remove(key).await.is_ok();
        }
        if tagged && !self.index.contains(key) {
            self.index_value(key, &value);
        }
        true
    }

    /// Replaces an entry's headers and policy, keeping its body (after a 304).
    pub async fn refresh(&self, key: String, value: Stored) {
        let (_, meta, _) = self.remember(&key, value).await;
        if let Some(disk) = &self.disk
            && let Err(e) = disk.update_meta(&key, meta).await
        {
            tracing::warn!(key, error = %e, "disk cache update failed");
        }
    }

    /// Puts `value` in memory, then in the index (in that order: an eviction seen in
    /// between would find the key in neither tier); returns it with its disk form.
    async fn remember(&self, key: &str, value: Stored) -> (Arc<Stored>, serde_json::Value, bytes::Bytes) {
        let (meta, body) = value.to_disk();
        let value = Arc::new(value.compacted());
        // A body left in its file stays there (refreshed after a 304).
        if !value.in_file() {
            self.memory.insert(key, value.clone()).await;
        }
        self.index_value(key, &value);
        (value, meta, body)
    }

    /// Removes from both tiers; true if either held it.
    pub async fn remove(&self, key: &str) -> bool {
        self.index.remove(key);
        // A write in flight lands after this; it is hidden until it is written (and
        // removed again if a purge, as an invalidation is, covers it).
        self.hidden.doom_on_disk(key, false);
        let in_memory = self.memory.remove(key).await;
        let on_disk = match &self.disk {
            Some(d) => d.remove(key).await.unwrap_or_else(|e| {
                tracing::warn!(key, error = %e, "disk cache remove failed");
                false
            }),
            None => false,
        };
        in_memory || on_disk
    }

    /// The keys stored for a canonical URL: its Vary record and entries, in both
    /// tiers (on disk, those its label finds: a rare other URL's too).
    pub fn keys_of_url(&self, url: &str) -> Vec<String> {
        let mut keys = self.index.url(url);
        if let Some(disk) = &self.disk {
            keys.extend(disk.labelled(index::url_label(url)));
            keys.sort();
            keys.dedup();
        }
        keys
    }

    /// What a key holds and where, for looking only: a disk entry is not
    /// promoted into memory nor marked used, and its body is not read (an
    /// entry from disk has an empty body; its size is the second value).
    pub async fn peek(&self, key: &str) -> Option<(Tier, Arc<Stored>, u64)> {
        if let Some(s) = self.memory.get(key).await {
            let size = match &*s {
                Stored::Entry(e) => e.body.len() as u64,
                Stored::Vary(_) => 0,
            };
            return Some((Tier::Memory, s, size));
        }
        let disk = self.disk.as_ref().filter(|_| !self.hidden.is_doomed(key))?;
        let meta = disk.get_meta(key).await.ok()??;
        let size = disk.size_of(key).unwrap_or(0);
        Some((Tier::Disk, Arc::new(Stored::from_disk_meta(meta)?), size))
    }

    /// Waits for the disk deletions of earlier purges (before a shutdown, so a
    /// restart cannot bring purged entries back).
    pub async fn flush(&self) {
        let pending = std::mem::take(&mut *self.deletions.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for task in pending {
            let _ = task.await;
        }
    }

    /// Lets go of the disk directory (a proxy that stopped), so that another
    /// can open it at once.
    pub fn close(&self) {
        if let Some(disk) = &self.disk {
            disk.unlock();
        }
    }

    fn index_value(&self, key: &str, value: &Stored) {
        let held = if matches!(value, Stored::Vary(_)) { index::Held::Vary } else { index::Held::Entry };
        self.index.insert(key, value.url(), value.tags(), held);
    }

    pub async fn memory_bytes(&self) -> u64 {
        self.memory.weighted_size().await
    }

    /// Bytes of bodies being stored now (`cache.fill_memory` in use).
    pub fn fill_bytes(&self) -> u64 {
        self.fill_budget.used()
    }

    /// Keys in the purge index: the memory tier's, and tagged ones on disk.
    pub fn indexed_keys(&self) -> usize {
        self.index.len()
    }

    /// Entries waiting for room in the disk's write backlog.
    pub fn disk_writes_waiting(&self) -> usize {
        self.unwritten.waiting()
    }

    pub fn memory_entries(&self) -> u64 {
        self.memory.entry_count()
    }

    pub fn disk(&self) -> Option<&Arc<DiskTier>> {
        self.disk.as_ref()
    }
}
