//! Disk tier: metadata and bodies under one directory, stored with `cacache`, kept under a
//! byte budget with least-recently-used eviction.
//!
//! The tier knows nothing of HTTP. Per key (a hex string such as a SHA-256) it stores a JSON
//! metadata value, carried in the cacache index entry, and a body, stored content-addressed
//! (SHA-256) and integrity-checked on every read.
//!
//! cacache has no size cap, no eviction, no garbage collection and append-only index buckets;
//! this module adds them. Invariants:
//!
//! - **Never a wrong or partial body.** cacache writes content to a temp file and renames it,
//!   then appends one index line carrying its own SHA-256; a torn line is ignored on read. Every
//!   read is verified against the integrity; a corrupt, truncated, missing or unreadable entry is
//!   removed and reported as a miss (`Ok(None)`), never as an error the caller must handle.
//! - **Byte budget.** Each entry is charged body + metadata JSON + key + a fixed allowance for the
//!   index line (`charge`). Identical bodies share one content file but are charged to each
//!   key, so the budget errs on the safe side. After every write, least-recently-used entries
//!   are evicted until `used_bytes() <= capacity`.
//! - **Shared content is never deleted while referenced.** An in-memory reference count per
//!   content hash counts live entries and writes in flight. A content file is deleted only with
//!   the count at zero, checked under `content_gate`, the same lock a writer takes to reserve
//!   the content it has just written (see `Inner::write_content_blocking`).
//! - **Memory follows disk per key.** Every index write for a key (put, update, remove,
//!   eviction, compaction) happens under that key's stripe lock together with the matching
//!   in-memory update, so the map and the last index line for a key agree.
//! - **Cancel safety.** Mutating operations run in their own task: dropping the caller's future
//!   does not leave a half-applied put or remove behind.
//! - **No sticky failure.** A failed write (read-only directory, disk full) returns `Err` and
//!   leaves no state behind; the next write tries the disk again.
//!
//! One process owns a directory: two processes writing the same directory would each keep
//! their own byte accounting, and `open` moves the `tmp` folder of a previous run aside.
//!
//! Startup does not scan: [`DiskTier::open`] returns at once and a background task rebuilds the
//! map from `cacache::index::ls` (see [`DiskTier::open`] for what happens meanwhile).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead, BufReader, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cacache::{Algorithm, Integrity, WriteOpts};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::spawn_blocking;
use tracing::{debug, error, info, warn};

/// cacache 13.1 on-disk layout (`index-v5/aa/bb/<sha1(key) rest>`,
/// `content-v2/<algo>/aa/bb/<hex rest>`). Sweep and compaction walk these folders themselves
/// because cacache offers no garbage collection; a test checks the layout against cacache.
const INDEX_DIR: &str = "index-v5";
const CONTENT_DIR: &str = "content-v2";
/// cacache's folder for content being written.
const TMP_DIR: &str = "tmp";
/// `open` renames a previous run's `tmp` to this prefix; the startup load deletes it.
const STALE_TMP_PREFIX: &str = "tmp.stale-";

/// Fixed allowance per entry for the index line around the metadata: line hash (64), field
/// names, integrity string (~51), time and size.
const INDEX_LINE_OVERHEAD: u64 = 200;
/// Key stripes serialising index writes per key.
const STRIPES: usize = 64;
/// Entries evicted per round (the state lock is released between rounds).
const EVICT_BATCH: usize = 64;
/// Entries merged into the map per lock acquisition during the startup load.
const LOAD_BATCH: usize = 1024;
/// A bucket file with no valid line is deleted by `sweep` only when older than this, so that a
/// first append racing with the sweep is not lost.
const JUNK_BUCKET_GRACE: Duration = Duration::from_secs(60);

