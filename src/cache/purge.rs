//! Purging: remove (hard) or mark stale (soft) what matches a URL, a URL
//! prefix, a tag, or everything, in both tiers.
//!
//! A fetch already in flight when a purge arrives must not store what the
//! purge meant to remove: every purge is logged with an epoch, and a store
//! checks whether a purge matching it came after its fetch began.
//!
//! A hard purge answers once memory and the index are cleared; disk copies are
//! hidden at once and deleted behind, their keys journaled first ([`super::journal`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use std::collections::BTreeMap;

use super::index::{Held, url_label};
use super::{Cache, Stored};
use crate::metrics::{PurgeKind, PurgeMode};

/// What a purge matches. URLs are canonical (see [`super::key::url`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Urls(Vec<String>),
    Prefixes(Vec<String>),
    Tags(Vec<String>),
    All,
}

impl Target {
    pub fn kind(&self) -> PurgeKind {
        match self {
            Target::Urls(_) => PurgeKind::Url,
            Target::Prefixes(_) => PurgeKind::Prefix,
            Target::Tags(_) => PurgeKind::Tag,
            Target::All => PurgeKind::All,
        }
    }

    fn matches(&self, url: &str, tags: &[String]) -> bool {
        match self {
            Target::Urls(urls) => urls.iter().any(|u| u == url),
            Target::Prefixes(ps) => ps.iter().any(|p| url.starts_with(p.as_str())),
            Target::Tags(ts) => ts.iter().any(|t| tags.contains(t)),
            Target::All => true,
        }
    }
}

/// The most recent purges, by epoch.
#[derive(Default)]
pub(crate) struct Log {
    epoch: AtomicU64,
    recent: Mutex<VecDeque<(u64, Target)>>,
}

/// Unsafe requests' invalidations are logged too, so this covers busy sites' POSTs.
const KEPT: usize = 1024;

impl Log {
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn record(&self, target: Target) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        recent.push_back((epoch, target));
        if recent.len() > KEPT {
            recent.pop_front();
        }
    }

    /// Whether a purge after `epoch` matches this URL or these tags.
    pub(crate) fn purged_since(&self, epoch: u64, url: &str, tags: &[String]) -> bool {
        if self.epoch() == epoch {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        // Lost track of some purges since then: assume the worst.
        if recent.front().is_some_and(|(oldest, _)| *oldest > epoch + 1) {
            return true;
        }
        recent.iter().rev().take_while(|(e, _)| *e > epoch).any(|(_, t)| t.matches(url, tags))
    }
}

impl Cache {
    /// The purge epoch now; pass it to [`Cache::purged_since`] when storing.
    pub fn purge_epoch(&self) -> u64 {
        self.purges.epoch()
    }

    pub fn purged_since(&self, epoch: u64, url: &str, tags: &[String]) -> bool {
        self.purges.purged_since(epoch, url, tags)
    }

    /// RFC 9111 §4.4 invalidation of `url` (canonical) after an unsafe request: its
    /// entries go, and a fetch of it already in flight is not stored either.
    pub async fn invalidate(&self, url: &str) {
        self.purges.record(Target::Urls(vec![url.to_string()]));
        self.remove(&super::key::primary(url)).await;
        // Its variants and slices, kept under keys of their own.
        for key in self.keys_of_url(url) {
            self.remove(&key).await;
        }
    }

    /// RFC 9111 §4.4: a successful unsafe request (`method`, answered with
    /// `status` and `headers`) invalidates its URL and the same-origin URLs
    /// in Location and Content-Location, in both tiers, each as `key_url`
    /// makes it the URL entries are indexed by (its route's `cache.key`).
    pub async fn invalidate_after(
        &self,
        method: &http::Method,
        status: http::StatusCode,
        url: &str,
        headers: &http::HeaderMap,
        key_url: impl Fn(String) -> String,
    ) {
        let Ok(uri) = url.parse::<http::Uri>() else { return };
        for target in cache_policy::invalidations(method, status, &uri, headers) {
            if let Some(u) = super::key::url_of(&target) {
                self.invalidate(&key_url(u)).await;
            }
        }
    }

