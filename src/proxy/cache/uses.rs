//! `cache.min_uses` (nginx's `proxy_cache_min_uses`): a response is stored
//! only once its key has been asked for that many times; the misses before
//! go to the origin unstored (`Cache-Status: …; detail=min-uses`), so
//! objects asked for once do not push out the ones asked for often.
//!
//! The counts are per route, approximate (two requests at once may count
//! once) and bounded: at most [`KEYS`] keys, each forgotten after [`IDLE`]
//! without a request (nginx keeps them as long as `keys_zone`'s `inactive`,
//! 10 minutes by default). A reload starts them afresh.

use std::hash::BuildHasher;
use std::time::Duration;

use crate::cache::key::Keyed;

/// Keys counted at once, at most, per route.
const KEYS: u64 = 100_000;
/// A key not asked for this long is forgotten.
const IDLE: Duration = Duration::from_secs(600);

pub(crate) struct MinUses {
    uses: u32,
    /// Requests seen, by the hash of the key (a collision only stores early).
    seen: moka::sync::Cache<u64, u32>,
    hasher: std::hash::RandomState,
}

impl MinUses {
    /// `None` for 1 (or 0): every cacheable response is stored at once.
    pub(crate) fn new(uses: u32) -> Option<MinUses> {
        (uses > 1).then(|| MinUses {
            uses,
            seen: moka::sync::Cache::builder().max_capacity(KEYS).time_to_idle(IDLE).build(),
            hasher: std::hash::RandomState::new(),
        })
    }

    /// The hash a request's key is counted by (taken before the key goes to the lookup).
    pub(crate) fn hash(&self, keyed: &Keyed) -> u64 {
        self.hasher.hash_one((&keyed.url, &keyed.parts))
    }

    /// Counts one more request for `hash`; whether its response may be stored now.
    pub(crate) fn count(&self, hash: u64) -> bool {
        let entry = self.seen.entry(hash).and_upsert_with(|seen| seen.map_or(1, |s| s.into_value().saturating_add(1)));
        entry.into_value() >= self.uses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_on_the_nth_request() {
        assert!(MinUses::new(1).is_none());
        let uses = MinUses::new(3).unwrap();
        let a = uses.hash(&Keyed::plain("http://h/a".into()));
        let b = uses.hash(&Keyed::plain("http://h/b".into()));
        assert_eq!([uses.count(a), uses.count(a), uses.count(b), uses.count(a)], [false, false, false, true]);
    }
}
