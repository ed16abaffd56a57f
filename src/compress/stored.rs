//! Encoded copies of cached bodies, made once and served many times.
//!
//! The cache stores what the origin sent. The first hit that needs an encoding
//! has it made, whole, at a higher level than on the fly (`stored_levels`), on
//! the blocking pool, and kept here within a byte budget (least recently used
//! goes first); later hits send the stored bytes with their length, so a cached
//! page costs no compression per request (nginx's `gzip` recompresses on every
//! hit). A copy is keyed by the entry's identity: a replaced, refreshed or
//! purged entry has a new one, and its old copies are never served again.

use std::hash::{BuildHasher, Hash, Hasher};

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::{Encoding, encode_all};

/// A cached body that can be encoded, attached to the response that carries it.
#[derive(Clone)]
pub struct Source {
    pub id: u64,
    pub body: Bytes,
}

impl Source {
    /// `url`, when it was stored, and the body itself (its length and address)
    /// name one stored response.
    pub fn new(url: &str, stored_at: std::time::SystemTime, body: &Bytes) -> Source {
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

pub struct Encodings {
    copies: moka::sync::Cache<(u64, Encoding), Bytes>,
    /// Copies being made.
    making: Arc<Mutex<HashSet<(u64, Encoding)>>>,
    made: Arc<AtomicU64>,
}

impl Encodings {
    pub fn new(budget: u64) -> Encodings {
        let copies = moka::sync::Cache::builder()
            .max_capacity(budget)
            .weigher(|_, v: &Bytes| u32::try_from(v.len() + 64).unwrap_or(u32::MAX))
            .build();
        Encodings { copies, making: Default::default(), made: Default::default() }
    }

    /// The stored copy of `source` in `e`, if it is made. If not, it is made now
    /// on the blocking pool (once, however many ask meanwhile), and the caller
    /// encodes as it streams until then: nobody waits for a high level.
    pub fn get(&self, source: &Source, e: Encoding, level: i32) -> Option<Bytes> {
        let key = (source.id, e);
        if let Some(copy) = self.copies.get(&key) {
            return Some(copy);
        }
        if !self.making.lock().unwrap_or_else(PoisonError::into_inner).insert(key) {
            return None;
        }
        let (copies, making, made, body) =
            (self.copies.clone(), self.making.clone(), self.made.clone(), source.body.clone());
        tokio::task::spawn_blocking(move || {
            match encode_all(&body, e, level) {
                Ok(copy) => {
                    made.fetch_add(1, Ordering::Relaxed);
                    copies.insert(key, copy);
                }
                Err(err) => tracing::warn!(error = %err, "cannot encode a cached body"),
            }
            making.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        });
        None
    }

    pub fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.copies.run_pending_tasks();
        self.copies.weighted_size()
    }
}
