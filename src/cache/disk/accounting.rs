//! The byte accounting: entries, their recency, and the reference counts of
//! shared content. Pure data, no I/O: tested without a directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Fixed allowance per entry for the index line around the metadata: line hash (64), field
/// names, integrity string (~51), time and size.
const INDEX_LINE_OVERHEAD: u64 = 200;

/// Recency order: (unix milliseconds, sequence). Entries loaded at startup use their index
/// write time, so they sort before everything touched since.
pub(super) type Tick = (u64, u64);

pub(super) struct Entry {
    pub(super) charge: u64,
    /// Content id: the first hash of the integrity, e.g. `sha256-<base64>`.
    pub(super) content: Arc<str>,
    /// Body size, as the index line records it.
    pub(super) size: u64,
    pub(super) tick: Tick,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) entries: HashMap<Arc<str>, Entry>,
    pub(super) lru: BTreeMap<Tick, Arc<str>>,
    /// Content id → live entries using it + writes in flight that reserved it.
    pub(super) refs: HashMap<Arc<str>, u32>,
    pub(super) used: u64,
    pub(super) seq: u64,
    pub(super) loaded: bool,
    /// The startup load listed the whole index (no panic); `sweep` only deletes index entries
    /// unknown to the map when this holds.
    pub(super) load_ok: bool,
    /// Keys removed while loading, which the load must not bring back.
    pub(super) tombstones: HashSet<Arc<str>>,
    /// Content ids released while loading, checked again once loaded.
    pub(super) deferred: Vec<Arc<str>>,
}

impl State {
    pub(super) fn tick(&mut self, millis: u64) -> Tick {
        self.seq += 1;
        (millis, self.seq)
    }

    /// Reuses the `Arc` already in `refs` so each content id is allocated once.
    pub(super) fn intern(&self, id: &str) -> Arc<str> {
        match self.refs.get_key_value(id) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(id),
        }
    }

    pub(super) fn add_ref(&mut self, id: &str) -> Arc<str> {
        let id = self.intern(id);
        *self.refs.entry(id.clone()).or_insert(0) += 1;
        id
    }

    /// Returns true when nothing references `id` any more.
    pub(super) fn drop_ref(&mut self, id: &str) -> bool {
        match self.refs.get_mut(id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.refs.remove(id);
                true
            }
            None => true,
        }
    }

    /// Inserts or replaces `key`. Returns the content id the replaced entry left unreferenced.
    pub(super) fn insert(&mut self, key: &str, charge: u64, content: &str, size: u64, tick: Tick) -> Option<Arc<str>> {
        let orphan = match self.remove(key) {
            Some((old, true)) => Some(old),
            _ => None,
        };
        let key: Arc<str> = Arc::from(key);
        let content = self.add_ref(content);
        self.used = self.used.saturating_add(charge);
        self.lru.insert(tick, key.clone());
        self.entries.insert(key, Entry { charge, content, size, tick });
        // Same body as before: the new entry references the old content again.
        orphan.filter(|id| !self.refs.contains_key(&**id))
    }

    /// Removes `key`; returns its content id and whether that is now unreferenced.
    pub(super) fn remove(&mut self, key: &str) -> Option<(Arc<str>, bool)> {
        let entry = self.entries.remove(key)?;
        self.lru.remove(&entry.tick);
        self.used = self.used.saturating_sub(entry.charge);
        let orphaned = self.drop_ref(&entry.content);
        Some((entry.content, orphaned))
    }

    /// Marks `key` most recently used: O(log n). Returns whether it is known.
    pub(super) fn touch(&mut self, key: &str) -> bool {
        if !self.entries.contains_key(key) {
            return false;
        }
        let tick = self.tick(now_millis());
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        if let Some(shared_key) = self.lru.remove(&entry.tick) {
            self.lru.insert(tick, shared_key);
        }
        entry.tick = tick;
        true
    }

    /// Removes the least recently used entry: (key, content id).
    pub(super) fn pop_lru(&mut self) -> Option<(Arc<str>, Arc<str>)> {
        let (_, key) = self.lru.pop_first()?;
        let entry = self.entries.remove(&key)?;
        self.used = self.used.saturating_sub(entry.charge);
        self.drop_ref(&entry.content);
        Some((key, entry.content))
    }
}

/// Bytes charged against the capacity for one entry.
pub(super) fn charge(key_len: usize, meta_len: u64, body_len: u64) -> u64 {
    // Saturating: sizes read back from a damaged index may be anything.
    body_len.saturating_add(meta_len).saturating_add(key_len as u64 + INDEX_LINE_OVERHEAD)
}

/// Length of `value` serialised as JSON, without allocating it.
pub(super) fn json_len(value: &Value) -> u64 {
    struct Counter(u64);
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

pub(super) fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_charged_and_shared_content_counted() {
        let mut st = State::default();
        let t1 = st.tick(1);
        assert_eq!(st.insert("a", 100, "sha256-x", 10, t1), None);
        let t2 = st.tick(2);
        assert_eq!(st.insert("b", 50, "sha256-x", 10, t2), None, "b shares a's content");
        assert_eq!(st.used, 150);
        assert_eq!(st.refs["sha256-x"], 2);
        // Replacing a's body: its old content is still b's.
        let t3 = st.tick(3);
        assert_eq!(st.insert("a", 70, "sha256-y", 7, t3), None);
        assert_eq!(st.used, 120);
        // Removing b leaves x unreferenced.
        assert_eq!(st.remove("b"), Some((Arc::from("sha256-x"), true)));
        assert!(!st.refs.contains_key("sha256-x"));
        // Replacing a again frees y.
        let t4 = st.tick(4);
        assert_eq!(st.insert("a", 60, "sha256-z", 6, t4).as_deref(), Some("sha256-y"));
        assert_eq!(st.used, 60);
    }

    #[test]
    fn least_recently_used_goes_first_and_a_touch_moves_it() {
        let mut st = State::default();
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            let t = st.tick(i as u64);
            st.insert(k, 1, &format!("sha256-{k}"), 1, t);
        }
        assert!(st.touch("a"));
        assert!(!st.touch("zzz"));
        let order: Vec<String> = std::iter::from_fn(|| st.pop_lru()).map(|(k, _)| k.to_string()).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(st.used, 0);
        assert!(st.refs.is_empty());
    }

    #[test]
    fn a_charge_counts_key_metadata_and_line() {
        assert_eq!(charge(3, 10, 100), 100 + 10 + 3 + INDEX_LINE_OVERHEAD);
        assert_eq!(charge(1, u64::MAX, u64::MAX), u64::MAX, "damaged sizes saturate");
        assert_eq!(json_len(&serde_json::json!({"a": [1, 2]})), r#"{"a":[1,2]}"#.len() as u64);
    }
}