    /// Purges what matches; returns the number of entries (responses; a URL's
    /// Vary record is not counted) removed, or marked stale when soft.
    pub async fn purge(&self, target: Target, mode: PurgeMode) -> u64 {
        self.purges.record(target.clone());
        let mut purged = 0;
        let mut on_disk = Vec::new();
        for (key, vary_record) in self.matching(&target).await {
            let done = if mode.is_soft() && !vary_record {
                self.expire(&key).await
            } else {
                // Memory and index now; the disk copy is hidden at once and deleted behind.
                self.index.remove(&key);
                let in_memory = self.memory.remove(&key).await;
                let in_disk = self.disk.as_ref().is_some_and(|d| {
                    let held = d.contains(&key) || !d.is_loaded();
                    self.hidden.doom_on_disk(&key, held)
                });
                if in_disk {
                    on_disk.push(key);
                }
                in_memory || in_disk
            };
            if done && !vary_record {
                purged += 1;
            }
        }
        if !on_disk.is_empty() {
            let hidden = self.hidden.clone();
            let owed = move || hidden.owed();
            self.journal.record(on_disk.clone(), owed).await;
            self.delete_behind(on_disk);
        }
        purged
    }

    /// The keys a purge covers, with whether each holds a Vary record (not
    /// counted). The index has the memory tier's and every tagged key; the
    /// disk's others are found by their URL's label (once the disk tier's map
    /// is loaded), or by reading the disk's index for a prefix.
    async fn matching(&self, target: &Target) -> BTreeMap<String, bool> {
        let vary = |held| held == Held::Vary;
        let mut found: BTreeMap<String, bool> = BTreeMap::new();
        let known = match target {
            Target::Urls(urls) => urls.iter().flat_map(|u| self.index.url(u)).collect(),
            Target::Prefixes(ps) => ps.iter().flat_map(|p| self.index.prefix(p)).collect(),
            Target::Tags(tags) => self.index.tags(tags),
            Target::All => self.index.all(),
        };
        for key in known {
            let held = self.index.describe(&key).is_some_and(|(_, _, held)| vary(held));
            found.insert(key, held);
        }
        let Some(disk) = &self.disk else { return found };
        let scan = match target {
            Target::Urls(urls) => {
                // Labels are known once the map is loaded (from its snapshot after a
                // stop: a second per million entries; from the index after a crash).
                disk.loaded().await;
                for url in urls {
                    for key in disk.labelled(url_label(url)) {
                        if found.contains_key(&key) {
                            continue;
                        }
                        // The label may be another URL's too: the metadata says. One
                        // that cannot be read is purged all the same (never left behind).
                        let vary = match disk.get_meta(&key).await {
                            Ok(None) => continue,
                            Ok(Some(meta)) => match Stored::listing(meta) {
                                Some(l) if l.url != *url => continue,
                                Some(l) => l.vary,
                                None => false,
                            },
                            Err(_) => false,
                        };
                        found.insert(key, vary);
                    }
                }
                false
            }
            Target::Tags(_) => false,
            _ => true,
        };
        if scan {
            let target = target.clone();
            let listed = disk
                .list_with(move |key, meta| {
                    let l = Stored::listing(meta)?;
                    target.matches(&l.url, &l.tags).then_some((key, l.vary))
                })
                .await;
            match listed {
                Ok(listed) => {
                    for (key, vary) in listed {
                        found.entry(key).or_insert(vary);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the disk cache for a purge"),
            }
        }
        found
    }

    /// Deletes doomed keys from disk in the background, then clears them from the journal.
    pub(super) fn delete_behind(&self, keys: Vec<String>) {
        let Some(disk) = self.disk.clone() else { return };
        let (hidden, journal) = (self.hidden.clone(), self.journal.clone());
        let mut deletions = self.deletions.lock().unwrap_or_else(PoisonError::into_inner);
        deletions.retain(|t| !t.is_finished());
        deletions.push(tokio::spawn(async move {
            let mut all_gone = true;
            for key in keys {
                match disk.remove(&key).await {
                    Ok(_) => hidden.deleted(&key),
                    // Stays doomed (never read), so a journal rewrite keeps it for the next start.
                    Err(e) => {
                        tracing::warn!(key, error = %e, "disk cache remove failed after a purge");
                        all_gone = false;
                    }
                }
            }
            journal.done(all_gone).await;
        }));
    }

    /// Marks an entry stale; false if it is not stored.
    async fn expire(&self, key: &str) -> bool {
        let Some(stored) = self.get(key).await else {
            self.index.remove(key);
            return false;
        };
        let Stored::Entry(entry) = &*stored else { return false };
        let mut entry = entry.clone();
        entry.policy.expire(SystemTime::now());
        self.refresh(key.to_string(), Stored::Entry(entry)).await;
        true
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cache::{Entry, key};
    use std::sync::Arc;

    pub(in crate::cache) fn stored(url: &str) -> Stored {
        let now = SystemTime::now();
        let (req, ()) = http::Request::get(url).body(()).unwrap().into_parts();
        let (res, ()) =
            http::Response::builder().header("cache-control", "max-age=3600").body(()).unwrap().into_parts();
        let policy = cache_policy::Policy::new(&req, &res, &cache_policy::Rules::default(), now, now).unwrap();
        Stored::Entry(Entry {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(b"body"),
            file: None,
            policy,
            url: url.to_string(),
            tags: Vec::new(),
            stored_at: now,
        })
    }

    /// A journal write that cannot complete (a FIFO nobody reads, as a stuck
    /// disk would) holds up the purge waiting for it, and nothing else on its
    /// thread: the journal's I/O runs on the blocking pool.
    #[test]
    fn a_stuck_journal_write_does_not_stall_other_tasks() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = crate::config::CacheConfig { disk_path: dir.path().to_path_buf(), ..Default::default() };
            let cache = Cache::open(&config, Arc::new(crate::metrics::Metrics::new())).await.unwrap();
            let url = "http://site.test/p";
            cache.put(key::primary(url), stored(url)).await;
            let journal = dir.path().join("purge-journal");
            let _ = std::fs::remove_file(&journal);
            let made = std::process::Command::new("mkfifo").arg(&journal).status().unwrap();
            assert!(made.success());

            let purging = {
                let cache = cache.clone();
                tokio::spawn(async move { cache.purge(Target::Urls(vec![url.into()]), PurgeMode::Hard).await })
            };
            let ticks = Arc::new(AtomicU64::new(0));
            let ticker = {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ticker).await;
            assert_eq!(ticks.load(Ordering::Relaxed), 20, "the runtime stalled behind the journal write");
            assert!(!purging.is_finished(), "the purge waits for its journal line");
            // A reader lets the write through; the purge then answers.
            let reader = std::thread::spawn(move || std::fs::read(&journal));
            let purged = tokio::time::timeout(std::time::Duration::from_secs(5), purging).await.unwrap().unwrap();
            assert_eq!(purged, 1);
            drop(cache);
            let _ = reader;
        });
    }