/// Disk tier errors. Callers only log them: a failed disk operation is a miss or a skipped store.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk cache I/O: {0}")]
    Io(#[from] io::Error),
    #[error("disk cache: {0}")]
    Cacache(#[from] cacache::Error),
    /// A blocking task panicked or was cancelled (e.g. cacache unwrapping a malformed,
    /// hand-edited index line). The process carries on.
    #[error("disk cache task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The disk tier. `Send + Sync`; share it behind the `Arc` that [`DiskTier::open`] returns.
pub struct DiskTier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("dir", &self.inner.dir)
            .field("capacity", &self.inner.capacity)
            .field("used_bytes", &self.used_bytes())
            .field("entries", &self.entries())
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl DiskTier {
    /// Opens (creating) the cache directory `dir`, capped at `capacity` bytes.
    ///
    /// Returns without scanning the cache. A background task lists the index
    /// (`cacache::index::ls`, in `spawn_blocking`) and rebuilds the byte accounting and the
    /// recency order (oldest index write first: reads are not recorded on disk). Until that load
    /// is done ([`DiskTier::loaded`]):
    /// - `get` and friends read the disk directly, so everything stored before is served;
    /// - eviction waits: writes are accepted and the tier may exceed `capacity` for the length of
    ///   the load; the load task evicts down to `capacity` as soon as it finishes;
    /// - content files of removed entries are only queued for deletion (another, not yet loaded
    ///   key might share them) and deleted once the load is done.
    ///
    /// Temp files left by a killed process are moved aside here (one rename) and deleted by the
    /// load task.
    pub async fn open(dir: PathBuf, capacity: u64) -> Result<Arc<DiskTier>, DiskError> {
        let prepare = dir.clone();
        spawn_blocking(move || prepare_dir(&prepare)).await??;
        let (loaded, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            dir,
            capacity,
            state: Mutex::new(State::default()),
            content_gate: Mutex::new(()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            stripe_hasher: RandomState::new(),
            loaded,
            sweeping: tokio::sync::Mutex::new(()),
            tmp_seq: AtomicU64::new(0),
            on_evict: std::sync::OnceLock::new(),
        });
        tokio::spawn(inner.clone().load());
        Ok(Arc::new(DiskTier { inner }))
    }

    /// Calls `f` with each key evicted to stay under the capacity (set once; later calls are ignored).
    pub fn on_evict(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.inner.on_evict.set(Box::new(f));
    }

    /// Waits until the startup load has rebuilt the accounting (returns at once afterwards).
    pub async fn loaded(&self) {
        self.inner.wait_loaded().await;
    }

    /// Whether the startup load is done.
    pub fn is_loaded(&self) -> bool {
        *self.inner.loaded.borrow()
    }

    /// Metadata and whole body of `key`, and marks it most recently used.
    ///
    /// The body is verified against its integrity hash. A corrupt, truncated or unreadable
    /// entry is removed (logged at warn) and reported as `Ok(None)`. `Err` only for transient
    /// conditions such as running out of file descriptors.
    pub async fn get(&self, key: &str) -> Result<Option<(Value, Bytes)>, DiskError> {
        self.lookup(key, true).await.map(|hit| hit.map(|(meta, body)| (meta, Bytes::from(body.unwrap_or_default()))))
    }

    /// Only the metadata of `key` (for purge and debug listings): no body read, no recency
    /// update.
    pub async fn get_meta(&self, key: &str) -> Result<Option<Value>, DiskError> {
        self.lookup(key, false).await.map(|hit| hit.map(|(meta, _)| meta))
    }

    /// Stores `body` with `meta` under `key`, replacing any previous entry, then evicts
    /// least-recently-used entries until `used_bytes() <= capacity`.
    ///
    /// Only complete data is committed: the content is renamed into place before the index
    /// line that points at it is appended. An entry whose [charge](DiskTier::used_bytes) exceeds
    /// the whole capacity is not stored, and any previous entry for `key` is removed (it would
    /// be older than what the caller just saw). `Err` when the disk refuses the write; the
    /// previous entry, if any, stays.
    pub async fn put(&self, key: &str, meta: Value, body: Bytes) -> Result<(), DiskError> {
        detached(self.inner.clone().put(key.to_owned(), meta, body)).await
    }

    /// Replaces the metadata of an existing entry without rewriting its body (a 304
    /// revalidation updating headers); also marks it most recently used. `Ok(false)` if `key`
    /// is absent.
    pub async fn update_meta(&self, key: &str, meta: Value) -> Result<bool, DiskError> {
        detached(self.inner.clone().update_meta(key.to_owned(), meta)).await
    }

    /// Removes `key`; its content file too unless another key shares it. `Ok(true)` if it was
    /// there. On `Err` the entry is still forgotten by this process (never served again) but
    /// may reappear after a restart.
    pub async fn remove(&self, key: &str) -> Result<bool, DiskError> {
        detached(self.inner.clone().remove(key.to_owned())).await
    }

    /// Every live key with its metadata, read from the index on disk (for purge by prefix or
    /// tag after a restart). Slow on a large cache: it reads every index bucket, in
    /// `spawn_blocking`.
    pub async fn list(&self) -> Result<Vec<(String, Value)>, DiskError> {
        let dir = self.inner.dir.clone();
        Ok(spawn_blocking(move || list_blocking(&dir)).await?)
    }

    /// Bytes charged for the live entries: per entry body + metadata JSON + key + a fixed
    /// allowance for the index line. Partial until the startup load is done.
    pub fn used_bytes(&self) -> u64 {
        self.inner.state().used
    }

    /// Whether the key is known live (no I/O). Partial until the startup load is done.
    pub fn contains(&self, key: &str) -> bool {
        self.inner.state().entries.contains_key(key)
    }

    /// Body size of a live entry (no I/O, no recency update).
    pub fn size_of(&self, key: &str) -> Option<u64> {
        self.inner.state().entries.get(key).map(|e| e.size)
    }

    /// Number of live entries. Partial until the startup load is done.
    pub fn entries(&self) -> usize {
        self.inner.state().entries.len()
    }

    /// The byte budget given to [`DiskTier::open`].
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Garbage collection, meant to run periodically in the background (waits for the startup
    /// load first; one sweep at a time). Returns the bytes freed.
    ///
    /// - Deletes content files no live entry references: left by a crash between content
    ///   rename and index append, by eviction while the load was running, or by a failed
    ///   delete. Content still referenced (identical bodies are one file) or reserved by a
    ///   write in flight is kept.
    /// - Compacts index buckets. cacache offers no compaction (its buckets only grow: every
    ///   put, metadata update and delete appends a line, and every read parses all of them), so
    ///   this rewrites a bucket with only its live line (temp file + rename, under the key's
    ///   lock), deletes buckets whose key is deleted, and deletes index entries the tier does not
    ///   know of (an eviction whose index delete failed).
    pub async fn sweep(&self) -> Result<u64, DiskError> {
        detached(self.inner.clone().sweep()).await
    }

    /// Shared lookup for `get` (`with_body`) and `get_meta`.
    async fn lookup(&self, key: &str, with_body: bool) -> Result<Option<(Value, Option<Vec<u8>>)>, DiskError> {
        let known = {
            let mut st = self.inner.state();
            let known = if with_body { st.touch(key) } else { st.entries.contains_key(key) };
            // Once loaded, the map holds every key: a miss needs no disk access.
            if !known && st.loaded {
                return Ok(None);
            }
            known
        };
        let (dir, owned_key) = (self.inner.dir.clone(), key.to_owned());
        let looked_up = match spawn_blocking(move || lookup_blocking(&dir, &owned_key, with_body)).await {
            Ok(looked_up) => looked_up?,
            // cacache panics on an integrity it cannot decode (a hand-edited index line).
            Err(e) if e.is_panic() => Lookup::Broken { sri: None, error: None },
            Err(e) => return Err(e.into()),
        };
        match looked_up {
            Lookup::Hit { meta, body, size, sri } => {
                if !known {
                    self.inner.adopt(key, &meta, size, &sri);
                }
                Ok(Some((meta, body)))
            }
            Lookup::Absent => {
                if known {
                    // The map knew a key the index does not have: re-check under the key lock.
                    detached(self.inner.clone().forget_if_absent(key.to_owned())).await?;
                }
                Ok(None)
            }
            Lookup::Broken { sri, error } => {
                let error = error.map_or_else(|| "cacache panicked".to_owned(), |e| e.to_string());
                warn!(key, error, "disk cache: dropping corrupt or unreadable entry");
                detached(self.inner.clone().drop_broken(key.to_owned(), sri)).await?;
                Ok(None)
            }
        }
    }
}

/// Runs a mutating operation in its own task so that it completes even if the caller's future
/// is dropped half-way.
async fn detached<T: Send + 'static>(
    op: impl Future<Output = Result<T, DiskError>> + Send + 'static,
) -> Result<T, DiskError> {
    tokio::spawn(op).await?
}

/// Recency order: (unix milliseconds, sequence). Entries loaded at startup use their index
/// write time, so they sort before everything touched since.
type Tick = (u64, u64);

struct Entry {
    charge: u64,
    /// Content id: the first hash of the integrity, e.g. `sha256-<base64>`.
    content: Arc<str>,
    /// Body size, as the index line records it.
    size: u64,
    tick: Tick,
}

#[derive(Default)]
struct State {
    entries: HashMap<Arc<str>, Entry>,
    lru: BTreeMap<Tick, Arc<str>>,
    /// Content id → live entries using it + writes in flight that reserved it.
    refs: HashMap<Arc<str>, u32>,
    used: u64,
    seq: u64,
    loaded: bool,
    /// The startup load listed the whole index (no panic); `sweep` only deletes index entries
    /// unknown to the map when this holds.
    load_ok: bool,
    /// Keys removed while loading, which the load must not bring back.
    tombstones: HashSet<Arc<str>>,
    /// Content ids released while loading, checked again once loaded.
    deferred: Vec<Arc<str>>,
}

impl State {
    fn tick(&mut self, millis: u64) -> Tick {
        self.seq += 1;
        (millis, self.seq)
    }

    /// Reuses the `Arc` already in `refs` so each content id is allocated once.
    fn intern(&self, id: &str) -> Arc<str> {
        match self.refs.get_key_value(id) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(id),
        }
    }

    fn add_ref(&mut self, id: &str) -> Arc<str> {
        let id = self.intern(id);
        *self.refs.entry(id.clone()).or_insert(0) += 1;
        id
    }

    /// Returns true when nothing references `id` any more.
    fn drop_ref(&mut self, id: &str) -> bool {
        match self.refs.get_mut(id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.refs.remove(id);
                true
            }
            None => true,
        }
    }

    /// Inserts or replaces `key`. Returns the content id the replaced entry left unreferenced.
    fn insert(&mut self, key: &str, charge: u64, content: &str, size: u64, tick: Tick) -> Option<Arc<str>> {
        let orphan = match self.remove(key) {
            Some((old, true)) => Some(old),
            _ => None,
        };
        let key: Arc<str> = Arc::from(key);
        let content = self.add_ref(content);
        self.used = self.used.saturating_add(charge);
        self.lru.insert(tick, key.clone());
        self.entries.insert(key, Entry { charge, content, size, tick });
        // Same body as before: the new entry references the old content again.
        orphan.filter(|id| !self.refs.contains_key(&**id))
    }

    /// Removes `key`; returns its content id and whether that is now unreferenced.
    fn remove(&mut self, key: &str) -> Option<(Arc<str>, bool)> {
        let entry = self.entries.remove(key)?;
        self.lru.remove(&entry.tick);
        self.used = self.used.saturating_sub(entry.charge);
        let orphaned = self.drop_ref(&entry.content);
        Some((entry.content, orphaned))
    }

    /// Marks `key` most recently used: O(log n). Returns whether it is known.
    fn touch(&mut self, key: &str) -> bool {
        if !self.entries.contains_key(key) {
            return false;
        }
        let tick = self.tick(now_millis());
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        if let Some(shared_key) = self.lru.remove(&entry.tick) {
            self.lru.insert(tick, shared_key);
        }
        entry.tick = tick;
        true
    }

    /// Removes the least recently used entry: (key, content id).
    fn pop_lru(&mut self) -> Option<(Arc<str>, Arc<str>)> {
        let (_, key) = self.lru.pop_first()?;
        let entry = self.entries.remove(&key)?;
        self.used = self.used.saturating_sub(entry.charge);
        self.drop_ref(&entry.content);
        Some((key, entry.content))
    }
}

