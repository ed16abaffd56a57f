//! Purging: remove (hard) or mark stale (soft) what matches a URL, a URL
//! prefix, a tag, or everything, in both tiers.
//!
//! A fetch already in flight when a purge arrives must not store what the
//! purge meant to remove: every purge is logged with an epoch, and a store
//! checks whether a purge matching it came after its fetch began.
//!
//! A hard purge answers once memory and the index are cleared; disk copies are
//! hidden at once and deleted behind. Their keys are first appended to a journal
//! in the disk directory, so that a process killed before the deletions finish
//! deletes them at its next start instead of serving them again.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::{Cache, Stored};

/// What a purge matches. URLs are canonical (see [`super::key::url`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Urls(Vec<String>),
    Prefixes(Vec<String>),
    Tags(Vec<String>),
    All,
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Urls(_) => "url",
            Target::Prefixes(_) => "prefix",
            Target::Tags(_) => "tag",
            Target::All => "all",
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
pub struct Log {
    epoch: AtomicU64,
    recent: Mutex<VecDeque<(u64, Target)>>,
}

/// Unsafe requests' invalidations are logged too, so this covers busy sites' POSTs.
const KEPT: usize = 1024;

impl Log {
    pub fn epoch(&self) -> u64 {
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
    pub fn purged_since(&self, epoch: u64, url: &str, tags: &[String]) -> bool {
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
    }

    /// Purges what matches; returns the number of entries (responses; a URL's
    /// Vary record is not counted) removed, or marked stale when `soft`.
    pub async fn purge(&self, target: Target, soft: bool) -> u64 {
        self.purges.record(target.clone());
        let mut keys = match &target {
            Target::Urls(urls) => urls.iter().flat_map(|u| self.index.url(u)).collect(),
            Target::Prefixes(ps) => ps.iter().flat_map(|p| self.index.prefix(p)).collect(),
            Target::Tags(tags) => self.index.tags(tags),
            Target::All => self.index.all(),
        };
        if target == Target::All
            && let Some(disk) = &self.disk
            && let Ok(listed) = disk.list().await
        {
            // Entries the index has not seen yet (its rebuild may be running).
            keys.extend(listed.into_iter().map(|(k, _)| k));
        }
        keys.sort();
        keys.dedup();
        let mut purged = 0;
        let mut on_disk = Vec::new();
        for key in keys {
            let vary_record = self.index.describe(&key).is_some_and(|(_, _, v)| v);
            let done = if soft && !vary_record {
                self.expire(&key).await
            } else {
                // Memory and index now; the disk copy is hidden at once and deleted behind.
                self.index.remove(&key);
                let in_memory = self.memory.remove(&key).await;
                let in_disk = self.disk.as_ref().is_some_and(|d| d.contains(&key) || !d.is_loaded());
                if in_disk {
                    self.doom(&key);
                    on_disk.push(key);
                }
                in_memory || in_disk
            };
            if done && !vary_record {
                purged += 1;
            }
        }
        if !on_disk.is_empty() {
            self.journal.record(&on_disk, || self.doomed_keys());
            self.delete_behind(on_disk);
        }
        purged
    }

    /// Deletes doomed keys from disk in the background, then clears them from the journal.
    pub(super) fn delete_behind(&self, keys: Vec<String>) {
        let Some(disk) = self.disk.clone() else { return };
        let (doomed, journal) = (self.doomed.clone(), self.journal.clone());
        let mut deletions = self.deletions.lock().unwrap_or_else(PoisonError::into_inner);
        deletions.retain(|t| !t.is_finished());
        deletions.push(tokio::spawn(async move {
            let mut all_gone = true;
            for key in keys {
                if let Err(e) = disk.remove(&key).await {
                    tracing::warn!(key, error = %e, "disk cache remove failed after a purge");
                    all_gone = false;
                }
                super::undoom(&doomed, &key);
            }
            journal.done(all_gone);
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

/// Keys purged from memory whose disk copies are not yet deleted, one per line in
/// `<disk_path>/purge-journal`. Written before a purge answers (no fsync: it guards
/// against a killed process, not a lost disk); emptied when no deletion is running.
pub struct Journal {
    path: Option<PathBuf>,
    state: Mutex<JournalState>,
}

struct JournalState {
    /// Deletions running.
    running: usize,
    /// Every deletion so far removed all its keys.
    clean: bool,
    /// Kept open: a purge pays one write, not an open and a close.
    file: Option<std::fs::File>,
    /// Size of the file.
    written: u64,
}

/// Journal size past which it is rewritten with only the keys still owed.
const JOURNAL_REWRITE: u64 = 1 << 20;

impl Journal {
    /// The journal in `dir`, and the keys a previous process left in it (their
    /// deletion counts as running until [`Journal::done`]).
    pub fn open(dir: Option<PathBuf>) -> (Arc<Journal>, Vec<String>) {
        let path = dir.map(|d| d.join("purge-journal"));
        let left: Vec<String> = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|text| text.lines().filter(|l| !l.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        let state = JournalState { running: usize::from(!left.is_empty()), clean: true, file: None, written: 0 };
        (Arc::new(Journal { path, state: Mutex::new(state) }), left)
    }

    /// Appends `keys`. Past [`JOURNAL_REWRITE`] bytes (purges that keep coming before
    /// the deletions drain) the file is rewritten with `pending()`, every key still owed.
    fn record(&self, keys: &[String], pending: impl FnOnce() -> Vec<String>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.running += 1;
        let Some(path) = &self.path else { return };
        let text: String = keys.iter().flat_map(|k| [k.as_str(), "\n"]).collect();
        if state.written + text.len() as u64 > JOURNAL_REWRITE {
            let all: String = pending().iter().flat_map(|k| [k.as_str(), "\n"]).collect();
            let tmp = path.with_extension("new");
            match std::fs::write(&tmp, &all).and_then(|()| std::fs::rename(&tmp, path)) {
                Ok(()) => {
                    // The open handle still points at the replaced file.
                    state.file = None;
                    state.written = 0;
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot rewrite the purge journal"),
            }
        }
        if state.file.is_none() {
            match std::fs::OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => state.file = Some(f),
                Err(e) => {
                    return tracing::warn!(path = %path.display(), error = %e, "cannot open the purge journal; a crash now may bring purged entries back");
                }
            }
        }
        match state.file.as_mut().map(|f| f.write_all(text.as_bytes()).and_then(|()| f.metadata())) {
            Some(Ok(meta)) => state.written = meta.len(),
            Some(Err(e)) => {
                state.file = None;
                tracing::warn!(path = %path.display(), error = %e, "cannot write the purge journal; a crash now may bring purged entries back");
            }
            None => {}
        }
    }

    fn done(&self, all_gone: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.running = state.running.saturating_sub(1);
        state.clean &= all_gone;
        // After a failed deletion the journal stays for this process' life: the next start retries it.
        if state.running > 0 || !state.clean {
            return;
        }
        state.written = 0;
        let cleared = match &state.file {
            Some(f) => f.set_len(0),
            None => self.path.as_ref().map_or(Ok(()), |p| match std::fs::remove_file(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }),
        };
        if let Err(e) = cleared {
            tracing::warn!(error = %e, "cannot clear the purge journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_what_is_owed_and_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("purge-journal");
        let (journal, left) = Journal::open(Some(dir.path().to_path_buf()));
        assert!(left.is_empty());
        let key = |i: usize| format!("{i:064x}");
        // Purges keep coming while earlier deletions run: the file is rewritten, not grown.
        for round in 0..40 {
            let keys: Vec<String> = (round * 500..(round + 1) * 500).map(key).collect();
            journal.record(&keys, || vec![key(7), key(round * 500)]);
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= JOURNAL_REWRITE, "journal of {size} bytes");
        let (_, left) = Journal::open(Some(dir.path().to_path_buf()));
        assert!(left.contains(&key(7)) && left.contains(&key(39 * 500 + 499)), "owed keys survive the rewrite");
        // Once every deletion is done it is empty.
        for _ in 0..40 {
            journal.done(true);
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
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
