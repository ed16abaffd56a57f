//! The purge journal: keys purged from memory whose disk copies are not yet
//! deleted, so that a process killed before the deletions finish deletes them at
//! its next start instead of serving them again. Its file I/O runs on the
//! blocking pool: a slow disk delays the purge that waits for it, not the
//! requests sharing its worker thread.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Keys purged from memory whose disk copies are not yet deleted, one per line in
/// `<disk_path>/purge-journal`. Written before a purge answers (no fsync: it guards
/// against a killed process, not a lost disk); emptied when no deletion is running.
pub(super) struct Journal {
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
    pub(super) async fn open(dir: Option<PathBuf>) -> (Arc<Journal>, Vec<String>) {
        let fallback = dir.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(dir)).await.unwrap_or_else(|_| {
            let state = JournalState { running: 0, clean: true, file: None, written: 0 };
            (
                Arc::new(Journal { path: fallback.map(|d| d.join("purge-journal")), state: Mutex::new(state) }),
                Vec::new(),
            )
        })
    }

    fn open_blocking(dir: Option<PathBuf>) -> (Arc<Journal>, Vec<String>) {
        let path = dir.map(|d| d.join("purge-journal"));
        let left: Vec<String> = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|text| text.lines().filter(|l| !l.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        let state = JournalState { running: usize::from(!left.is_empty()), clean: true, file: None, written: 0 };
        (Arc::new(Journal { path, state: Mutex::new(state) }), left)
    }

    /// Appends `keys` (one deletion more is running). Past [`JOURNAL_REWRITE`] bytes (purges that keep coming before
    /// the deletions drain) the file is rewritten with `pending()`, every key still owed.
    pub(super) async fn record(
        self: &Arc<Self>,
        keys: Vec<String>,
        pending: impl FnOnce() -> Vec<String> + Send + 'static,
    ) {
        let journal = self.clone();
        let _ = tokio::task::spawn_blocking(move || journal.record_blocking(&keys, pending)).await;
    }

    fn record_blocking(&self, keys: &[String], pending: impl FnOnce() -> Vec<String>) {
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
                    state.written = all.len() as u64;
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
        if let Some(f) = state.file.as_mut() {
            match f.write_all(text.as_bytes()) {
                Ok(()) => state.written += text.len() as u64,
                Err(e) => {
                    state.file = None;
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the purge journal; a crash now may bring purged entries back");
                }
            }
        }
    }

    /// One deletion finished; `all_gone` if it removed every key.
    pub(super) async fn done(self: &Arc<Self>, all_gone: bool) {
        let journal = self.clone();
        let _ = tokio::task::spawn_blocking(move || journal.done_blocking(all_gone)).await;
    }

    fn done_blocking(&self, all_gone: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.running = state.running.saturating_sub(1);
        state.clean &= all_gone;
        // After a failed deletion the journal is not emptied again in this process: the next start retries it.
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
        let (journal, left) = Journal::open_blocking(Some(dir.path().to_path_buf()));
        assert!(left.is_empty());
        let key = |i: usize| format!("{i:064x}");
        // Purges keep coming while earlier deletions run: the file is rewritten, not grown.
        for round in 0..40 {
            let keys: Vec<String> = (round * 500..(round + 1) * 500).map(key).collect();
            journal.record_blocking(&keys, || vec![key(7), key(round * 500)]);
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= JOURNAL_REWRITE, "journal of {size} bytes");
        let (_, left) = Journal::open_blocking(Some(dir.path().to_path_buf()));
        assert!(left.contains(&key(7)) && left.contains(&key(39 * 500 + 499)), "owed keys survive the rewrite");
        // Once every deletion is done it is empty.
        for _ in 0..40 {
            journal.done_blocking(true);
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
