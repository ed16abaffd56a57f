//! Garbage collection: index buckets compacted to their live line, and
//! content files nothing references deleted.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::spawn_blocking;
use tracing::{info, warn};

use super::*;

/// A bucket file with no valid line is deleted by `sweep` only when older than this, so that a
/// first append racing with the sweep is not lost.
const JUNK_BUCKET_GRACE: Duration = Duration::from_secs(60);

impl DiskTier {
    /// Sweeps in the background every `every`, and after every `after_writes`
    /// index lines appended (0: by time only), so that buckets stay a line or
    /// so whatever the refreshes, soft purges and overwrites. One sweep at a
    /// time; the task ends with the tier.
    pub fn schedule_sweeps(&self, every: Duration, after_writes: u64) {
        self.inner.sweep_after.store(after_writes, Ordering::Relaxed);
        let (tier, due) = (Arc::downgrade(&self.inner), self.inner.sweep_due.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = due.notified() => {}
                }
                let Some(inner) = tier.upgrade() else { return };
                // A tier let go of sweeps no more: the directory may be another process's.
                let Ok(held) = inner.holding() else { return };
                let swept = inner.sweep().await;
                drop(held);
                if let Err(e) = swept {
                    warn!(error = %e, "disk cache: scheduled sweep failed");
                }
            }
        });
    }
}

impl Inner {
    /// One more index line; wakes the sweeper every `sweep_after` of them.
    pub(super) fn appended(&self) {
        let n = self.appends.fetch_add(1, Ordering::Relaxed) + 1;
        let after = self.sweep_after.load(Ordering::Relaxed);
        if after > 0 && n.is_multiple_of(after) {
            self.sweep_due.notify_one();
        }
    }

    // ---- sweep ----

    pub(super) async fn sweep(self: Arc<Self>) -> Result<u64, DiskError> {
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
    pub(super) fn scan_index_blocking(&self) -> IndexScan {
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
                        && integrity
                            .as_deref()
                            .and_then(id_of_integrity_str)
                            .is_some_and(|id| self.state().get(key).is_some_and(|e| e.content.is_none_or(|c| c == id)));
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
    pub(super) fn compact_bucket_blocking(&self, path: &Path, key: &str) -> Compacted {
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
            (st.get(key).map(|e| e.content.is_none_or(|c| c == id)), st.load_ok)
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
    pub(super) fn rewrite_bucket(&self, path: &Path, line: &str) -> io::Result<u64> {
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
    pub(super) fn sweep_content_blocking(&self, keep: &HashSet<ContentId>) -> u64 {
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
            if self.state().is_referenced(&id) {
                return;
            }
            freed += remove_file_counted(path);
        });
        freed
    }
}

#[derive(Default)]
pub(super) struct IndexScan {
    /// (bucket path, its key) to compact or delete under the key lock.
    pub(super) candidates: Vec<(PathBuf, String)>,
    /// Content ids referenced by index lines the map does not account for.
    pub(super) keep: HashSet<ContentId>,
    pub(super) freed: u64,
}

#[derive(Default)]
pub(super) struct Compacted {
    pub(super) freed: u64,
    pub(super) keep: Vec<ContentId>,
}

#[cfg(test)]
mod scheduled {
    use super::super::testing::*;
    use super::*;
    use serde_json::json;

    async fn wait_for(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// A key refreshed 1,000 times (304s, soft purges) leaves a bucket of a
    /// line or so, and a restart reads its last version.
    #[tokio::test]
    async fn refreshes_do_not_grow_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.schedule_sweeps(Duration::from_secs(3600), 100);
        tier.put("k", json!({"v": -1}), Bytes::from_static(b"body")).await.unwrap();
        for i in 0..1000 {
            assert!(tier.update_meta("k", json!({"v": i})).await.unwrap());
        }
        let [bucket] = buckets(tmp.path()).try_into().unwrap();
        assert!(wait_for(|| lines_in(&bucket) <= 2).await, "{} lines in the bucket", lines_in(&bucket));
        drop(tier);
        let tier = open(tmp.path(), 1 << 20).await;
        let (meta, body) = tier.get("k").await.unwrap().unwrap();
        assert_eq!((meta, &body[..]), (json!({"v": 999}), &b"body"[..]));
    }

    /// Sweeps read the whole index: new keys, which leave no dead line, must
    /// not bring them (a cold fill of a million entries would read it a hundred times).
    #[tokio::test]
    async fn only_lines_left_dead_count_towards_a_sweep() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        for i in 0..50 {
            tier.put(&format!("k{i}"), json!({}), Bytes::from_static(b"b")).await.unwrap();
        }
        assert_eq!(tier.inner.appends.load(Ordering::Relaxed), 0);
        tier.put("k1", json!({"v": 2}), Bytes::from_static(b"b")).await.unwrap();
        tier.update_meta("k2", json!({"v": 2})).await.unwrap();
        tier.remove("k3").await.unwrap();
        assert_eq!(tier.inner.appends.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_sweep_also_comes_with_time() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        tier.schedule_sweeps(Duration::from_millis(100), 0);
        tier.put("k", json!({"v": 0}), Bytes::from_static(b"body")).await.unwrap();
        for i in 1..50 {
            tier.update_meta("k", json!({"v": i})).await.unwrap();
        }
        let [bucket] = buckets(tmp.path()).try_into().unwrap();
        assert!(wait_for(|| lines_in(&bucket) <= 2).await, "{} lines in the bucket", lines_in(&bucket));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    #[allow(unused_imports)]
    use cacache::{Integrity, WriteOpts};
    #[allow(unused_imports)]
    use sha2::{Digest, Sha256};
    #[allow(unused_imports)]
    use std::io::Write as _;

    #[allow(unused_imports)]
    use super::*;

    use serde_json::json;

    #[tokio::test]
    async fn sweep_deletes_orphans_but_not_shared_content() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let shared = filed("shared body");
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
}
