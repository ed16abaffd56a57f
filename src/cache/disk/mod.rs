//! Disk tier: metadata and bodies under one directory, stored with `cacache`, kept under a
//! byte budget with least-recently-used eviction.
//!
//! The tier knows nothing of HTTP. Per key (a hex string such as a SHA-256) it stores a JSON
//! metadata value, carried in the cacache index entry, and a body, stored content-addressed
//! (SHA-256) and integrity-checked on every read. A body of at most `INLINE_MAX` bytes is
//! kept in the index line itself (see `layout::with_inline`): one file per small entry.
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
//! their own byte accounting, and `open` moves the `tmp` folder of a previous run aside. So
//! `open` takes an exclusive lock on `relais.lock` in it first (see `lock.rs`) and refuses a
//! directory another process holds.
//!
//! Startup does not scan: [`DiskTier::open`] returns at once and a background task rebuilds the
//! map from `cacache::index::ls` (see [`DiskTier::open`] for what happens meanwhile).

mod accounting;
mod evict;
mod layout;
mod load;
mod lock;
mod read;
mod scan;
mod snapshot;
mod stream;
mod sweep;
#[cfg(test)]
mod testing;
mod write;
pub(super) mod writer;

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::spawn_blocking;

use accounting::{ContentId, State, charge, json_len};
use layout::*;
use load::{list_blocking, prepare_dir};
pub use stream::BodyFile;
pub(crate) use stream::{DiskBody, DiskWriter};

