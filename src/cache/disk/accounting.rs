//! The byte accounting: entries, their recency, the labels that group them,
//! and the reference counts of shared content. Pure data, no I/O: tested
//! without a directory.
//!
//! Kept compact, since one entry of it lives for every object on disk: a key is
//! its 32 bytes (the hex string is rebuilt when needed), entries sit in one
//! slab linked in recency order by slot numbers, and the two hash tables hold
//! only slot numbers. About 100 bytes per entry all told; only bodies with a
//! file of their own (over `INLINE_MAX`) add a content slot.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Write};

use hashbrown::HashTable;
use serde_json::Value;

/// Fixed allowance per entry for the index line around the metadata: line hash (64), field
/// names, integrity string (~51), time and size.
const INDEX_LINE_OVERHEAD: u64 = 200;

/// No slot: the end of a list.
const NIL: u32 = u32::MAX;
/// `prev` of a loaded entry not linked into the recency list yet.
const UNLINKED: u32 = u32::MAX - 1;

/// A content file's SHA-256, the name cacache files it under.
pub(super) type ContentId = [u8; 32];

/// A key as 32 bytes: a lower-case 64-hex key (what the cache uses) decoded,
/// anything else hashed and its text kept aside in `State::names`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Name([u8; 32]);

impl Name {
    /// The name, and whether the text is not its hex form (then kept aside).
    fn of(key: &str) -> (Name, bool) {
        let mut out = [0u8; 32];
        let canonical = key.len() == 64
            && key.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            && hex::decode_to_slice(key, &mut out).is_ok();
        if canonical {
            return (Name(out), false);
        }
        use sha2::Digest;
        (Name(sha2::Sha256::digest(key.as_bytes()).into()), true)
    }
}

struct Slot {
    name: Name,
    size: u64,
    /// The caller's label (0: none), and the next slot with the same label.
    label: u64,
    same_label: u32,
    /// Charge beyond the body: metadata, key and index line.
    extra: u32,
    /// Recency list: `prev` is older. A free slot's `next` is the next free one.
    prev: u32,
    next: u32,
    /// Content slot of a body kept in a file of its own, or `NIL`.
    content: u32,
}

struct Content {
    id: ContentId,
    /// Live entries using it + writes in flight that reserved it.
    refs: u32,
}

/// An entry as a snapshot of the map keeps it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Saved<'a> {
    pub(super) name: [u8; 32],
    /// The key's text when it is not the hex form of `name`.
    pub(super) text: Option<&'a str>,
    pub(super) size: u64,
    pub(super) label: u64,
    pub(super) extra: u32,
    pub(super) content: Option<ContentId>,
    pub(super) listed: bool,
}

/// An entry as the rest of the tier sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) size: u64,
    pub(super) content: Option<ContentId>,
    pub(super) label: u64,
}

pub(super) struct State {
    slots: Vec<Slot>,
    free: u32,
    by_key: HashTable<u32>,
    /// The first slot of each label's chain.
    by_label: HashTable<u32>,
    /// Least and most recently used.
    oldest: u32,
    newest: u32,
    contents: Vec<Content>,
    free_contents: Vec<u32>,
    by_content: HashTable<u32>,
    /// Keys that are not 64 lower-case hex digits, by their name.
    names: HashMap<Name, Box<str>>,
    /// Entries the caller wants listed again after a restart (few: tagged ones).
    listed: HashSet<Name>,
    hasher: RandomState,
    len: usize,
    /// Loaded entries with their write time, linked in that order when the load ends.
    unlinked: Vec<(u64, u32)>,
    pub(super) used: u64,
    pub(super) loaded: bool,
    /// The startup load listed the whole index (no panic); `sweep` only deletes index entries
    /// unknown to the map when this holds.
    pub(super) load_ok: bool,
    /// Keys removed while loading, which the load must not bring back.
    pub(super) tombstones: HashSet<Box<str>>,
    /// Content released while loading, checked again once loaded.
    pub(super) deferred: Vec<ContentId>,
}

