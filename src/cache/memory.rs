//! The memory tier: moka, weighed in bytes and capped by `cache.memory_capacity`,
//! least-recently-used eviction (predictable, as nginx's), holding `Arc`s so a hit
//! copies no body.
//!
//! moka's expiry only reclaims memory: freshness is always decided from the
//! stored policy. An entry without a validator is dropped once no stale window
//! can use it; one with a validator stays until evicted, since a 304 can revive it.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use sha2::{Digest, Sha256};

use super::entry::Stored;

#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<Key, Arc<Stored>, KeyHash>,
}

/// A cache key (64 hex digits) as its 32 bytes: compared inline, no string to chase.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    fn of(key: &str) -> Key {
        let mut out = [0u8; 32];
        let hex = key.as_bytes();
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if hex.len() == 64 {
            let mut ok = true;
            for (i, pair) in hex.chunks_exact(2).enumerate() {
                match (digit(pair[0]), digit(pair[1])) {
                    (Some(h), Some(l)) => out[i] = h << 4 | l,
                    _ => ok = false,
                }
            }
            if ok {
                return Key(out);
            }
        }
        // Keys are SHA-256 hex; anything else is hashed to the same shape.
        Key(Sha256::digest(key.as_bytes()).into())
    }
}

impl Key {
    /// The hex form the rest of the cache names keys by.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

/// The key already is a SHA-256: its first 8 bytes are a uniform hash that no
/// client can steer, so hashing it again would only cost time.
#[derive(Clone, Default)]
pub struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    // Only `Key` is hashed here; anything else still gets a usable (FNV-1a) hash.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

struct UntilUseless;

impl UntilUseless {
    fn lifetime(value: &Stored) -> Option<Duration> {
        match value {
            Stored::Entry(e) if !e.policy.has_validator() => {
                Some(e.policy.usable_for(SystemTime::now()).saturating_add(Duration::from_secs(1)))
            }
            _ => None,
        }
    }
}

impl Expiry<Key, Arc<Stored>> for UntilUseless {
    fn expire_after_create(&self, _key: &Key, value: &Arc<Stored>, _now: Instant) -> Option<Duration> {
        Self::lifetime(value)
    }

    // moka keeps the old deadline on update by default; a replaced entry needs its own.
    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Arc<Stored>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Self::lifetime(value)
    }
}

impl MemoryTier {
    /// `dropped` is told each key the tier drops on its own: evicted to stay under
    /// `capacity` (`true`), or expired once useless (`false`).
    pub fn new(capacity: u64, dropped: impl Fn(&Key, bool) + Send + Sync + 'static) -> MemoryTier {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_: &Key, v: &Arc<Stored>| v.weight())
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilUseless)
            .eviction_listener(move |key, _value, cause| match cause {
                RemovalCause::Size => dropped(&key, true),
                RemovalCause::Expired => dropped(&key, false),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build_with_hasher(KeyHash);
        MemoryTier { cache }
    }

    pub async fn get(&self, key: &str) -> Option<Arc<Stored>> {
        self.cache.get(&Key::of(key)).await
    }

    pub async fn insert(&self, key: &str, value: Arc<Stored>) {
        self.cache.insert(Key::of(key), value).await;
        // moka evicts in batches during later calls; without this, the last
        // inserts before a quiet period would keep the tier over its cap.
        self.cache.run_pending_tasks().await;
    }

    pub fn contains(&self, key: &str) -> bool {
        self.cache.contains_key(&Key::of(key))
    }

    pub async fn remove(&self, key: &str) -> bool {
        self.cache.remove(&Key::of(key)).await.is_some()
    }

    /// Bytes held (after pending evictions have run).
    pub async fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::Key;

    #[test]
    fn hex_keys_pack_and_others_hash() {
        let hex = "00ff".repeat(16);
        assert_eq!(Key::of(&hex).0[..2], [0x00, 0xff]);
        assert!(Key::of(&hex) != Key::of(&"00fe".repeat(16)));
        assert!(Key::of("not hex") != Key::of("not hex either"));
        assert!(Key::of(&"zz".repeat(32)) == Key::of(&"zz".repeat(32)));
        let k = format!("{}{}", "0a1b".repeat(8), "ff".repeat(16));
        assert_eq!(Key::of(&k).hex(), k);
    }
}