/// Key stripes serialising index writes per key.
const STRIPES: usize = 64;
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
    /// A write panicked on a writer thread, or the writer threads are gone.
    #[error("disk cache writer failed")]
    Writer,
    /// Another process has the directory open (its lock file names it).
    #[error("{}", lock::locked_message(dir, pid))]
    Locked { dir: PathBuf, pid: Option<u32> },
    /// [`DiskTier::unlock`] was called: the directory is another process's once the writes
    /// in flight end.
    #[error("disk cache closed: the directory was let go (a stop or a binary upgrade)")]
    Closed,
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
    /// load task. Before that, the directory's lock is taken: a directory another process has
    /// open is [`DiskError::Locked`].
    pub async fn open(dir: PathBuf, capacity: u64) -> Result<Arc<DiskTier>, DiskError> {
        let prepare = dir.clone();
        let lock = spawn_blocking(move || {
            std::fs::create_dir_all(&prepare)?;
            let lock = lock::DirLock::take(&prepare)?;
            prepare_dir(&prepare)?;
            Ok::<_, DiskError>(lock)
        })
        .await??;
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
            appends: AtomicU64::new(0),
            sweep_after: AtomicU64::new(0),
            sweep_due: Arc::new(tokio::sync::Notify::new()),
            tmp_seq: AtomicU64::new(0),
            on_evict: std::sync::OnceLock::new(),
            lock: Mutex::new(Some(Arc::new(lock))),
        });
        if let Some(lock) = &*inner.lock.lock().unwrap_or_else(PoisonError::into_inner) {
            // Let go of while the tier lives on (a stop, an upgrade): the next open reads
            // the map from a snapshot. A tier dropped without that leaves none, as a crash.
            let tier = Arc::downgrade(&inner);
            lock.before_release(move || {
                if let Some(inner) = tier.upgrade() {
                    inner.save_snapshot();
                }
            });
        }
        tokio::spawn(inner.clone().load());
        Ok(Arc::new(DiskTier { inner }))
    }

    /// Lets go of the directory's lock (a stopped proxy, or one handing over to a new
    /// binary, so that the next can open it). Writes started after this are refused
    /// ([`DiskError::Closed`]); those in flight hold the lock until they end, so that one
    /// process writes at a time. Reads go on: cacache's are safe beside another writer.
    /// As the lock goes, a snapshot of the map is written for the next open to read
    /// instead of the whole index (the last write in flight writes it, blocking).
    pub fn unlock(&self) {
        self.inner.lock.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Runs a mutating operation in its own task so that it completes even if the caller's
    /// future is dropped half-way, holding the directory's lock until it ends.
    async fn detached<T: Send + 'static>(
        &self,
        op: impl Future<Output = Result<T, DiskError>> + Send + 'static,
    ) -> Result<T, DiskError> {
        let held = self.inner.holding()?;
        tokio::spawn(async move {
            let done = op.await;
            drop(held);
            done
        })
        .await?
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
        self.lookup(key, true, u64::MAX).await.map(|hit| hit.map(|f| (f.meta, Bytes::from(f.body.unwrap_or_default()))))
    }

    /// Only the metadata of `key` (for purge and debug listings): no body read, no recency
    /// update.
    pub async fn get_meta(&self, key: &str) -> Result<Option<Value>, DiskError> {
        self.lookup(key, false, 0).await.map(|hit| hit.map(|f| f.meta))
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
        self.put_labelled(key, 0, false, meta, body).await
    }

    /// [`DiskTier::put`] with a label (not 0) the entry is found by later with
    /// [`DiskTier::labelled`]: the keys that belong together, such as a URL's. A
    /// `listed` entry is one [`DiskTier::listed_with`] lists. Both are kept in the
    /// index line and come back after a restart.
    pub async fn put_labelled(
        &self,
        key: &str,
        label: u64,
        listed: bool,
        meta: Value,
        body: Bytes,
    ) -> Result<(), DiskError> {
        // A first write leaves no dead line behind: a cold fill never wakes the sweeper.
        if self.contains(key) {
            self.inner.appended();
        }
        self.detached(self.inner.clone().put(key.to_owned(), label, listed, meta, body)).await
    }

    /// Like [`DiskTier::list_with`] for the entries put `listed` only: their
    /// metadata is read from the index, not the whole index (once loaded).
    pub async fn listed_with<T: Send + 'static>(
        &self,
        f: impl Fn(String, Value) -> Option<T> + Send + 'static,
    ) -> Result<Vec<T>, DiskError> {
        self.loaded().await;
        let keys = self.inner.state().listed();
        let dir = self.inner.dir.clone();
        Ok(spawn_blocking(move || {
            keys.into_iter()
                .filter_map(|key| {
                    let m = cacache::index::find(&dir, &key).ok()??;
                    f(key, layout::unwrap(m.metadata).meta)
                })
                .collect()
        })
        .await?)
    }

    /// Keys stored with `label` (no I/O). Partial until the startup load is done.
    pub fn labelled(&self, label: u64) -> Vec<String> {
        self.inner.state().labelled(label)
    }

    /// Replaces the metadata of an existing entry without rewriting its body (a 304
    /// revalidation updating headers); also marks it most recently used. `Ok(false)` if `key`
    /// is absent.
    pub async fn update_meta(&self, key: &str, meta: Value) -> Result<bool, DiskError> {
        self.inner.appended();
        self.detached(self.inner.clone().update_meta(key.to_owned(), meta)).await
    }

    /// Removes `key`; its content file too unless another key shares it. `Ok(true)` if it was
    /// there. On `Err` the entry is still forgotten by this process (never served again) but
    /// may reappear after a restart.
    pub async fn remove(&self, key: &str) -> Result<bool, DiskError> {
        self.inner.appended();
        self.detached(self.inner.clone().remove(key.to_owned())).await
    }

    /// Every live key with its metadata, read from the index on disk (for purge by prefix or
    /// tag after a restart). Slow on a large cache: it reads every index bucket, in
    /// `spawn_blocking`.
    pub async fn list(&self) -> Result<Vec<(String, Value)>, DiskError> {
        let dir = self.inner.dir.clone();
        Ok(spawn_blocking(move || list_blocking(&dir)).await?)
    }

    /// Like [`DiskTier::list`], keeping only what `f` makes of each entry as it
    /// is read (a large cache's metadata is never held all at once), and faster:
    /// two threads, each bucket's last line only (`scan.rs`).
    pub async fn list_with<T: Send + 'static>(
        &self,
        f: impl Fn(String, Value) -> Option<T> + Send + Sync + 'static,
    ) -> Result<Vec<T>, DiskError> {
        let dir = self.inner.dir.clone();
        Ok(spawn_blocking(move || scan::scan(&dir, &f)).await?)
    }

    /// Bytes charged for the live entries: per entry body + metadata JSON + key + a fixed
    /// allowance for the index line. Partial until the startup load is done.
    pub fn used_bytes(&self) -> u64 {
        self.inner.state().used
    }

    /// Whether the key is known live (no I/O). Partial until the startup load is done.
    pub fn contains(&self, key: &str) -> bool {
        self.inner.state().contains(key)
    }

    /// Body size of a live entry (no I/O, no recency update).
    pub fn size_of(&self, key: &str) -> Option<u64> {
        self.inner.state().get(key).map(|e| e.size)
    }

    /// Number of live entries. Partial until the startup load is done.
    pub fn entries(&self) -> usize {
        self.inner.state().len()
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
        self.detached(self.inner.clone().sweep()).await
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
    /// Index lines appended that leave an older line dead (replacing puts, metadata
    /// updates, removals), for sweeping after so many.
    appends: AtomicU64,
    /// Appends between scheduled sweeps; 0: by time only.
    sweep_after: AtomicU64,
    sweep_due: Arc<tokio::sync::Notify>,
    tmp_seq: AtomicU64,
    /// Told each key evicted to stay under `capacity`.
    on_evict: std::sync::OnceLock<EvictHook>,
    /// The directory's lock, until [`DiskTier::unlock`]; a write in flight holds a clone.
    lock: Mutex<Option<Arc<lock::DirLock>>>,
}

type EvictHook = Box<dyn Fn(&str) + Send + Sync>;

impl Inner {
    /// The directory's lock, for a write about to start; `Closed` once let go.
    fn holding(&self) -> Result<Arc<lock::DirLock>, DiskError> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner).clone().ok_or(DiskError::Closed)
    }

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

    /// Writes the map's snapshot, if the map is whole.
    fn save_snapshot(&self) {
        let st = self.state();
        if !st.loaded || !st.load_ok {
            return;
        }
        let started = std::time::Instant::now();
        match snapshot::save(&self.dir, &st) {
            Ok(entries) => tracing::info!(
                dir = %self.dir.display(),
                entries,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "disk cache: map saved for the next start"
            ),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "disk cache: cannot save the map; the next start reads the index")
            }
        }
    }

    async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        // The sender lives in `self`: `wait_for` cannot fail while we hold `self`.
        let _ = rx.wait_for(|done| *done).await;
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    #[allow(unused_imports)]
    use cacache::{Integrity, WriteOpts};
    use serde_json::json;
    #[allow(unused_imports)]
    use sha2::{Digest, Sha256};
    #[allow(unused_imports)]
    use std::io::Write as _;

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
}