impl Default for State {
    fn default() -> State {
        State {
            slots: Vec::new(),
            free: NIL,
            by_key: HashTable::new(),
            by_label: HashTable::new(),
            oldest: NIL,
            newest: NIL,
            contents: Vec::new(),
            free_contents: Vec::new(),
            by_content: HashTable::new(),
            names: HashMap::new(),
            listed: HashSet::new(),
            hasher: RandomState::new(),
            len: 0,
            unlinked: Vec::new(),
            used: 0,
            loaded: false,
            load_ok: false,
            tombstones: HashSet::new(),
            deferred: Vec::new(),
        }
    }
}

impl State {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn find(&self, key: &str) -> Option<u32> {
        let (name, _) = Name::of(key);
        self.find_name(&name)
    }

    fn find_name(&self, name: &Name) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.by_key.find(hash, |&s| self.slots[s as usize].name == *name).copied()
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    pub(super) fn get(&self, key: &str) -> Option<Entry> {
        let slot = &self.slots[self.find(key)? as usize];
        let content = (slot.content != NIL).then(|| self.contents[slot.content as usize].id);
        Some(Entry { size: slot.size, content, label: slot.label })
    }

    /// The key's text.
    fn key_of(&self, name: &Name) -> String {
        match self.names.get(name) {
            Some(text) => text.to_string(),
            None => hex::encode(name.0),
        }
    }

    /// Marks `key` (present) as one to list again after a restart, or not.
    pub(super) fn set_listed(&mut self, key: &str, listed: bool) {
        let (name, _) = Name::of(key);
        match listed && self.find_name(&name).is_some() {
            true => self.listed.insert(name),
            false => self.listed.remove(&name),
        };
    }

    pub(super) fn is_listed(&self, key: &str) -> bool {
        self.listed.contains(&Name::of(key).0)
    }

    /// The keys marked with [`State::set_listed`].
    pub(super) fn listed(&self) -> Vec<String> {
        self.listed.iter().map(|name| self.key_of(name)).collect()
    }

    /// Every key carrying `label`.
    pub(super) fn labelled(&self, label: u64) -> Vec<String> {
        let mut keys = Vec::new();
        let mut at = self.label_head(label).unwrap_or(NIL);
        while at != NIL {
            let slot = &self.slots[at as usize];
            keys.push(self.key_of(&slot.name));
            at = slot.same_label;
        }
        keys
    }

    fn label_head(&self, label: u64) -> Option<u32> {
        let hash = self.hasher.hash_one(label);
        self.by_label.find(hash, |&s| self.slots[s as usize].label == label).copied()
    }

    /// Every entry, least recently used first (loaded entries not yet linked last), as
    /// [`Saved`] records.
    pub(super) fn each_oldest_first(&self, mut f: impl FnMut(Saved<'_>)) {
        let mut at = self.oldest;
        let mut seen = 0;
        while at != NIL && seen < self.len {
            f(self.saved(at));
            at = self.slots[at as usize].next;
            seen += 1;
        }
        for &(_, slot) in &self.unlinked {
            if self.slots[slot as usize].prev == UNLINKED {
                f(self.saved(slot));
            }
        }
    }

    fn saved(&self, at: u32) -> Saved<'_> {
        let slot = &self.slots[at as usize];
        Saved {
            name: slot.name.0,
            text: self.names.get(&slot.name).map(|t| &**t),
            size: slot.size,
            label: slot.label,
            extra: slot.extra,
            content: (slot.content != NIL).then(|| self.contents[slot.content as usize].id),
            listed: self.listed.contains(&slot.name),
        }
    }

    /// Puts back an entry [`State::each_oldest_first`] gave, as loaded (call in the
    /// same order, then [`State::link_loaded`]).
    pub(super) fn restore(&mut self, saved: &Saved<'_>, order: u64) {
        let key = match saved.text {
            Some(text) => text.to_owned(),
            None => hex::encode(saved.name),
        };
        let charge = saved.size.saturating_add(u64::from(saved.extra));
        self.insert_loaded(&key, charge, saved.content.as_ref(), saved.size, saved.label, order);
        self.set_listed(&key, saved.listed);
    }

