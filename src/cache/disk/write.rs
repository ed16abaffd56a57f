//! Writes: put, metadata updates, removals, and dropping broken entries, each
//! under its key's lock together with the matching accounting.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cacache::{Algorithm, Integrity, WriteOpts};
use serde_json::Value;
use sha2::Digest;
use tokio::task::spawn_blocking;
use tracing::{debug, warn};

use super::*;

impl Inner {
    // ---- writes ----

    pub(super) async fn put(
        self: Arc<Self>,
        key: String,
        label: u64,
        listed: bool,
        meta: Value,
        body: Bytes,
    ) -> Result<(), DiskError> {
        let charge = charge(key.len(), json_len(&meta), body.len() as u64);
        if charge > self.capacity {
            debug!(key, charge, capacity = self.capacity, "disk cache: entry larger than capacity, not stored");
            self.remove(key).await?;
            return Ok(());
        }
        let size = body.len();
        let (content, sri, meta) = if size <= INLINE_MAX {
            // No content file: the body goes in the index line.
            let digest = format!("{:x}", sha2::Sha256::digest(&body));
            let sri = Integrity::from_hex(digest, Algorithm::Sha256).map_err(io::Error::other)?;
            (None, sri, wrap(meta, Some(&body), label, listed))
        } else {
            let me = self.clone();
            let (content, sri) = spawn_blocking(move || me.write_content_blocking(&body)).await??;
            (Some(content), sri, wrap(meta, None, label, listed))
        };
        self.commit_entry(key, meta, (content, sri), size, charge, (label, listed)).await
    }

    /// Appends `key`'s index line (`meta` as [`wrap`] made it) for content already
    /// written and reserved (`content`, `sri`; no content: the body is in the line),
    /// charges it and evicts. On failure the reservation is dropped (and the
    /// content released if nothing else holds it).
    pub(super) async fn commit_entry(
        self: &Arc<Self>,
        key: String,
        meta: Value,
        (content, sri): (Option<ContentId>, Integrity),
        size: usize,
        charge: u64,
        (label, listed): (u64, bool),
    ) -> Result<(), DiskError> {
        let stored = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            let opts = WriteOpts::new().integrity(sri).size(size).metadata(meta);
            let insert = move || Ok(cacache::index::insert(&dir, &owned_key, opts)?);
            // A small entry's cost is its file, not its bytes: deferred to the low-priority
            // writers. A large body waiting would hold its memory; it goes at once.
            let inserted = match size <= INLINE_MAX {
                true => writer::write(insert).await,
                false => spawn_blocking(insert).await.map_err(DiskError::from).and_then(|r| r),
            };
            inserted.map(|_| {
                let mut st = self.state();
                st.tombstones.remove(key.as_str());
                let orphan = st.insert(&key, charge, content.as_ref(), size as u64, label);
                st.set_listed(&key, listed);
                // The entry now holds a reference of its own: drop the write's reservation.
                if let Some(content) = &content {
                    st.drop_ref(content);
                }
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
                if let Some(content) = content
                    && self.state().drop_ref(&content)
                {
                    self.release_content(vec![content]).await;
                }
                Err(e)
            }
        }
    }

