//! The purge index: which keys hold which URL and which tags, so a purge by
//! URL, prefix or tag touches only what it removes instead of scanning the
//! cache. URLs are kept sorted, so a prefix is one range walk.
//!
//! It is rebuilt from the disk tier's metadata after a start (tags survive
//! restarts with the entries) and kept current by every store, removal and
//! eviction: a key leaves when neither tier holds it any more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub struct PurgeIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_url: BTreeMap<String, BTreeSet<String>>,
    by_tag: HashMap<String, BTreeSet<String>>,
    /// key → (url, tags, is a Vary record), to undo the two maps on removal.
    keys: HashMap<String, (String, Vec<String>, bool)>,
}

impl PurgeIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn insert(&self, key: &str, url: &str, tags: &[String], vary_record: bool) {
        let mut inner = self.lock();
        inner.remove(key);
        inner.by_url.entry(url.to_string()).or_default().insert(key.to_string());
        for tag in tags {
            inner.by_tag.entry(tag.clone()).or_default().insert(key.to_string());
        }
        inner.keys.insert(key.to_string(), (url.to_string(), tags.to_vec(), vary_record));
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Keys stored for exactly this URL (the entry or Vary record and every variant).
    pub fn url(&self, url: &str) -> Vec<String> {
        self.lock().by_url.get(url).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// Keys of every URL starting with `prefix`.
    pub fn prefix(&self, prefix: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .by_url
            .range(prefix.to_string()..)
            .take_while(|(url, _)| url.starts_with(prefix))
            .flat_map(|(_, keys)| keys.iter().cloned())
            .collect()
    }

    /// Keys carrying any of `tags`.
    pub fn tags(&self, tags: &[String]) -> Vec<String> {
        let inner = self.lock();
        let mut out = BTreeSet::new();
        for tag in tags {
            if let Some(keys) = inner.by_tag.get(tag) {
                out.extend(keys.iter().cloned());
            }
        }
        out.into_iter().collect()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().keys.contains_key(key)
    }

    pub fn all(&self) -> Vec<String> {
        self.lock().keys.keys().cloned().collect()
    }

    /// (url, tags, is a Vary record) recorded for a key.
    pub fn describe(&self, key: &str) -> Option<(String, Vec<String>, bool)> {
        self.lock().keys.get(key).cloned()
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }
}

impl Inner {
    fn remove(&mut self, key: &str) {
        let Some((url, tags, _)) = self.keys.remove(key) else { return };
        if let Some(set) = self.by_url.get_mut(&url) {
            set.remove(key);
            if set.is_empty() {
                self.by_url.remove(&url);
            }
        }
        for tag in tags {
            if let Some(set) = self.by_tag.get_mut(&tag) {
                set.remove(key);
                if set.is_empty() {
                    self.by_tag.remove(&tag);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_prefix_tag_and_removal() {
        let ix = PurgeIndex::default();
        ix.insert("k1", "http://a/x/1", &["t1".into(), "t2".into()], false);
        ix.insert("k2", "http://a/x/2", &["t2".into()], false);
        ix.insert("k3", "http://a/y", &[], false);
        ix.insert("k4", "http://a/x/1", &[], true);
        assert_eq!(ix.url("http://a/x/1"), vec!["k1", "k4"]);
        assert_eq!(ix.prefix("http://a/x/").len(), 3);
        assert_eq!(ix.tags(&["t2".into()]), vec!["k1", "k2"]);
        ix.remove("k1");
        assert_eq!(ix.tags(&["t1".into()]), Vec::<String>::new());
        assert_eq!(ix.url("http://a/x/1"), vec!["k4"]);
        // Re-inserting a key replaces its old url and tags.
        ix.insert("k2", "http://a/z", &["t3".into()], false);
        assert!(ix.tags(&["t2".into()]).is_empty());
        assert_eq!(ix.len(), 3);
    }
}