struct Inner {
    dir: PathBuf,
    capacity: u64,
    /// Never held across `.await` nor around file I/O.
    state: Mutex<State>,
    /// Held around "content unreferenced? then unlink" and around a writer's reservation, so
    /// a content file is never unlinked between a writer's rename and its reservation going
    /// unnoticed (see `write_content_blocking`).
    content_gate: Mutex<()>,
    /// Per-key locks (striped) around index writes and the matching map update.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    stripe_hasher: RandomState,
    loaded: watch::Sender<bool>,
    sweeping: tokio::sync::Mutex<()>,
    tmp_seq: AtomicU64,
    /// Told each key evicted to stay under `capacity`.
    on_evict: std::sync::OnceLock<EvictHook>,
}

type EvictHook = Box<dyn Fn(&str) + Send + Sync>;

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the map usable; accounting may drift until the
        // next restart, which beats failing every request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gate(&self) -> MutexGuard<'_, ()> {
        self.content_gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stripe(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let hash = self.stripe_hasher.hash_one(key);
        &self.stripes[(hash % self.stripes.len() as u64) as usize]
    }

    async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        // The sender lives in `self`: `wait_for` cannot fail while we hold `self`.
        let _ = rx.wait_for(|done| *done).await;
    }

    // ---- startup load ----

    async fn load(self: Arc<Self>) {
        let started = Instant::now();
        let me = self.clone();
        let result = spawn_blocking(move || me.load_blocking()).await;
        let ok = match &result {
            Ok(loaded) => {
                info!(
                    dir = %self.dir.display(),
                    entries = loaded,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "disk cache: index loaded"
                );
                true
            }
            Err(e) => {
                error!(dir = %self.dir.display(), error = %e, "disk cache: index load failed; accounting is partial");
                false
            }
        };
        let deferred = {
            let mut st = self.state();
            st.loaded = true;
            st.load_ok = ok;
            st.tombstones = HashSet::new();
            std::mem::take(&mut st.deferred)
        };
        self.loaded.send_replace(true);
        if !deferred.is_empty() {
            let me = self.clone();
            let released = spawn_blocking(move || {
                for id in deferred {
                    me.release_content_blocking(&id);
                }
            })
            .await;
            if let Err(e) = released {
                warn!(error = %e, "disk cache: releasing content after load failed");
            }
        }
        self.evict().await;
    }

    fn load_blocking(&self) -> usize {
        self.remove_stale_tmp();
        if !self.dir.join(INDEX_DIR).is_dir() {
            return 0;
        }
        let mut merged = 0;
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        for m in index_entries(&self.dir) {
            if let Some(content) = content_id(&m.integrity) {
                batch.push(Loaded {
                    charge: charge(m.key.len(), json_len(&m.metadata), m.size as u64),
                    size: m.size as u64,
                    key: m.key,
                    content,
                    millis: u64::try_from(m.time).unwrap_or(u64::MAX),
                });
            }
            if batch.len() >= LOAD_BATCH {
                merged += self.merge_loaded(&mut batch);
            }
        }
        merged + self.merge_loaded(&mut batch)
    }

    /// Adds loaded entries unless a put, update or get since `open` already placed the key
    /// (that is newer) or a remove since `open` deleted it.
    fn merge_loaded(&self, batch: &mut Vec<Loaded>) -> usize {
        let mut st = self.state();
        let mut merged = 0;
        for entry in batch.drain(..) {
            if st.entries.contains_key(entry.key.as_str()) || st.tombstones.contains(entry.key.as_str()) {
                continue;
            }
            let tick = st.tick(entry.millis);
            st.insert(&entry.key, entry.charge, &entry.content, entry.size, tick);
            merged += 1;
        }
        merged
    }

    fn remove_stale_tmp(&self) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for dirent in listing.flatten() {
            if dirent.file_name().to_string_lossy().starts_with(STALE_TMP_PREFIX)
                && let Err(e) = std::fs::remove_dir_all(dirent.path())
            {
                warn!(path = %dirent.path().display(), error = %e, "disk cache: cannot delete stale temp files");
            }
        }
    }

    /// During the load, a key read from disk before the load reached it enters the map now.
    fn adopt(&self, key: &str, meta: &Value, size: usize, sri: &Integrity) {
        let Some(content) = content_id(sri) else {
            return;
        };
        let charge = charge(key.len(), json_len(meta), size as u64);
        let mut st = self.state();
        if st.loaded || st.entries.contains_key(key) || st.tombstones.contains(key) {
            return;
        }
        let tick = st.tick(now_millis());
        st.insert(key, charge, &content, size as u64, tick);
    }

    // ---- writes ----

    async fn put(self: Arc<Self>, key: String, meta: Value, body: Bytes) -> Result<(), DiskError> {
        let charge = charge(key.len(), json_len(&meta), body.len() as u64);
        if charge > self.capacity {
            debug!(key, charge, capacity = self.capacity, "disk cache: entry larger than capacity, not stored");
            self.remove(key).await?;
            return Ok(());
        }
        let size = body.len();
        let me = self.clone();
        let (content, sri) = spawn_blocking(move || me.write_content_blocking(&body)).await??;
        let stored = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            let opts = WriteOpts::new().integrity(sri).size(size).metadata(meta);
            let inserted = spawn_blocking(move || cacache::index::insert(&dir, &owned_key, opts))
                .await
                .map_err(DiskError::from)
                .and_then(|r| r.map_err(DiskError::from));
            inserted.map(|_| {
                let mut st = self.state();
                st.tombstones.remove(key.as_str());
                let tick = st.tick(now_millis());
                let orphan = st.insert(&key, charge, &content, size as u64, tick);
                // The entry now holds a reference of its own: drop the write's reservation.
                st.drop_ref(&content);
                orphan
            })
        };
        match stored {
            Ok(orphan) => {
                if let Some(old) = orphan {
                    self.release_content(vec![old]).await;
                }
                self.evict().await;
                Ok(())
            }
            Err(e) => {
                let orphaned = self.state().drop_ref(&content);
                if orphaned {
                    self.release_content(vec![content]).await;
                }
                Err(e)
            }
        }
    }

    /// Writes `body` to the content store and reserves it (refcount + 1) so no concurrent
    /// eviction or sweep deletes it before the index entry exists.
    fn write_content_blocking(&self, body: &[u8]) -> Result<(Arc<str>, Integrity), DiskError> {
        let sri = write_content(&self.dir, body)?;
        let id = content_id(&sri).ok_or_else(|| io::Error::other("cacache returned an empty integrity"))?;
        let id = {
            let _gate = self.gate();
            self.state().add_ref(&id)
        };
        // A deletion of this content that started before the reservation held the gate and has
        // finished now; if it took the file we just renamed into place, write it again (the
        // reservation protects this copy).
        if !content_path(&self.dir, &sri).exists()
            && let Err(e) = write_content(&self.dir, body)
        {
            if self.state().drop_ref(&id) {
                self.release_content_blocking(&id);
            }
            return Err(e);
        }
        Ok((id, sri))
    }

    async fn update_meta(self: Arc<Self>, key: String, meta: Value) -> Result<bool, DiskError> {
        let meta_len = json_len(&meta);
        let orphan = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            // Once loaded, the map knows what the key's last index line says (both change
            // under this lock): no need to read and parse its bucket first.
            let known = {
                let st = self.state();
                let entry = st.entries.get(key.as_str()).filter(|_| st.loaded);
                entry.and_then(|e| Some((e.content.parse::<Integrity>().ok()?, e.size as usize)))
            };
            let found = spawn_blocking(move || -> Result<_, DiskError> {
                let (sri, size) = match known {
                    Some(k) => k,
                    None => match cacache::index::find(&dir, &owned_key)? {
                        Some(m) => (m.integrity, m.size),
                        None => return Ok(None),
                    },
                };
                let opts = WriteOpts::new().integrity(sri.clone()).size(size).metadata(meta);
                cacache::index::insert(&dir, &owned_key, opts)?;
                Ok(Some((sri, size)))
            })
            .await??;
            let Some((sri, size)) = found else {
                return Ok(false);
            };
            let Some(content) = content_id(&sri) else {
                return Ok(true);
            };
            let mut st = self.state();
            st.tombstones.remove(key.as_str());
            let tick = st.tick(now_millis());
            // Also places an entry the load has not reached yet.
            st.insert(&key, charge(key.len(), meta_len, size as u64), &content, size as u64, tick)
        };
        if let Some(old) = orphan {
            self.release_content(vec![old]).await;
        }
        self.evict().await;
        Ok(true)
    }

    async fn remove(self: Arc<Self>, key: String) -> Result<bool, DiskError> {
        let (on_disk, removed) = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            let on_disk = spawn_blocking(move || -> Result<bool, DiskError> {
                // No delete line for an absent key: it would create a bucket file for nothing.
                if cacache::index::find(&dir, &owned_key)?.is_none() {
                    return Ok(false);
                }
                cacache::index::delete(&dir, &owned_key)?;
                Ok(true)
            })
            .await
            .map_err(DiskError::from)
            .and_then(|r| r);
            // Forgotten even if the disk write failed: this process must not serve it again.
            let mut st = self.state();
            let removed = st.remove(&key);
            if !st.loaded {
                st.tombstones.insert(Arc::from(key.as_str()));
            }
            (on_disk, removed)
        };
        let known = removed.is_some();
        if let Some((content, true)) = removed {
            self.release_content(vec![content]).await;
        }
        Ok(on_disk? || known)
    }

    /// `get` found the map and the index disagreeing (the index has no entry): fix the map.
    async fn forget_if_absent(self: Arc<Self>, key: String) -> Result<(), DiskError> {
        let removed = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            let found = spawn_blocking(move || cacache::index::find(&dir, &owned_key)).await??;
            if found.is_some() {
                return Ok(());
            }
            self.state().remove(&key)
        };
        if let Some((content, true)) = removed {
            self.release_content(vec![content]).await;
        }
        Ok(())
    }

    /// Removes an entry whose content failed to read or verify (`sri`), or whose index bucket
    /// could not be read (`None`) — unless a put replaced it in the meantime.
    async fn drop_broken(self: Arc<Self>, key: String, sri: Option<Integrity>) -> Result<(), DiskError> {
        let broken_id = sri.as_ref().and_then(content_id);
        let removed = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            let expected = sri.clone();
            let deleted = spawn_blocking(move || -> Result<(), DiskError> {
                if let Some(expected) = expected {
                    match cacache::index::find(&dir, &owned_key)? {
                        Some(m) if m.integrity == expected => {}
                        _ => return Ok(()),
                    }
                }
                cacache::index::delete(&dir, &owned_key)?;
                Ok(())
            })
            .await;
            match &deleted {
                Ok(Err(e)) => warn!(key, error = %e, "disk cache: cannot delete broken entry"),
                Err(e) => warn!(key, error = %e, "disk cache: cannot delete broken entry"),
                Ok(Ok(())) => {}
            }
            let mut st = self.state();
            let replaced = match (&broken_id, st.entries.get(key.as_str())) {
                (Some(id), Some(entry)) => *entry.content != **id,
                _ => false,
            };
            if replaced { None } else { st.remove(&key) }
        };
        if let Some((content, true)) = removed {
            self.release_content(vec![content]).await;
        }
        Ok(())
    }

    // ---- eviction and content release ----

    /// Evicts least-recently-used entries until `used <= capacity`. Does nothing until loaded.
    async fn evict(self: &Arc<Self>) {
        loop {
            let victims: Vec<(Arc<str>, Arc<str>)> = {
                let mut st = self.state();
                if !st.loaded {
                    return;
                }
                let mut victims = Vec::new();
                while st.used > self.capacity && victims.len() < EVICT_BATCH {
                    let Some(victim) = st.pop_lru() else { break };
                    victims.push(victim);
                }
                victims
            };
            if victims.is_empty() {
                return;
            }
            debug!(count = victims.len(), "disk cache: evicting");
            let mut contents = Vec::with_capacity(victims.len());
            for (key, content) in victims {
                contents.push(content);
                let _key_lock = self.stripe(&key).lock().await;
                // Put again since it was picked: the index now holds the new entry.
                if self.state().entries.contains_key(&*key) {
                    continue;
                }
                if let Some(told) = self.on_evict.get() {
                    told(&key);
                }
                let dir = self.dir.clone();
                let owned_key = key.to_string();
                match spawn_blocking(move || cacache::index::delete(&dir, &owned_key)).await {
                    Ok(Ok(())) => {}
                    // Left for `sweep` (it deletes index entries the map does not know).
                    Ok(Err(e)) => warn!(key = &*key, error = %e, "disk cache: evicted entry not deleted from index"),
                    Err(e) => warn!(key = &*key, error = %e, "disk cache: evicted entry not deleted from index"),
                }
            }
            self.release_content(contents).await;
        }
    }

    async fn release_content(self: &Arc<Self>, ids: Vec<Arc<str>>) {
        let me = self.clone();
        let released = spawn_blocking(move || {
            for id in ids {
                me.release_content_blocking(&id);
            }
        })
        .await;
        if let Err(e) = released {
            warn!(error = %e, "disk cache: content release failed");
        }
    }

    /// Deletes the content file of `id` if nothing references it (checked under the gate).
    /// While loading, only queues it: a key not loaded yet may share it.
    fn release_content_blocking(&self, id: &str) -> u64 {
        let _gate = self.gate();
        {
            let mut st = self.state();
            if !st.loaded {
                let id = st.intern(id);
                st.deferred.push(id);
                return 0;
            }
            if st.refs.contains_key(id) {
                return 0;
            }
        }
        let Ok(sri) = id.parse::<Integrity>() else {
            return 0;
        };
        // `to_hex` panics on an undecodable digest (only a hand-edited index line has one).
        let dir = self.dir.as_path();
        match std::panic::catch_unwind(|| content_path(dir, &sri)) {
            Ok(path) => remove_file_counted(&path),
            Err(_) => 0,
        }
    }

    // ---- sweep ----

    async fn sweep(self: Arc<Self>) -> Result<u64, DiskError> {
        let _one_at_a_time = self.sweeping.lock().await;
        self.wait_loaded().await;
        let me = self.clone();
        let scan = spawn_blocking(move || me.scan_index_blocking()).await?;
        let mut freed = scan.freed;
        let mut keep = scan.keep;
        for (path, key) in scan.candidates {
            let _key_lock = self.stripe(&key).lock().await;
            let me = self.clone();
            let compacted = spawn_blocking(move || me.compact_bucket_blocking(&path, &key)).await?;
            freed += compacted.freed;
            keep.extend(compacted.keep);
        }
        let me = self.clone();
        freed += spawn_blocking(move || me.sweep_content_blocking(&keep)).await?;
        info!(freed_bytes = freed, "disk cache: sweep done");
        Ok(freed)
    }

    /// Reads every bucket; returns those needing work under their key lock. A bucket is clean
    /// when it is exactly one live line whose key the map holds with the same content.
    fn scan_index_blocking(&self) -> IndexScan {
        let mut scan = IndexScan::default();
        for_each_file(&self.dir.join(INDEX_DIR), 2, &mut |path| {
            let bucket = match read_bucket(path) {
                Ok(bucket) => bucket,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "disk cache: unreadable index bucket");
                    return;
                }
            };
            match bucket.entries.as_slice() {
                [] => {
                    // Only torn or foreign lines: nothing cacache would read.
                    if is_older_than(path, JUNK_BUCKET_GRACE) {
                        scan.freed += remove_file_counted(path);
                    }
                }
                [(key, integrity, _)] => {
                    let clean = bucket.is_compact()
                        && integrity.as_deref().and_then(id_of_integrity_str).is_some_and(|id| {
                            self.state().entries.get(key.as_str()).is_some_and(|e| *e.content == *id)
                        });
                    if !clean {
                        scan.candidates.push((path.to_owned(), key.clone()));
                    }
                }
                // Several keys in one bucket (a SHA-1 collision of keys): left alone.
                several => scan.keep.extend(
                    several.iter().filter_map(|(_, integrity, _)| integrity.as_deref().and_then(id_of_integrity_str)),
                ),
            }
        });
        scan
    }

    /// Rewrites one bucket to its live line, or deletes it; called under the key's lock.
    fn compact_bucket_blocking(&self, path: &Path, key: &str) -> Compacted {
        let mut done = Compacted::default();
        let bucket = match read_bucket(path) {
            Ok(bucket) => bucket,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %path.display(), error = %e, "disk cache: unreadable index bucket");
                }
                return done;
            }
        };
        let [(bucket_key, integrity, line)] = bucket.entries.as_slice() else {
            // Changed since the scan; keep whatever it references.
            done.keep.extend(
                bucket
                    .entries
                    .iter()
                    .filter_map(|(_, integrity, _)| integrity.as_deref().and_then(id_of_integrity_str)),
            );
            return done;
        };
        if bucket_key != key {
            return done;
        }
        let Some(integrity) = integrity else {
            // Deleted key: the whole bucket is history.
            done.freed = remove_file_counted(path);
            return done;
        };
        let Some(id) = id_of_integrity_str(integrity) else {
            return done;
        };
        let (known, load_ok) = {
            let st = self.state();
            (st.entries.get(key).map(|e| *e.content == *id), st.load_ok)
        };
        match known {
            Some(true) => {
                if !bucket.is_compact() {
                    match self.rewrite_bucket(path, line) {
                        Ok(new_len) => done.freed = bucket.len.saturating_sub(new_len),
                        Err(e) => warn!(path = %path.display(), error = %e, "disk cache: bucket compaction failed"),
                    }
                }
            }
            // The map does not know it (an eviction whose index delete failed): drop it.
            None if load_ok => done.freed = remove_file_counted(path),
            _ => done.keep.push(id),
        }
        done
    }

    /// Replaces a bucket by the single `line`, atomically (temp file + rename).
    fn rewrite_bucket(&self, path: &Path, line: &str) -> io::Result<u64> {
        let tmp_dir = self.dir.join(TMP_DIR);
        std::fs::create_dir_all(&tmp_dir)?;
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = tmp_dir.join(format!("bucket-{}-{seq}", std::process::id()));
        let text = format!("\n{line}");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(text.len() as u64)
    }

    /// Deletes content files that are neither referenced in memory nor in `keep`.
    fn sweep_content_blocking(&self, keep: &HashSet<String>) -> u64 {
        let root = self.dir.join(CONTENT_DIR);
        let mut freed = 0;
        for_each_file(&root, 3, &mut |path| {
            let Some(id) = id_of_content_path(&root, path) else {
                return;
            };
            if keep.contains(&id) {
                return;
            }
            let _gate = self.gate();
            if self.state().refs.contains_key(id.as_str()) {
                return;
            }
            freed += remove_file_counted(path);
        });
        freed
    }
}

