//! The memory tier: moka, weighed in bytes and capped by `cache.memory_capacity`,
//! least-recently-used eviction (predictable, as nginx's), holding `Arc`s so a hit
//! copies no body.
//!
//! moka's expiry only reclaims memory: freshness is always decided from the
//! stored policy. An entry without a validator is dropped once no stale window
//! can use it; one with a validator stays until evicted, since a 304 can revive it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;

use super::entry::Stored;
use super::key::{Key, KeyHash};

#[derive(Clone)]
pub(super) struct MemoryTier {
    cache: Cache<Key, Arc<Stored>, KeyHash>,
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
    pub(super) fn new(capacity: u64, dropped: impl Fn(&Key, bool) + Send + Sync + 'static) -> MemoryTier {
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

    pub(super) async fn get(&self, key: &str) -> Option<Arc<Stored>> {
        self.cache.get(&Key::of(key)).await
    }

    pub(super) async fn insert(&self, key: &str, value: Arc<Stored>) {
        self.cache.insert(Key::of(key), value).await;
        // moka evicts in batches during later calls; without this, the last
        // inserts before a quiet period would keep the tier over its cap.
        self.cache.run_pending_tasks().await;
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.cache.contains_key(&Key::of(key))
    }

    pub(super) async fn remove(&self, key: &str) -> bool {
        self.cache.remove(&Key::of(key)).await.is_some()
    }

    /// Bytes held (after pending evictions have run).
    pub(super) async fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size()
    }

    pub(super) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}
