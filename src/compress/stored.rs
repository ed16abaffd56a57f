//! Encoded copies of cached bodies, made once and served many times.
//!
//! The cache stores what the origin sent. The first hit that needs an encoding
//! makes it, whole, and keeps it here within a byte budget (least recently used
//! goes first); later hits send the stored bytes with their length, so a cached
//! page costs no compression per request (nginx's `gzip` recompresses on every
//! hit). A copy is keyed by the entry's identity: a replaced, refreshed or
//! purged entry has a new one, and its old copies are never served again.

use std::hash::{BuildHasher, Hash, Hasher};

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
    made: std::sync::atomic::AtomicU64,
}

impl Encodings {
    pub fn new(budget: u64) -> Encodings {
        let copies = moka::sync::Cache::builder()
            .max_capacity(budget)
            .weigher(|_, v: &Bytes| u32::try_from(v.len() + 64).unwrap_or(u32::MAX))
            .build();
        Encodings { copies, made: Default::default() }
    }

    /// The stored copy of `source` in `e`, made now if there is none (once,
    /// however many ask at the same time).
    pub fn get(&self, source: &Source, e: Encoding, level: i32) -> std::io::Result<Bytes> {
        let make = || {
            self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            encode_all(&source.body, e, level)
        };
        self.copies.try_get_with((source.id, e), make).map_err(|err| std::io::Error::other(err.to_string()))
    }

    pub fn made(&self) -> u64 {
        self.made.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.copies.run_pending_tasks();
        self.copies.weighted_size()
    }
}