struct Loaded {
    key: String,
    content: String,
    charge: u64,
    size: u64,
    millis: u64,
}

#[derive(Default)]
struct IndexScan {
    /// (bucket path, its key) to compact or delete under the key lock.
    candidates: Vec<(PathBuf, String)>,
    /// Content ids referenced by index lines the map does not account for.
    keep: HashSet<String>,
    freed: u64,
}

#[derive(Default)]
struct Compacted {
    freed: u64,
    keep: Vec<String>,
}

enum Lookup {
    Absent,
    Hit {
        meta: Value,
        body: Option<Vec<u8>>,
        size: usize,
        sri: Integrity,
    },
    /// `sri` is `None` when the index bucket itself could not be read.
    Broken {
        sri: Option<Integrity>,
        error: Option<cacache::Error>,
    },
}

fn lookup_blocking(dir: &Path, key: &str, with_body: bool) -> Result<Lookup, DiskError> {
    let m = match cacache::index::find(dir, key) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(Lookup::Absent),
        Err(e) if is_transient(&e) => return Err(e.into()),
        Err(e) => return Ok(Lookup::Broken { sri: None, error: Some(e) }),
    };
    let body = if with_body {
        // Reads the whole file and checks it against the integrity.
        match cacache::read_hash_sync(dir, &m.integrity) {
            Ok(body) => Some(body),
            Err(e) if is_transient(&e) => return Err(e.into()),
            Err(error) => {
                return Ok(Lookup::Broken { sri: Some(m.integrity), error: Some(error) });
            }
        }
    } else {
        None
    };
    Ok(Lookup::Hit { meta: m.metadata, body, size: m.size, sri: m.integrity })
}