    /// Takes a reference on content `id` (a live entry, or a write reserving it).
    pub(super) fn add_ref(&mut self, id: &ContentId) -> u32 {
        let hash = self.hasher.hash_one(id);
        let contents = &self.contents;
        if let Some(&c) = self.by_content.find(hash, |&c| contents[c as usize].id == *id) {
            self.contents[c as usize].refs += 1;
            return c;
        }
        let content = Content { id: *id, refs: 1 };
        let c = match self.free_contents.pop() {
            Some(c) => {
                self.contents[c as usize] = content;
                c
            }
            None => {
                self.contents.push(content);
                (self.contents.len() - 1) as u32
            }
        };
        let (contents, hasher) = (&self.contents, &self.hasher);
        self.by_content.insert_unique(hash, c, |&c| hasher.hash_one(contents[c as usize].id));
        c
    }

    /// Drops a reference; true when nothing references `id` any more.
    pub(super) fn drop_ref(&mut self, id: &ContentId) -> bool {
        let hash = self.hasher.hash_one(id);
        let contents = &self.contents;
        match self.by_content.find_entry(hash, |&c| contents[c as usize].id == *id) {
            Ok(found) => {
                let c = *found.get();
                if self.contents[c as usize].refs > 1 {
                    self.contents[c as usize].refs -= 1;
                    return false;
                }
                found.remove();
                self.free_contents.push(c);
                true
            }
            Err(_) => true,
        }
    }

    pub(super) fn is_referenced(&self, id: &ContentId) -> bool {
        let hash = self.hasher.hash_one(id);
        self.by_content.find(hash, |&c| self.contents[c as usize].id == *id).is_some()
    }

    /// Inserts or replaces `key` as the most recently used. Returns the content the
    /// replaced entry left unreferenced.
    pub(super) fn insert(
        &mut self,
        key: &str,
        charge: u64,
        content: Option<&ContentId>,
        size: u64,
        label: u64,
    ) -> Option<ContentId> {
        let (slot, orphan) = self.place(key, charge, content, size, label);
        self.link_newest(slot);
        orphan
    }

    /// Like `insert` for an entry the startup load found, written at `millis`: it goes
    /// before everything used since, in write-time order, when the load ends
    /// ([`State::link_loaded`]).
    pub(super) fn insert_loaded(
        &mut self,
        key: &str,
        charge: u64,
        content: Option<&ContentId>,
        size: u64,
        label: u64,
        millis: u64,
    ) {
        let (slot, _) = self.place(key, charge, content, size, label);
        self.slots[slot as usize].prev = UNLINKED;
        self.unlinked.push((millis, slot));
    }

    /// Links the loaded entries, oldest write first, before every entry used since.
    pub(super) fn link_loaded(&mut self) {
        let mut unlinked = std::mem::take(&mut self.unlinked);
        unlinked.sort_unstable();
        for (_, slot) in unlinked.into_iter().rev() {
            // Removed, replaced or read since (then linked already).
            if self.slots[slot as usize].prev == UNLINKED {
                self.link_oldest(slot);
            }
        }
    }

