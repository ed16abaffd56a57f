//! Encoded copies of cached bodies, made once and served many times.
//!
//! The cache stores what the origin sent. The first hit that needs an encoding
//! has it made, whole, at a higher level than on the fly (`stored_levels`), on
//! the blocking pool, and kept here within a byte budget (least recently used
//! goes first); later hits send the stored bytes with their length, so a cached
//! page costs no compression per request (nginx's `gzip` recompresses on every
//! hit). A copy is keyed by the entry's identity: a replaced, refreshed or
//! purged entry has a new one, and its old copies are never served again.
//! The store lives as long as the process (the cache does): a reload keeps it.

use std::hash::{BuildHasher, Hash, Hasher};

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::{Encoding, encode_all};

/// A cached body that can be encoded, attached to the response that carries it.
#[derive(Clone)]
pub(crate) struct Source {
    pub id: u64,
    pub body: Bytes,
}

impl Source {
    /// `url`, when it was stored, and the body itself (its length and address)
    /// name one stored response.
    pub(crate) fn new(url: &str, stored_at: std::time::SystemTime, body: &Bytes) -> Source {
        // A fixed seed is enough: the id names entries relais stored, not client input.
        let mut h =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
        url.hash(&mut h);
        stored_at.hash(&mut h);
        body.len().hash(&mut h);
        (body.as_ptr() as usize).hash(&mut h);
        Source { id: h.finish(), body: body.clone() }
    }
}

/// The store of encoded copies, one per process: a reload changes its budget
/// (`stored_memory`), it does not drop its copies.
pub(crate) struct Encodings {
    copies: ArcSwap<moka::sync::Cache<Key, Bytes>>,
    /// The budget `copies` was built with.
    budget: Mutex<u64>,
    /// Copies being made.
    making: Mutex<HashSet<Key>>,
    made: AtomicU64,
}

/// A stored body, an encoding and its level: a route with levels of its own
/// has copies of its own.
type Key = (u64, Encoding, i32);

fn store(budget: u64) -> moka::sync::Cache<Key, Bytes> {
    moka::sync::Cache::builder()
        .max_capacity(budget)
        .weigher(|_, v: &Bytes| u32::try_from(v.len() + 64).unwrap_or(u32::MAX))
        .build()
}

impl Encodings {
    pub(crate) fn new(budget: u64) -> Encodings {
        Encodings {
            copies: ArcSwap::from_pointee(store(budget)),
            budget: Mutex::new(budget),
            making: Default::default(),
            made: Default::default(),
        }
    }

    /// Gives the store a new budget, keeping its copies (the least recently
    /// used go first if they no longer fit). Moka's capacity is fixed, so a
    /// new budget is a new store, filled from the old.
    pub(crate) fn resize(&self, budget: u64) {
        let mut current = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == budget {
            return;
        }
        let resized = store(budget);
        if budget > 0 {
            for (key, copy) in self.copies.load().iter() {
                resized.insert(*key, copy);
            }
        }
        self.copies.store(Arc::new(resized));
        *current = budget;
    }

    /// The stored copy of `source` in `e` at `level`, if it is made. If not, it
    /// is made now on the blocking pool (once, however many ask meanwhile), and
    /// the caller encodes as it streams until then: nobody waits for a high level.
    pub(crate) fn get(self: &Arc<Self>, source: &Source, e: Encoding, level: i32) -> Option<Bytes> {
        let key = (source.id, e, level);
        if let Some(copy) = self.copies.load().get(&key) {
            return Some(copy);
        }
        if !self.making.lock().unwrap_or_else(PoisonError::into_inner).insert(key) {
            return None;
        }
        let (this, body) = (self.clone(), source.body.clone());
        tokio::task::spawn_blocking(move || {
            match encode_all(&body, e, level) {
                Ok(copy) => {
                    this.made.fetch_add(1, Ordering::Relaxed);
                    this.copies.load().insert(key, copy);
                }
                Err(err) => tracing::warn!(error = %err, "cannot encode a cached body"),
            }
            this.making.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        });
        None
    }

    pub(crate) fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes(&self) -> u64 {
        let copies = self.copies.load();
        copies.run_pending_tasks();
        copies.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_budget_keeps_the_copies_that_fit() {
        let store = Arc::new(Encodings::new(1 << 20));
        let source = Source { id: 7, body: Bytes::from(vec![b'a'; 10_000]) };
        assert!(store.get(&source, Encoding::Gzip, 6).is_none(), "made on the blocking pool");
        for _ in 0..200 {
            if store.made() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let copy = store.get(&source, Encoding::Gzip, 6).expect("made");
        assert!(store.get(&source, Encoding::Gzip, 1).is_none(), "another level is another copy");
        store.resize(2 << 20);
        assert_eq!(store.get(&source, Encoding::Gzip, 6), Some(copy), "kept across a new budget");
        store.resize(0);
        assert_eq!((store.get(&source, Encoding::Gzip, 6), store.bytes()), (None, 0), "no budget, no copies");
    }
}