fn list_blocking(dir: &Path) -> Vec<(String, Value)> {
    index_entries(dir).map(|m| (m.key, m.metadata)).collect()
}

/// Live index entries, from `cacache::index::ls`. Unreadable buckets are logged and skipped,
/// and so are buckets that make `ls` panic: it unwraps the integrity of any line whose
/// checksum is valid, so one hand-edited line would otherwise end the whole listing.
fn index_entries(dir: &Path) -> impl Iterator<Item = cacache::Metadata> {
    let mut listing = dir.join(INDEX_DIR).is_dir().then(|| cacache::index::ls(dir));
    std::iter::from_fn(move || {
        let listing = listing.as_mut()?;
        loop {
            // `ls` has moved past a bucket before parsing it, so after a panic the next call
            // continues with the next bucket.
            match std::panic::catch_unwind(AssertUnwindSafe(|| listing.next())) {
                Ok(Some(Ok(m))) => return Some(m),
                Ok(Some(Err(e))) => {
                    warn!(error = %e, "disk cache: skipping unreadable index bucket");
                }
                Ok(None) => return None,
                Err(_) => warn!("disk cache: skipping an index bucket cacache cannot parse"),
            }
        }
    })
}

/// Conditions that say nothing about the entry (the process is short of descriptors or
/// memory): reported as errors, the entry is kept.
fn is_transient(e: &cacache::Error) -> bool {
    // EMFILE (24) and ENFILE (23) have these numbers on Linux and macOS.
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    match e {
        cacache::Error::IoError(io, _) => {
            matches!(
                io.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::OutOfMemory
                    | io::ErrorKind::TimedOut
            ) || matches!(io.raw_os_error(), Some(EMFILE | ENFILE))
        }
        _ => false,
    }
}

fn prepare_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(TMP_DIR);
    if tmp.is_dir() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        let aside = dir.join(format!("{STALE_TMP_PREFIX}{nanos}"));
        if let Err(e) = std::fs::rename(&tmp, &aside) {
            warn!(path = %tmp.display(), error = %e, "disk cache: cannot move stale temp files aside");
        }
    }
    Ok(())
}

/// Writes `body` as content (temp file, then rename to its hash path).
fn write_content(dir: &Path, body: &[u8]) -> Result<Integrity, DiskError> {
    // No `.size()`: with the `mmap` feature a known size up to 1 MiB selects an mmap'd temp file
    // sized with posix_fallocate, which fails (EINVAL) for an empty body.
    let mut writer = WriteOpts::new().algorithm(Algorithm::Sha256).open_hash_sync(dir)?;
    writer.write_all(body)?;
    Ok(writer.commit()?)
}

/// Bytes charged against the capacity for one entry.
fn charge(key_len: usize, meta_len: u64, body_len: u64) -> u64 {
    // Saturating: sizes read back from a damaged index may be anything.
    body_len.saturating_add(meta_len).saturating_add(key_len as u64 + INDEX_LINE_OVERHEAD)
}

/// Length of `value` serialised as JSON, without allocating it.
fn json_len(value: &Value) -> u64 {
    struct Counter(u64);
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// Content id of an integrity: its first hash (`sha256-<base64>`), the one cacache's content
/// path is derived from.
fn content_id(sri: &Integrity) -> Option<String> {
    sri.hashes.first().map(|hash| hash.to_string())
}

fn id_of_integrity_str(integrity: &str) -> Option<String> {
    integrity.parse::<Integrity>().ok().as_ref().and_then(content_id)
}

/// cacache's content path for `sri` (`content-v2/<algo>/<hex[0..2]>/<hex[2..4]>/<hex[4..]>`).
fn content_path(dir: &Path, sri: &Integrity) -> PathBuf {
    let (algorithm, hex) = sri.to_hex();
    dir.join(CONTENT_DIR).join(algorithm.to_string()).join(&hex[0..2]).join(&hex[2..4]).join(&hex[4..])
}

/// Inverse of [`content_path`]: the content id of a file under `root` (= `content-v2`).
fn id_of_content_path(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
    let [algorithm, a, b, rest] = parts.as_slice() else {
        return None;
    };
    let algorithm: Algorithm = algorithm.parse().ok()?;
    let sri = Integrity::from_hex(format!("{a}{b}{rest}"), algorithm).ok()?;
    content_id(&sri)
}

/// Deletes a file; returns its size, or 0 if it was already gone or could not be deleted.
fn remove_file_counted(path: &Path) -> u64 {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(path) {
        Ok(()) => len,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "disk cache: cannot delete file");
            0
        }
    }
}