    /// A purge while an entry's disk write waits behind a slow disk: the write
    /// lands after the purge's deletion, and the purged response is never read
    /// back from disk (it was, and went back into memory, until the write's own
    /// check removed it).
    #[test]
    fn a_write_landing_after_a_purge_is_never_read() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = crate::config::CacheConfig { disk_path: dir.path().to_path_buf(), ..Default::default() };
            let cache = Cache::open(&config, Arc::new(crate::metrics::Metrics::new())).await.unwrap();
            let disk = cache.disk().unwrap().clone();
            disk.loaded().await;
            let (url, held) = ("http://site.test/w", crate::cache::disk::writer::hold());
            let putting = {
                let cache = cache.clone();
                tokio::spawn(async move { cache.put(key::primary(url), stored(url)).await })
            };
            while cache.keys_of_url(url).is_empty() {
                tokio::task::yield_now().await;
            }
            assert!(!disk.contains(&key::primary(url)), "the write waits");
            assert_eq!(cache.purge(Target::Urls(vec![url.into()]), PurgeMode::Hard).await, 1);
            assert!(cache.hidden.is_doomed(&key::primary(url)), "a write in flight counts as a disk copy");

            // The deletion waits for the write's lock on the key; the write lands first.
            drop(held);
            while !disk.contains(&key::primary(url)) && !putting.is_finished() {
                tokio::task::yield_now().await;
            }
            assert!(cache.get(&key::primary(url)).await.is_none(), "the purged response came back from disk");
            putting.await.unwrap();
            cache.flush().await;
            assert!(!disk.contains(&key::primary(url)), "the write removed what it wrote");
            assert!(!cache.hidden.is_doomed(&key::primary(url)), "readable again once nothing is in flight");
            cache.put(key::primary(url), stored(url)).await;
            cache.memory.remove(&key::primary(url)).await;
            assert!(cache.get(&key::primary(url)).await.is_some(), "a later fill is read from disk");
        });
    }

    #[test]
    fn purges_after_an_epoch_are_matched() {
        let log = Log::default();
        let before = log.epoch();
        log.record(Target::Prefixes(vec!["http://a/x/".into()]));
        assert!(log.purged_since(before, "http://a/x/1", &[]));
        assert!(!log.purged_since(before, "http://a/y", &[]));
        assert!(!log.purged_since(log.epoch(), "http://a/x/1", &[]));
        log.record(Target::Tags(vec!["t".into()]));
        assert!(log.purged_since(before, "http://b/", &["t".into()]));
    }
}