    fn place(
        &mut self,
        key: &str,
        charge: u64,
        content: Option<&ContentId>,
        size: u64,
        label: u64,
    ) -> (u32, Option<ContentId>) {
        let orphan = match self.remove(key) {
            Some((Some(old), true)) => Some(old),
            _ => None,
        };
        let (name, named) = Name::of(key);
        if named {
            self.names.insert(name, key.into());
        }
        let content = content.map_or(NIL, |id| self.add_ref(id));
        let extra = u32::try_from(charge.saturating_sub(size)).unwrap_or(u32::MAX);
        let slot = Slot { name, size, label, same_label: NIL, extra, prev: NIL, next: NIL, content };
        let at = match self.free {
            NIL => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
            free => {
                self.free = self.slots[free as usize].next;
                self.slots[free as usize] = slot;
                free
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_key.insert_unique(hasher.hash_one(name), at, |&s| hasher.hash_one(slots[s as usize].name));
        if label != 0 {
            self.join_label(at, label);
        }
        self.used = self.used.saturating_add(self.charge_of(at));
        self.len += 1;
        // Same body as before: the new entry references the old content again.
        (at, orphan.filter(|id| !self.is_referenced(id)))
    }

    fn charge_of(&self, slot: u32) -> u64 {
        let slot = &self.slots[slot as usize];
        slot.size.saturating_add(u64::from(slot.extra))
    }

    fn join_label(&mut self, at: u32, label: u64) {
        let hash = self.hasher.hash_one(label);
        let slots = &self.slots;
        match self.by_label.find_mut(hash, |&s| slots[s as usize].label == label) {
            Some(head) => {
                let old = std::mem::replace(head, at);
                self.slots[at as usize].same_label = old;
            }
            None => {
                let (slots, hasher) = (&self.slots, &self.hasher);
                self.by_label.insert_unique(hash, at, |&s| hasher.hash_one(slots[s as usize].label));
            }
        }
    }

    fn leave_label(&mut self, at: u32) {
        let (label, next) = {
            let slot = &self.slots[at as usize];
            (slot.label, slot.same_label)
        };
        if label == 0 {
            return;
        }
        let hash = self.hasher.hash_one(label);
        let slots = &self.slots;
        let Ok(head) = self.by_label.find_entry(hash, |&s| slots[s as usize].label == label) else {
            return;
        };
        if *head.get() == at {
            match next {
                NIL => {
                    head.remove();
                }
                next => *head.into_mut() = next,
            }
            return;
        }
        let mut before = *head.get();
        while before != NIL {
            let following = self.slots[before as usize].same_label;
            if following == at {
                self.slots[before as usize].same_label = next;
                return;
            }
            before = following;
        }
    }

    /// Removes `key`; returns its content and whether that is now unreferenced.
    pub(super) fn remove(&mut self, key: &str) -> Option<(Option<ContentId>, bool)> {
        let slot = self.find(key)?;
        Some(self.free_slot(slot))
    }

    fn free_slot(&mut self, at: u32) -> (Option<ContentId>, bool) {
        let hash = self.hasher.hash_one(self.slots[at as usize].name);
        if let Ok(found) = self.by_key.find_entry(hash, |&s| s == at) {
            found.remove();
        }
        self.leave_label(at);
        self.unlink(at);
        self.used = self.used.saturating_sub(self.charge_of(at));
        self.len -= 1;
        let slot = &mut self.slots[at as usize];
        let (name, content) = (slot.name, std::mem::replace(&mut slot.content, NIL));
        slot.label = 0;
        slot.next = self.free;
        self.free = at;
        self.names.remove(&name);
        self.listed.remove(&name);
        if content == NIL {
            return (None, false);
        }
        let id = self.contents[content as usize].id;
        (Some(id), self.drop_ref(&id))
    }

    /// Marks `key` most recently used. Returns whether it is known.
    pub(super) fn touch(&mut self, key: &str) -> bool {
        let Some(slot) = self.find(key) else { return false };
        self.unlink(slot);
        self.link_newest(slot);
        true
    }

    /// Removes the least recently used entry: (key, content, whether unreferenced now).
    pub(super) fn pop_lru(&mut self) -> Option<(String, Option<ContentId>)> {
        let oldest = self.oldest;
        if oldest == NIL {
            return None;
        }
        let key = self.key_of(&self.slots[oldest as usize].name);
        let (content, _) = self.free_slot(oldest);
        Some((key, content))
    }

    fn unlink(&mut self, at: u32) {
        let (prev, next) = (self.slots[at as usize].prev, self.slots[at as usize].next);
        if prev == UNLINKED {
            return;
        }
        match prev {
            NIL => {
                if self.oldest == at {
                    self.oldest = next;
                }
            }
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => {
                if self.newest == at {
                    self.newest = prev;
                }
            }
            n => self.slots[n as usize].prev = prev,
        }
        self.slots[at as usize].prev = NIL;
        self.slots[at as usize].next = NIL;
    }

    fn link_newest(&mut self, at: u32) {
        let newest = self.newest;
        self.slots[at as usize].prev = newest;
        self.slots[at as usize].next = NIL;
        match newest {
            NIL => self.oldest = at,
            n => self.slots[n as usize].next = at,
        }
        self.newest = at;
    }

    fn link_oldest(&mut self, at: u32) {
        let oldest = self.oldest;
        self.slots[at as usize].prev = NIL;
        self.slots[at as usize].next = oldest;
        match oldest {
            NIL => self.newest = at,
            o => self.slots[o as usize].prev = at,
        }
        self.oldest = at;
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

#[cfg(test)]
mod tests {
    use super::*;

    const X: ContentId = [1; 32];
    const Y: ContentId = [2; 32];
    const Z: ContentId = [3; 32];

    #[test]
    fn entries_are_charged_and_shared_content_counted() {
        let mut st = State::default();
        assert_eq!(st.insert("a", 100, Some(&X), 10, 0), None);
        assert_eq!(st.insert("b", 50, Some(&X), 10, 0), None, "b shares a's content");
        assert_eq!(st.used, 150);
        // Replacing a's body: its old content is still b's.
        assert_eq!(st.insert("a", 70, Some(&Y), 7, 0), None);
        assert_eq!(st.used, 120);
        // Removing b leaves x unreferenced.
        assert_eq!(st.remove("b"), Some((Some(X), true)));
        assert!(!st.is_referenced(&X));
        // Replacing a again frees y.
        assert_eq!(st.insert("a", 60, Some(&Z), 6, 0), Some(Y));
        assert_eq!(st.used, 60);
        // A body kept inline has no content.
        assert_eq!(st.insert("a", 60, None, 6, 0), Some(Z));
        assert_eq!(st.get("a"), Some(Entry { size: 6, content: None, label: 0 }));
        assert_eq!(st.len(), 1);
    }

    #[test]
    fn least_recently_used_goes_first_and_a_touch_moves_it() {
        let mut st = State::default();
        for k in ["a", "b", "c"] {
            st.insert(k, 1, None, 1, 0);
        }
        assert!(st.touch("a"));
        assert!(!st.touch("zzz"));
        let order: Vec<String> = std::iter::from_fn(|| st.pop_lru()).map(|(k, _)| k).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(st.used, 0);
        assert_eq!(st.len(), 0);
    }

    #[test]
    fn loaded_entries_go_first_in_write_order() {
        let mut st = State::default();
        st.insert("new", 1, None, 1, 0);
        st.insert_loaded("late", 1, None, 1, 0, 20);
        st.insert_loaded("early", 1, None, 1, 0, 10);
        st.insert_loaded("read", 1, None, 1, 0, 5);
        assert!(st.touch("read"));
        st.link_loaded();
        let order: Vec<String> = std::iter::from_fn(|| st.pop_lru()).map(|(k, _)| k).collect();
        assert_eq!(order, ["early", "late", "new", "read"]);
    }

    #[test]
    fn labels_group_keys_and_slots_are_reused() {
        let mut st = State::default();
        let hex = |n: u8| format!("{n:02x}").repeat(32);
        st.insert(&hex(1), 1, None, 1, 7);
        st.insert(&hex(2), 1, None, 1, 7);
        st.insert(&hex(3), 1, None, 1, 8);
        let mut seven = st.labelled(7);
        seven.sort();
        assert_eq!(seven, [hex(1), hex(2)]);
        st.remove(&hex(2));
        assert_eq!(st.labelled(7), [hex(1)]);
        st.remove(&hex(1));
        assert!(st.labelled(7).is_empty());
        // A replaced entry changes label; the freed slots serve new keys.
        st.insert(&hex(3), 1, None, 1, 9);
        assert!(st.labelled(8).is_empty());
        assert_eq!(st.labelled(9), [hex(3)]);
        st.insert("plain", 1, None, 1, 9);
        assert_eq!(st.slots.len(), 3, "slots reused");
        assert_eq!(st.pop_lru().map(|(k, _)| k), Some(hex(3)));
        assert_eq!(st.pop_lru().map(|(k, _)| k), Some("plain".to_owned()), "a key's text comes back");
    }

    #[test]
    fn a_charge_counts_key_metadata_and_line() {
        assert_eq!(charge(3, 10, 100), 100 + 10 + 3 + INDEX_LINE_OVERHEAD);
        assert_eq!(charge(1, u64::MAX, u64::MAX), u64::MAX, "damaged sizes saturate");
        assert_eq!(json_len(&serde_json::json!({"a": [1, 2]})), r#"{"a":[1,2]}"#.len() as u64);
    }
}