fn is_older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Calls `f` on every regular file `depth` directory levels below `root` (cacache's fan-out
/// folders). Unreadable folders are skipped.
fn for_each_file(root: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    let Ok(listing) = std::fs::read_dir(root) else {
        return;
    };
    for dirent in listing.flatten() {
        let Ok(file_type) = dirent.file_type() else {
            continue;
        };
        let path = dirent.path();
        if depth == 0 {
            if file_type.is_file() {
                f(&path);
            }
        } else if file_type.is_dir() {
            for_each_file(&path, depth - 1, f);
        }
    }
}

/// An index line as cacache 13.1 accepts it: same fields and types as its
/// `SerializableMetadata`, so exactly the same lines parse here and in `index::find`/`ls`.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // the fields are there to be validated like cacache does, not read
struct IndexLine {
    key: String,
    integrity: Option<String>,
    time: u128,
    size: usize,
    metadata: serde::de::IgnoredAny,
    raw_metadata: Option<Vec<u8>>,
}

/// A bucket file as cacache reads it: lines `\n<sha256 hex of json>\t<json>`, reading stops at
/// the first non-UTF-8 line, the last valid line per key wins, a `null` integrity is a delete.
struct Bucket {
    len: u64,
    /// Per key (first-seen order): effective integrity and the raw effective line.
    entries: Vec<(String, Option<String>, String)>,
}

impl Bucket {
    /// Holds nothing but its effective lines (what a rewrite would produce).
    fn is_compact(&self) -> bool {
        let needed: u64 = self
            .entries
            .iter()
            .filter(|(_, integrity, _)| integrity.is_some())
            .map(|(_, _, line)| 1 + line.len() as u64)
            .sum();
        self.entries.iter().all(|(_, integrity, _)| integrity.is_some()) && self.len == needed
    }
}

fn read_bucket(path: &Path) -> io::Result<Bucket> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut entries: Vec<(String, Option<String>, String)> = Vec::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        let Some(parsed) = parse_index_line(&line) else {
            continue;
        };
        match entries.iter_mut().find(|(key, _, _)| *key == parsed.key) {
            Some(slot) => {
                slot.1 = parsed.integrity;
                slot.2 = line;
            }
            None => entries.push((parsed.key, parsed.integrity, line)),
        }
    }
    Ok(Bucket { len, entries })
}

