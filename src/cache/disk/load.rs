//! The startup load: rebuilding the accounting from the index in the
//! background, and listing it.

use std::collections::HashSet;
use std::io::{self};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cacache::Integrity;
use serde_json::Value;
use tokio::task::spawn_blocking;
use tracing::{error, info, warn};

use super::*;

/// Entries merged into the map per lock acquisition during the startup load.
const LOAD_BATCH: usize = 1024;
impl Inner {
    // ---- startup load ----

    pub(super) async fn load(self: Arc<Self>) {
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
            st.link_loaded();
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

    pub(super) fn load_blocking(&self) -> usize {
        self.remove_stale_tmp();
        if !self.dir.join(INDEX_DIR).is_dir() {
            return 0;
        }
        if let Some(loaded) = self.load_snapshot() {
            return loaded;
        }
        let mut merged = 0;
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        // Lines whose content cannot be named (a hand-edited integrity): never readable.
        let mut broken = Vec::new();
        for m in index_entries(&self.dir) {
            let line = unwrap(m.metadata);
            let content = match line.inline {
                Some(_) => None,
                None => content_id(&m.integrity),
            };
            if line.inline.is_none() && content.is_none() {
                broken.push(m.key);
                continue;
            }
            batch.push(Loaded {
                charge: charge(m.key.len(), json_len(&line.meta), m.size as u64),
                size: m.size as u64,
                key: m.key,
                content,
                label: line.label,
                listed: line.listed,
                millis: u64::try_from(m.time).unwrap_or(u64::MAX),
            });
            if batch.len() >= LOAD_BATCH {
                merged += self.merge_loaded(&mut batch);
            }
        }
        merged += self.merge_loaded(&mut batch);
        for key in broken {
            warn!(key, "disk cache: dropping an entry whose integrity is unreadable");
            if let Err(e) = cacache::index::delete(&self.dir, &key) {
                warn!(key, error = %e, "disk cache: cannot delete broken entry");
            }
        }
        merged
    }

    /// The map from the snapshot the last process left (see `snapshot.rs`), if any.
    fn load_snapshot(&self) -> Option<usize> {
        let data = snapshot::take(&self.dir)?;
        let mut merged = 0;
        let mut order = 0;
        let mut guard = None;
        let read = snapshot::each(&data, |saved| {
            let key = saved.text.map_or_else(|| hex::encode(saved.name), str::to_owned);
            order += 1;
            if order % LOAD_BATCH as u64 == 0 {
                // Lookups meanwhile wait for one batch at most.
                guard = None;
            }
            let st = guard.get_or_insert_with(|| self.state());
            if st.contains(&key) || st.tombstones.contains(key.as_str()) {
                return;
            }
            st.restore(saved, order);
            merged += 1;
        });
        drop(guard);
        match read {
            Some(_) => Some(merged),
            None => {
                warn!("disk cache: the map snapshot does not add up; reading the index");
                None
            }
        }
    }

    /// Adds loaded entries unless a put, update or get since `open` already placed the key
    /// (that is newer) or a remove since `open` deleted it.
    pub(super) fn merge_loaded(&self, batch: &mut Vec<Loaded>) -> usize {
        let mut st = self.state();
        let mut merged = 0;
        for entry in batch.drain(..) {
            if st.contains(&entry.key) || st.tombstones.contains(entry.key.as_str()) {
                continue;
            }
            st.insert_loaded(&entry.key, entry.charge, entry.content.as_ref(), entry.size, entry.label, entry.millis);
            st.set_listed(&entry.key, entry.listed);
            merged += 1;
        }
        merged
    }

    pub(super) fn remove_stale_tmp(&self) {
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
    pub(super) fn adopt(&self, key: &str, meta: &Value, size: usize, sri: &Integrity, filed: bool, marks: (u64, bool)) {
        let content = match filed {
            true => match content_id(sri) {
                Some(id) => Some(id),
                None => return,
            },
            false => None,
        };
        let charge = charge(key.len(), json_len(meta), size as u64);
        let mut st = self.state();
        if st.loaded || st.contains(key) || st.tombstones.contains(key) {
            return;
        }
        st.insert(key, charge, content.as_ref(), size as u64, marks.0);
        st.set_listed(key, marks.1);
    }
}

pub(super) struct Loaded {
    pub(super) key: String,
    pub(super) content: Option<ContentId>,
    pub(super) label: u64,
    pub(super) listed: bool,
    pub(super) charge: u64,
    pub(super) size: u64,
    pub(super) millis: u64,
}

pub(super) fn list_blocking(dir: &Path) -> Vec<(String, Value)> {
    index_entries(dir).map(|m| (m.key, split_inline(m.metadata).0)).collect()
}

/// Live index entries, from `cacache::index::ls`. Unreadable buckets are logged and skipped,
/// and so are buckets that make `ls` panic: it unwraps the integrity of any line whose
/// checksum is valid, so one hand-edited line would otherwise end the whole listing.
pub(super) fn index_entries(dir: &Path) -> impl Iterator<Item = cacache::Metadata> {
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

pub(super) fn prepare_dir(dir: &Path) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    #[allow(unused_imports)]
    use super::*;
    #[allow(unused_imports)]
    use cacache::{Integrity, WriteOpts};
    #[allow(unused_imports)]
    use sha2::{Digest, Sha256};
    #[allow(unused_imports)]
    use std::io::Write as _;

    use serde_json::json;

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
        tier.inner.state().tombstones.insert("removed".into());
        let loaded = |key: &str| Loaded {
            key: key.to_owned(),
            content: content_id(&Integrity::from(key)),
            label: 0,
            listed: false,
            charge: 10,
            size: 5,
            millis: 1,
        };
        let mut batch = vec![loaded("newer"), loaded("removed"), loaded("plain")];
        assert_eq!(tier.inner.merge_loaded(&mut batch), 1);
        let mut st = tier.inner.state();
        assert_eq!(st.used, charged + 10);
        assert!(!st.contains("removed"));
        // Loaded entries carry their old write time: first in line for eviction.
        st.link_loaded();
        assert_eq!(st.pop_lru().map(|(k, _)| k).as_deref(), Some("plain"));
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
}
