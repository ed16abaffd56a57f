//! Entries the disk could not take when they were stored: its write backlog
//! was full (a fill faster than the disk, whose writers only get the CPU
//! serving leaves). Their keys wait here, 32 bytes each, and are written from
//! the memory tier as the backlog frees up: the memory tier is the disk's
//! write buffer. An entry memory dropped before its turn is not written
//! (`relais_cache_disk_writes_skipped_total`); nor is one purged meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, Weak};

use tokio::sync::Notify;

use super::Cache;
use super::key::Key;

/// Keys waiting, at most (32 MiB of them); past that the oldest is given up.
const KEPT: usize = 1 << 20;

#[derive(Default)]
pub(super) struct Unwritten {
    keys: Mutex<VecDeque<Key>>,
    more: Notify,
    /// Taken from `keys` and not written yet.
    writing: AtomicUsize,
}

impl Unwritten {
    /// Queues `key`; false if that gave up an older one.
    pub(super) fn push(&self, key: &str) -> bool {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        keys.push_back(Key::of(key));
        let kept = keys.len() <= KEPT;
        if !kept {
            keys.pop_front();
        }
        drop(keys);
        self.more.notify_one();
        kept
    }

    /// Entries waiting for the disk from here.
    pub(super) fn waiting(&self) -> usize {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).len() + self.writing.load(Ordering::Relaxed)
    }

    async fn next(&self) -> Key {
        loop {
            let notified = self.more.notified();
            if let Some(key) = self.keys.lock().unwrap_or_else(PoisonError::into_inner).pop_front() {
                self.writing.fetch_add(1, Ordering::Relaxed);
                return key;
            }
            notified.await;
        }
    }
}

/// Writes in flight from here at most: as many as keep the disk writers busy.
const AT_ONCE: usize = 16;

/// Writes waiting keys for as long as the cache lives; each waits for room in
/// the backlog first, so they go no faster than the disk.
pub(super) async fn catch_up(cache: Weak<Cache>) {
    let mut writing = tokio::task::JoinSet::new();
    loop {
        let Some(unwritten) = cache.upgrade().map(|c| c.unwritten.clone()) else { return };
        let key = unwritten.next().await;
        while writing.len() >= AT_ONCE {
            writing.join_next().await;
        }
        let Some(cache) = cache.upgrade() else { return };
        writing.spawn(async move {
            cache.write_later(key.hex()).await;
            cache.unwritten.writing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::cache::purge::tests::stored;
    use crate::cache::{Cache, disk, key};
    use crate::config::{CacheConfig, Size};

    /// A backlog with room for one write while the disk writers are busy: the
    /// other entries wait in memory and all reach the disk once it frees up.
    #[test]
    fn entries_the_backlog_had_no_room_for_reach_the_disk_later() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = CacheConfig {
                disk_path: dir.path().to_path_buf(),
                disk_write_backlog: Size(13 * 1024),
                ..Default::default()
            };
            let cache = Cache::open(&config, Arc::new(crate::metrics::Metrics::new())).await.unwrap();
            let disk = cache.disk().unwrap().clone();
            disk.loaded().await;
            let urls: Vec<String> = (0..20).map(|i| format!("http://site.test/{i}")).collect();
            {
                let _busy = disk::writer::hold();
                let puts: Vec<_> = urls
                    .iter()
                    .map(|url| {
                        let (cache, url) = (cache.clone(), url.clone());
                        tokio::spawn(async move { cache.put(key::primary(&url), stored(&url)).await })
                    })
                    .collect();
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(disk.entries() <= 1, "the writers are held");
                let done = puts.iter().filter(|p| p.is_finished()).count();
                assert!(done >= urls.len() - 1, "only the write with room waits for the disk ({done} done)");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while disk.entries() < urls.len() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for url in &urls {
                assert!(disk.contains(&key::primary(url)), "{url} on disk");
            }
        });
    }
}