fn parse_index_line(line: &str) -> Option<IndexLine> {
    let mut parts = line.split('\t');
    let (Some(hash), Some(json), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    if format!("{:x}", Sha256::digest(json.as_bytes())) != hash {
        return None;
    }
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn open(dir: &Path, capacity: u64) -> Arc<DiskTier> {
        let tier = DiskTier::open(dir.to_owned(), capacity).await.unwrap();
        tier.loaded().await;
        tier
    }

    fn body_path(dir: &Path, body: &[u8]) -> PathBuf {
        content_path(dir, &Integrity::from(body))
    }

    fn buckets(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for_each_file(&dir.join(INDEX_DIR), 2, &mut |p| found.push(p.to_owned()));
        found
    }

    fn content_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for_each_file(&dir.join(CONTENT_DIR), 3, &mut |p| found.push(p.to_owned()));
        found
    }

    fn lines_in(path: &Path) -> usize {
        std::fs::read_to_string(path).unwrap().lines().filter(|l| !l.is_empty()).count()
    }

    /// Recomputes the accounting from what is on disk and compares.
    async fn assert_accounting_matches_disk(tier: &DiskTier) {
        let mut expected = 0;
        let listed = tier.list().await.unwrap();
        for (key, meta) in &listed {
            let (_, body) = tier.get(key).await.unwrap().expect("listed key reads");
            expected += charge(key.len(), json_len(meta), body.len() as u64);
        }
        assert_eq!(tier.entries(), listed.len());
        assert_eq!(tier.used_bytes(), expected);
    }

    #[tokio::test]
    async fn put_get_round_trip_with_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let meta = json!({"status": 200, "headers": [["content-type", "text/plain"]]});
        tier.put("k1", meta.clone(), Bytes::from_static(b"hello")).await.unwrap();

        let (got_meta, body) = tier.get("k1").await.unwrap().unwrap();
        assert_eq!(got_meta, meta);
        assert_eq!(&body[..], b"hello");
        assert_eq!(tier.get_meta("k1").await.unwrap(), Some(meta.clone()));
        assert_eq!(tier.entries(), 1);
        assert_eq!(tier.used_bytes(), charge(2, json_len(&meta), 5));
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test]
    async fn empty_body_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.put("empty", json!({"status": 301}), Bytes::new()).await.unwrap();
        let (meta, body) = tier.get("empty").await.unwrap().unwrap();
        assert_eq!(meta, json!({"status": 301}));
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn missing_key_is_none_everywhere() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(tmp.path().to_owned(), 1 << 20).await.unwrap();
        // Possibly before the load finishes, then after.
        assert!(tier.get("nope").await.unwrap().is_none());
        tier.loaded().await;
        assert!(tier.get("nope").await.unwrap().is_none());
        assert!(tier.get_meta("nope").await.unwrap().is_none());
        assert!(!tier.update_meta("nope", json!(1)).await.unwrap());
        assert!(!tier.remove("nope").await.unwrap());
        assert!(buckets(tmp.path()).is_empty(), "no bucket written for absent keys");
    }

    #[tokio::test]
    async fn entries_survive_restart_and_accounting_is_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let (used, entries) = {
            let tier = open(tmp.path(), 1 << 20).await;
            for i in 0..3 {
                let body = Bytes::from(format!("body {i}").repeat(10));
                tier.put(&format!("key{i}"), json!({"i": i}), body).await.unwrap();
            }
            tier.remove("key1").await.unwrap();
            (tier.used_bytes(), tier.entries())
        };
        let tier = open(tmp.path(), 1 << 20).await;
        assert_eq!(tier.used_bytes(), used);
        assert_eq!(tier.entries(), entries);
        let (meta, body) = tier.get("key2").await.unwrap().unwrap();
        assert_eq!(meta, json!({"i": 2}));
        assert_eq!(body, Bytes::from("body 2".repeat(10)));
        assert!(tier.get("key1").await.unwrap().is_none());
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test]
    async fn reads_work_before_the_load_finishes() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let tier = open(tmp.path(), 1 << 20).await;
            tier.put("k", json!(1), Bytes::from_static(b"v")).await.unwrap();
        }
        let tier = DiskTier::open(tmp.path().to_owned(), 1 << 20).await.unwrap();
        let (_, body) = tier.get("k").await.unwrap().unwrap();
        assert_eq!(&body[..], b"v");
        tier.loaded().await;
        assert_eq!(tier.entries(), 1);
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test]
    async fn eviction_keeps_the_budget_and_drops_the_least_recently_read() {
        let tmp = tempfile::tempdir().unwrap();
        let body = |c: u8| Bytes::from(vec![c; 1000]);
        let one = charge(1, json_len(&json!({})), 1000);
        let tier = open(tmp.path(), 3 * one + 10).await;
        for (key, c) in [("a", b'a'), ("b", b'b'), ("c", b'c')] {
            tier.put(key, json!({}), body(c)).await.unwrap();
        }
        assert_eq!(tier.entries(), 3);
        // Reading `a` makes `b` the least recently used.
        tier.get("a").await.unwrap().unwrap();
        tier.put("d", json!({}), body(b'd')).await.unwrap();

        assert!(tier.used_bytes() <= tier.capacity());
        assert_eq!(tier.entries(), 3);
        assert!(tier.get("b").await.unwrap().is_none(), "b was least recently read");
        for key in ["a", "c", "d"] {
            assert!(tier.get(key).await.unwrap().is_some(), "{key} kept");
        }
        assert!(!body_path(tmp.path(), &body(b'b')).exists(), "evicted content deleted");
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test]
    async fn after_restart_recency_is_the_write_time_and_load_evicts_to_capacity() {
        let tmp = tempfile::tempdir().unwrap();
        let one = charge(1, json_len(&json!({})), 100);
        {
            let tier = open(tmp.path(), 1 << 20).await;
            for key in ["a", "b", "c"] {
                tier.put(key, json!({}), Bytes::from(vec![key.as_bytes()[0]; 100])).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let tier = open(tmp.path(), 2 * one).await;
        assert_eq!(tier.entries(), 2);
        assert!(tier.used_bytes() <= 2 * one);
        assert!(tier.get("a").await.unwrap().is_none(), "oldest write evicted");
        assert!(tier.get("b").await.unwrap().is_some());
        assert!(tier.get("c").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn body_larger_than_capacity_is_not_stored_and_replaces_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 2000).await;
        tier.put("k", json!("old"), Bytes::from_static(b"small")).await.unwrap();
        tier.put("k", json!("new"), Bytes::from(vec![0; 5000])).await.unwrap();
        assert!(tier.get("k").await.unwrap().is_none(), "stale entry not left behind");
        assert_eq!(tier.entries(), 0);
        assert_eq!(tier.used_bytes(), 0);
        assert!(content_files(tmp.path()).is_empty());
    }

    async fn assert_broken_entry_is_dropped(damage: impl FnOnce(&Path)) {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let body = Bytes::from(vec![7u8; 4096]);
        tier.put("k", json!({"s": 1}), body.clone()).await.unwrap();
        tier.put("other", json!({}), Bytes::from_static(b"fine")).await.unwrap();
        damage(&body_path(tmp.path(), &body));

        assert!(tier.get("k").await.unwrap().is_none());
        assert!(tier.get_meta("k").await.unwrap().is_none(), "index entry removed");
        assert_eq!(tier.entries(), 1);
        assert!(tier.get("other").await.unwrap().is_some());
        assert_accounting_matches_disk(&tier).await;
        // And it stays gone after a restart.
        drop(tier);
        let tier = open(tmp.path(), 1 << 20).await;
        assert!(tier.get("k").await.unwrap().is_none());
        assert_eq!(tier.entries(), 1);
    }

    #[tokio::test]
    async fn corrupt_content_is_a_miss_and_removed() {
        assert_broken_entry_is_dropped(|path| {
            let mut bytes = std::fs::read(path).unwrap();
            bytes[100..110].copy_from_slice(b"XXXXXXXXXX");
            std::fs::write(path, bytes).unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn truncated_content_is_a_miss_and_removed() {
        assert_broken_entry_is_dropped(|path| {
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(1000).unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn missing_content_is_a_miss_and_removed() {
        assert_broken_entry_is_dropped(|path| std::fs::remove_file(path).unwrap()).await;
    }

    #[tokio::test]
    async fn identical_bodies_share_content_until_the_last_key_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let body = Bytes::from_static(b"same bytes");
        tier.put("a", json!("a"), body.clone()).await.unwrap();
        tier.put("b", json!("b"), body.clone()).await.unwrap();
        assert_eq!(content_files(tmp.path()).len(), 1);

        assert!(tier.remove("a").await.unwrap());
        let (meta, got) = tier.get("b").await.unwrap().unwrap();
        assert_eq!((meta, got), (json!("b"), body.clone()));

        assert!(tier.remove("b").await.unwrap());
        assert!(!body_path(tmp.path(), &body).exists(), "last reference gone, content deleted");
    }

    #[tokio::test]
    async fn replacing_a_body_releases_the_old_content() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.put("k", json!(1), Bytes::from_static(b"first")).await.unwrap();
        tier.put("k", json!(2), Bytes::from_static(b"second")).await.unwrap();
        assert!(!body_path(tmp.path(), b"first").exists());
        assert_eq!(tier.get("k").await.unwrap().unwrap().1, Bytes::from_static(b"second"));
        assert_eq!(tier.entries(), 1);
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test]
    async fn update_meta_keeps_the_body() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.put("k", json!({"etag": "v1"}), Bytes::from_static(b"body")).await.unwrap();
        let files = content_files(tmp.path());
        assert!(tier.update_meta("k", json!({"etag": "v1", "date": "later"})).await.unwrap());

        let (meta, body) = tier.get("k").await.unwrap().unwrap();
        assert_eq!(meta, json!({"etag": "v1", "date": "later"}));
        assert_eq!(&body[..], b"body");
        assert_eq!(content_files(tmp.path()), files, "body not rewritten");
        assert_accounting_matches_disk(&tier).await;
        assert!(!tier.update_meta("absent", json!(1)).await.unwrap());

        // The update was written from what the map knows: a new process reads it back whole.
        drop(tier);
        let tier = open(tmp.path(), 1 << 20).await;
        let (meta, body) = tier.get("k").await.unwrap().unwrap();
        assert_eq!(meta, json!({"etag": "v1", "date": "later"}));
        assert_eq!(&body[..], b"body");
    }

    #[tokio::test]
    async fn sweep_deletes_orphans_but_not_shared_content() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let shared = Bytes::from_static(b"shared body");
        tier.put("a", json!(1), shared.clone()).await.unwrap();
        tier.put("b", json!(2), shared.clone()).await.unwrap();
        tier.remove("a").await.unwrap();
        // Content without index entry: what a kill between rename and index append leaves.
        let orphan = cacache::write_hash_sync(tmp.path(), b"orphan body").unwrap();
        let orphan_path = content_path(tmp.path(), &orphan);
        assert!(orphan_path.exists());

        let freed = tier.sweep().await.unwrap();
        assert!(freed >= b"orphan body".len() as u64);
        assert!(!orphan_path.exists());
        assert!(body_path(tmp.path(), &shared).exists());
        assert_eq!(tier.get("b").await.unwrap().unwrap().1, shared);
        assert_eq!(tier.sweep().await.unwrap(), 0, "nothing left to free");
    }

    #[tokio::test]
    async fn sweep_compacts_index_buckets() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.put("kept", json!(0), Bytes::from_static(b"k")).await.unwrap();
        for i in 1..=5 {
            tier.update_meta("kept", json!(i)).await.unwrap();
        }
        tier.put("gone", json!(0), Bytes::from_static(b"g")).await.unwrap();
        tier.remove("gone").await.unwrap();
        let before = buckets(tmp.path());
        assert_eq!(before.len(), 2);
        assert_eq!(before.iter().map(|b| lines_in(b)).sum::<usize>(), 6 + 2);

        assert!(tier.sweep().await.unwrap() > 0);
        let after = buckets(tmp.path());
        assert_eq!(after.len(), 1, "bucket of the deleted key removed");
        assert_eq!(lines_in(&after[0]), 1);
        assert_eq!(tier.get_meta("kept").await.unwrap(), Some(json!(5)));

        // cacache itself agrees after a restart.
        drop(tier);
        let tier = open(tmp.path(), 1 << 20).await;
        assert_eq!(tier.entries(), 1);
        assert_eq!(tier.get("kept").await.unwrap().unwrap(), (json!(5), Bytes::from_static(b"k")));
        assert!(tier.get("gone").await.unwrap().is_none());
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test]
    async fn sweep_drops_index_entries_the_tier_forgot() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.put("k", json!(1), Bytes::from_static(b"body")).await.unwrap();
        // As if an eviction's index delete had failed: memory forgot, disk did not.
        let forgotten = tier.inner.state().remove("k");
        assert!(forgotten.is_some());
        tier.sweep().await.unwrap();
        assert!(buckets(tmp.path()).is_empty());
        assert!(content_files(tmp.path()).is_empty());
    }

    #[tokio::test]
    async fn crash_leftovers_never_show_as_entries() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let tier = open(tmp.path(), 1 << 20).await;
            tier.put("k", json!("v1"), Bytes::from_static(b"complete")).await.unwrap();
        }
        // Killed mid-append of the next index line for `k`.
        let bucket = buckets(tmp.path()).pop().unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(&bucket).unwrap();
        file.write_all(b"\n3f2a9c\t{\"key\":\"k\",\"integ").unwrap();
        drop(file);
        // A bucket whose only line was torn.
        let torn = tmp.path().join(INDEX_DIR).join("ab/cd/ef0123456789");
        std::fs::create_dir_all(torn.parent().unwrap()).unwrap();
        std::fs::write(&torn, "\nabc\t{\"key\":\"ghost\",\"integrity\":\"sha256-").unwrap();
        // Killed mid-write of a body: a partial temp file.
        std::fs::create_dir_all(tmp.path().join(TMP_DIR)).unwrap();
        std::fs::write(tmp.path().join(TMP_DIR).join(".tmpPARTIAL"), b"half a bo").unwrap();

        let tier = open(tmp.path(), 1 << 20).await;
        assert_eq!(tier.entries(), 1);
        assert_eq!(tier.get("k").await.unwrap().unwrap(), (json!("v1"), Bytes::from_static(b"complete")));
        assert!(tier.get("ghost").await.unwrap().is_none());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_DIR))
            .collect();
        assert!(leftovers.is_empty(), "stale temp files deleted: {leftovers:?}");

        // The next append after a torn line is read normally.
        tier.put("k", json!("v2"), Bytes::from_static(b"second")).await.unwrap();
        drop(tier);
        let tier = open(tmp.path(), 1 << 20).await;
        assert_eq!(tier.get("k").await.unwrap().unwrap(), (json!("v2"), Bytes::from_static(b"second")));
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_of_one_key_leave_one_complete_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let body_of = |v: u64| Bytes::from(format!("body {v}").repeat(50));
        for round in 0..30 {
            let tasks: Vec<_> = (0..4)
                .map(|writer| {
                    let tier = tier.clone();
                    let v = round * 100 + writer;
                    tokio::spawn(async move { tier.put("k", json!({"v": v}), body_of(v)).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let (meta, body) = tier.get("k").await.unwrap().expect("one complete entry");
            assert_eq!(body, body_of(meta["v"].as_u64().unwrap()), "meta and body belong together");
            let on_disk = cacache::index::find(tmp.path(), "k").unwrap().unwrap();
            let in_memory = tier.inner.state().entries["k"].content.clone();
            assert_eq!(Some(&*in_memory), content_id(&on_disk.integrity).as_deref(), "memory follows the index");
            assert_eq!(tier.entries(), 1);
            assert_eq!(content_files(tmp.path()).len(), 1, "replaced bodies released");
        }
        drop(tier);
        let tier = open(tmp.path(), 1 << 20).await;
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test]
    async fn write_failure_is_an_error_and_not_sticky() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.put("old", json!(1), Bytes::from_static(b"old")).await.unwrap();

        // Root ignores permission bits, so provoke the failure in a way that holds for root
        // too: cacache's temp folder is a regular file.
        let tmp_dir = tmp.path().join(TMP_DIR);
        let _ = std::fs::remove_dir_all(&tmp_dir);
        std::fs::write(&tmp_dir, b"not a directory").unwrap();
        assert!(tier.put("new", json!(1), Bytes::from_static(b"new")).await.is_err());
        assert!(tier.get("new").await.unwrap().is_none());
        assert_eq!(tier.get("old").await.unwrap().unwrap().1, Bytes::from_static(b"old"));
        assert_eq!(tier.entries(), 1);

        std::fs::remove_file(&tmp_dir).unwrap();
        tier.put("new", json!(1), Bytes::from_static(b"new")).await.unwrap();
        assert_eq!(tier.get("new").await.unwrap().unwrap().1, Bytes::from_static(b"new"));
        assert_accounting_matches_disk(&tier).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn read_only_directory_makes_put_fail() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let tier = open(&dir, 1 << 20).await;
        tier.put("k", json!(1), Bytes::from_static(b"v")).await.unwrap();
        let set_mode = |mode: u32| {
            let mut all = vec![dir.clone()];
            let mut i = 0;
            while i < all.len() {
                if let Ok(listing) = std::fs::read_dir(&all[i]) {
                    all.extend(listing.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
                }
                i += 1;
            }
            for d in &all {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        };
        set_mode(0o555);
        // Running as root, permission bits do not stop writes: then only check there is no panic.
        let enforced = std::fs::write(dir.join("probe"), b"x").is_err();
        let result = tier.put("k2", json!(1), Bytes::from_static(b"v2")).await;
        if enforced {
            assert!(result.is_err());
            assert!(tier.get("k").await.unwrap().is_some());
        }
        set_mode(0o755);
        tier.put("k3", json!(1), Bytes::from_static(b"v3")).await.unwrap();
        assert!(tier.get("k3").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn list_returns_live_keys_with_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        for key in ["x", "y", "z"] {
            tier.put(key, json!({"tag": key}), Bytes::from_static(b"b")).await.unwrap();
        }
        tier.remove("y").await.unwrap();
        let mut listed = tier.list().await.unwrap();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(listed, vec![("x".to_owned(), json!({"tag": "x"})), ("z".to_owned(), json!({"tag": "z"}))]);
    }

    #[tokio::test]
    async fn hand_edited_index_lines_do_not_stop_the_load_or_a_get() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let tier = open(dir, 1 << 20).await;
            tier.put("good", json!(1), Bytes::from_static(b"good")).await.unwrap();
        }
        // A checksummed line whose integrity does not parse: `index::ls` unwraps it.
        let json = r#"{"key":"bad","integrity":"garbage","time":1,"size":0,"metadata":null,"raw_metadata":null}"#;
        let line = format!("\n{:x}\t{json}", Sha256::digest(json.as_bytes()));
        std::fs::create_dir_all(dir.join(INDEX_DIR).join("00/00")).unwrap();
        std::fs::write(dir.join(INDEX_DIR).join("00/00/0000"), line).unwrap();
        // An integrity that parses but whose digest is not base64: cacache's read unwraps it.
        let weird: Integrity = "sha256-!!!!".parse().unwrap();
        cacache::index::insert(dir, "weird", WriteOpts::new().integrity(weird)).unwrap();

        let tier = open(dir, 1 << 20).await;
        assert!(tier.get("good").await.unwrap().is_some(), "load went past the bad bucket");
        assert!(tier.get("bad").await.unwrap().is_none());
        assert!(tier.get("weird").await.unwrap().is_none(), "a miss, not an error");
        assert!(tier.get_meta("weird").await.unwrap().is_none(), "and removed");
        assert_eq!(tier.entries(), 1);
        assert_eq!(tier.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn load_neither_resurrects_removed_keys_nor_downgrades_newer_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.put("newer", json!(1), Bytes::from_static(b"newer")).await.unwrap();
        let charged = tier.used_bytes();
        tier.inner.state().tombstones.insert(Arc::from("removed"));
        let loaded = |key: &str| Loaded {
            key: key.to_owned(),
            content: content_id(&Integrity::from(key)).unwrap(),
            charge: 10,
            size: 5,
            millis: 1,
        };
        let mut batch = vec![loaded("newer"), loaded("removed"), loaded("plain")];
        assert_eq!(tier.inner.merge_loaded(&mut batch), 1);
        let st = tier.inner.state();
        assert_eq!(st.used, charged + 10);
        assert!(!st.entries.contains_key("removed"));
        // Loaded entries carry their old write time: first in line for eviction.
        assert_eq!(st.lru.first_key_value().map(|(_, k)| &**k), Some("plain"));
    }

    #[test]
    fn layout_and_line_format_match_cacache() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let sri = cacache::write_sync(dir, "key", b"payload").unwrap();
        assert!(content_path(dir, &sri).exists());
        assert_eq!(id_of_content_path(&dir.join(CONTENT_DIR), &content_path(dir, &sri)), content_id(&sri));
        cacache::index::insert(dir, "key", WriteOpts::new().integrity(sri.clone()).metadata(json!({"a": 1}))).unwrap();
        cacache::index::delete(dir, "key").unwrap();
        cacache::index::insert(dir, "key", WriteOpts::new().integrity(sri.clone()).size(7)).unwrap();
        let [bucket] = buckets(dir).try_into().unwrap();
        let parsed = read_bucket(&bucket).unwrap();
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(parsed.entries[0].0, "key");
        assert_eq!(parsed.entries[0].1.as_deref(), Some(sri.to_string().as_str()));
        assert!(!parsed.is_compact());
        // The rewritten form is what cacache writes for a single insert, and reads back.
        std::fs::write(&bucket, format!("\n{}", parsed.entries[0].2)).unwrap();
        assert!(read_bucket(&bucket).unwrap().is_compact());
        let m = cacache::index::find(dir, "key").unwrap().unwrap();
        assert_eq!((m.integrity, m.size), (sri, 7));
    }
}