    /// Writes `body` to the content store and reserves it (refcount + 1) so no concurrent
    /// eviction or sweep deletes it before the index entry exists.
    pub(super) fn write_content_blocking(&self, body: &[u8]) -> Result<(ContentId, Integrity), DiskError> {
        let sri = write_content(&self.dir, body)?;
        let id = content_id(&sri).ok_or_else(|| io::Error::other("cacache returned an empty integrity"))?;
        let id = {
            let _gate = self.gate();
            self.state().add_ref(&id);
            id
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

    pub(super) async fn update_meta(self: Arc<Self>, key: String, meta: Value) -> Result<bool, DiskError> {
        let meta_len = json_len(&meta);
        let orphan = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            // Once loaded, the map knows what the key's last index line says (both change
            // under this lock): no need to read and parse its bucket first.
            let known = {
                let st = self.state();
                let entry = st.get(key.as_str()).filter(|_| st.loaded);
                let listed = st.is_listed(&key);
                entry.and_then(|e| Some((integrity_of(&e.content?)?, e.size as usize, e.label, listed)))
            };
            let found = spawn_blocking(move || -> Result<_, DiskError> {
                let (sri, size, inline, label, listed) = match known {
                    Some((sri, size, label, listed)) => (sri, size, None, label, listed),
                    // A small body may live in the line being replaced: carry it over.
                    _ => match cacache::index::find(&dir, &owned_key)? {
                        Some(m) => {
                            let line = unwrap(m.metadata);
                            (m.integrity, m.size, line.inline, line.label, line.listed)
                        }
                        None => return Ok(None),
                    },
                };
                let filed = inline.is_none();
                let meta = match inline {
                    Some(Some(body)) => wrap(meta, Some(&body), label, listed),
                    // Undecodable: the next read finds it broken and removes it.
                    _ => wrap(meta, None, label, listed),
                };
                let opts = WriteOpts::new().integrity(sri.clone()).size(size).metadata(meta);
                cacache::index::insert(&dir, &owned_key, opts)?;
                Ok(Some((sri, size, filed, label, listed)))
            })
            .await??;
            let Some((sri, size, filed, label, listed)) = found else {
                return Ok(false);
            };
            let content = match filed {
                true => match content_id(&sri) {
                    Some(id) => Some(id),
                    None => return Ok(true),
                },
                false => None,
            };
            let mut st = self.state();
            st.tombstones.remove(key.as_str());
            // Also places an entry the load has not reached yet.
            let orphan =
                st.insert(&key, charge(key.len(), meta_len, size as u64), content.as_ref(), size as u64, label);
            st.set_listed(&key, listed);
            orphan
        };
        if let Some(old) = orphan {
            self.release_content(vec![old]).await;
        }
        self.evict().await;
        Ok(true)
    }

    pub(super) async fn remove(self: Arc<Self>, key: String) -> Result<bool, DiskError> {
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
                st.tombstones.insert(key.as_str().into());
            }
            (on_disk, removed)
        };
        let known = removed.is_some();
        if let Some((Some(content), true)) = removed {
            self.release_content(vec![content]).await;
        }
        Ok(on_disk? || known)
    }

    /// `get` found the map and the index disagreeing (the index has no entry): fix the map.
    pub(super) async fn forget_if_absent(self: Arc<Self>, key: String) -> Result<(), DiskError> {
        let removed = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            let found = spawn_blocking(move || cacache::index::find(&dir, &owned_key)).await??;
            if found.is_some() {
                return Ok(());
            }
            self.state().remove(&key)
        };
        if let Some((Some(content), true)) = removed {
            self.release_content(vec![content]).await;
        }
        Ok(())
    }

    /// Removes an entry whose content failed to read or verify (`sri`), or whose index bucket
    /// could not be read (`None`) — unless a put replaced it in the meantime.
    pub(super) async fn drop_broken(self: Arc<Self>, key: String, sri: Option<Integrity>) -> Result<(), DiskError> {
        let removed = {
            let _key_lock = self.stripe(&key).lock().await;
            let (dir, owned_key) = (self.dir.clone(), key.clone());
            // Whether a put replaced the broken line (the map then holds the new entry).
            let replaced = spawn_blocking(move || -> Result<bool, DiskError> {
                if let Some(expected) = sri {
                    match cacache::index::find(&dir, &owned_key)? {
                        Some(m) if m.integrity == expected => {}
                        Some(_) => return Ok(true),
                        None => return Ok(false),
                    }
                }
                cacache::index::delete(&dir, &owned_key)?;
                Ok(false)
            })
            .await;
            let replaced = match replaced {
                Ok(Ok(replaced)) => replaced,
                Ok(Err(e)) => {
                    warn!(key, error = %e, "disk cache: cannot delete broken entry");
                    false
                }
                Err(e) => {
                    warn!(key, error = %e, "disk cache: cannot delete broken entry");
                    false
                }
            };
            if replaced { None } else { self.state().remove(&key) }
        };
        if let Some((Some(content), true)) = removed {
            self.release_content(vec![content]).await;
        }
        Ok(())
    }
}

/// Writes `body` as content (temp file, then rename to its hash path).
pub(super) fn write_content(dir: &Path, body: &[u8]) -> Result<Integrity, DiskError> {
    // No `.size()`: with the `mmap` feature a known size up to 1 MiB selects an mmap'd temp file
    // sized with posix_fallocate, which fails (EINVAL) for an empty body.
    let mut writer = WriteOpts::new().algorithm(Algorithm::Sha256).open_hash_sync(dir)?;
    writer.write_all(body)?;
    Ok(writer.commit()?)
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

    /// A small body lives in its index line: one file per entry, checked against
    /// its SHA-256 on every read, kept through metadata updates and restarts.
    #[tokio::test]
    async fn small_bodies_are_kept_inline_and_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let small = Bytes::from(vec![7u8; INLINE_MAX]);
        tier.put("s", json!({"v": 1}), small.clone()).await.unwrap();
        tier.put("big", json!({"v": 1}), filed("x")).await.unwrap();
        assert_eq!(content_files(tmp.path()).len(), 1, "only the large body has a file");
        assert!(tier.update_meta("s", json!({"v": 2})).await.unwrap());
        assert_eq!(tier.get("s").await.unwrap().unwrap(), (json!({"v": 2}), small.clone()));
        assert_eq!(tier.get_meta("s").await.unwrap(), Some(json!({"v": 2})));
        assert_eq!(tier.list().await.unwrap().len(), 2);
        assert_accounting_matches_disk(&tier).await;
        drop(tier);
        let tier = open(tmp.path(), 1 << 20).await;
        assert_eq!(tier.get("s").await.unwrap().unwrap(), (json!({"v": 2}), small));
        assert_accounting_matches_disk(&tier).await;

        // A line whose body no longer matches its integrity is a miss, and removed.
        let bad = serde_json::json!({"v": 3});
        let opts = WriteOpts::new()
            .integrity(cacache::index::find(tmp.path(), "s").unwrap().unwrap().integrity)
            .size(INLINE_MAX)
            .metadata(with_inline(bad, &[8u8; 16]));
        cacache::index::insert(tmp.path(), "s", opts).unwrap();
        assert!(tier.get("s").await.unwrap().is_none());
        assert!(cacache::index::find(tmp.path(), "s").unwrap().is_none(), "the broken line is deleted");
    }

    #[tokio::test]
    async fn identical_bodies_share_content_until_the_last_key_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let body = filed("same bytes");
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_of_one_key_leave_one_complete_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let body_of = |v: u64| filed(&format!("body {v}"));
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
            let in_memory = tier.inner.state().get("k").unwrap().content;
            assert_eq!(in_memory, content_id(&on_disk.integrity), "memory follows the index");
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
        assert!(tier.put("new", json!(1), filed("new")).await.is_err());
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
}
