//! The purge index: which keys hold which URL and which tags, so a purge by
//! URL, prefix or tag touches only what it removes instead of scanning the
//! cache. URLs are kept sorted, so a prefix is one range walk.
//!
//! It holds the keys of the memory tier, and the tagged keys of both tiers: a
//! disk tier of millions of objects would need hundreds of bytes of RAM per
//! object here. The disk's other keys are found by their URL's label
//! ([`url_label`], kept by the disk tier) or, for a prefix, by reading the
//! disk's index. Tagged keys are rebuilt from the disk tier's metadata after a
//! start (tags survive restarts with the entries).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::key::{Key, KeyHash};

/// Kept small: one of these lives for every entry of both tiers. Keys are held as
/// 32 bytes and each URL once, shared by its two maps.
#[derive(Default)]
pub(super) struct PurgeIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// URL → its keys (a URL has one, or a Vary record and a few variants).
    by_url: BTreeMap<Arc<str>, Vec<Key>>,
    by_tag: HashMap<String, HashSet<Key, KeyHash>>,
    /// key → (url, tags, what it holds), to undo the two maps on removal.
    keys: HashMap<Key, Known, KeyHash>,
}

struct Known {
    url: Arc<str>,
    tags: Box<[String]>,
    held: Held,
}

/// What a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// A response.
    Entry,
    /// A URL's Vary record (purges remove it, and do not count it).
    Vary,
}

impl PurgeIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn insert(&self, key: &str, url: &str, tags: &[String], held: Held) {
        let key = Key::of(key);
        let mut inner = self.lock();
        inner.remove(&key);
        let url: Arc<str> = match inner.by_url.get_key_value(url) {
            Some((shared, _)) => shared.clone(),
            None => url.into(),
        };
        inner.by_url.entry(url.clone()).or_default().push(key);
        for tag in tags {
            inner.by_tag.entry(tag.clone()).or_default().insert(key);
        }
        inner.keys.insert(key, Known { url, tags: tags.into(), held });
    }

    pub(super) fn remove(&self, key: &str) {
        self.lock().remove(&Key::of(key));
    }

    /// Removes `key` unless it has tags (its copy on disk stays indexed by them).
    pub(super) fn remove_untagged(&self, key: &str) {
        let key = Key::of(key);
        let mut inner = self.lock();
        if inner.keys.get(&key).is_some_and(|k| k.tags.is_empty()) {
            inner.remove(&key);
        }
    }

    /// Keys stored for exactly this URL (the entry or Vary record and every variant).
    pub(super) fn url(&self, url: &str) -> Vec<String> {
        hex_sorted(self.lock().by_url.get(url).into_iter().flatten())
    }

    /// Keys of every URL starting with `prefix`.
    pub(super) fn prefix(&self, prefix: &str) -> Vec<String> {
        let inner = self.lock();
        let within = inner
            .by_url
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(url, _)| url.starts_with(prefix));
        hex_sorted(within.flat_map(|(_, keys)| keys))
    }

    /// Keys carrying any of `tags`.
    pub(super) fn tags(&self, tags: &[String]) -> Vec<String> {
        let inner = self.lock();
        hex_sorted(tags.iter().filter_map(|t| inner.by_tag.get(t)).flatten())
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.lock().keys.contains_key(&Key::of(key))
    }

    pub(super) fn all(&self) -> Vec<String> {
        hex_sorted(self.lock().keys.keys())
    }

    /// (url, tags, what it holds) recorded for a key.
    pub(super) fn describe(&self, key: &str) -> Option<(String, Vec<String>, Held)> {
        self.lock().keys.get(&Key::of(key)).map(|k| (k.url.to_string(), k.tags.to_vec(), k.held))
    }

    #[allow(clippy::len_without_is_empty)]
    pub(super) fn len(&self) -> usize {
        self.lock().keys.len()
    }
}

/// The disk tier's label for a canonical URL: the keys holding its entries, Vary
/// record, variants and slices are found together by it. Not 0 (no label).
pub(super) fn url_label(url: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(url.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head).max(1)
}

fn hex_sorted<'a>(keys: impl Iterator<Item = &'a Key>) -> Vec<String> {
    let unique: BTreeSet<String> = keys.map(Key::hex).collect();
    unique.into_iter().collect()
}

impl Inner {
    fn remove(&mut self, key: &Key) {
        let Some(known) = self.keys.remove(key) else { return };
        if let Some(keys) = self.by_url.get_mut(&*known.url) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_url.remove(&*known.url);
            }
        }
        for tag in known.tags.iter() {
            if let Some(set) = self.by_tag.get_mut(tag) {
                set.remove(key);
                if set.is_empty() {
                    self.by_tag.remove(tag);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    #[test]
    fn url_prefix_tag_and_removal() {
        let ix = PurgeIndex::default();
        ix.insert(&k(1), "http://a/x/1", &["t1".into(), "t2".into()], Held::Entry);
        ix.insert(&k(2), "http://a/x/2", &["t2".into()], Held::Entry);
        ix.insert(&k(3), "http://a/y", &[], Held::Entry);
        ix.insert(&k(4), "http://a/x/1", &[], Held::Vary);
        assert_eq!(ix.url("http://a/x/1"), vec![k(1), k(4)]);
        assert_eq!(ix.prefix("http://a/x/").len(), 3);
        assert_eq!(ix.tags(&["t2".into()]), vec![k(1), k(2)]);
        assert_eq!(ix.describe(&k(4)), Some(("http://a/x/1".into(), vec![], Held::Vary)));
        ix.remove(&k(1));
        assert_eq!(ix.tags(&["t1".into()]), Vec::<String>::new());
        assert_eq!(ix.url("http://a/x/1"), vec![k(4)]);
        // Re-inserting a key replaces its old url and tags.
        ix.insert(&k(2), "http://a/z", &["t3".into()], Held::Entry);
        assert!(ix.tags(&["t2".into()]).is_empty());
        assert!(ix.prefix("http://a/x/2").is_empty());
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.all(), vec![k(2), k(3), k(4)]);
    }
}
